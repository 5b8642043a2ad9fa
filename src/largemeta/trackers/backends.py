"""The three trackers: each opens (or, resumed, reopens) one run, logs metrics at a step, and closes it.

Each package is imported only when its tracker is used; :func:`largemeta.trackers.require` has checked that
it is installed.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

TENSORBOARD = "tensorboard"
"""In a run folder: TensorBoard's event files."""
PROJECT = "largemeta"
"""MLflow's experiment and W&B's project when the environment names none."""


class TensorBoard:
    """Event files in ``folder/tensorboard`` (a resumed run appends a new event file there)."""

    def __init__(self, folder: Path, run_id: str, params: dict[str, Any], resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.id = run_id
        self.writer = SummaryWriter(str(folder / TENSORBOARD))
        if not resumed:
            self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in params.items()), 0)

    def last_step(self) -> int:
        return -1

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


CONNECT_TIMEOUT_S = 10.0
"""How long ``train`` waits for an ``http(s)`` MLflow server to accept a connection before refusing."""
MLFLOW_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
"""MLflow's own retries, bounded unless the environment sets them (its defaults wait minutes, silently)."""


def check_mlflow() -> None:
    """A one-line error for a tracking URI MLflow has no store for, or an ``http(s)`` server that refuses or
    does not answer within :data:`CONNECT_TIMEOUT_S` (nothing is created: a file or database store is made
    by the run itself)."""
    import socket
    from urllib.parse import urlsplit

    import mlflow

    from largemeta import console
    from largemeta.errors import UserError

    uri = mlflow.get_tracking_uri()
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry.get_store_builder(uri)
    except (ImportError, AttributeError):  # another MLflow: the run's own client says what is wrong
        pass
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"tracker 'mlflow': tracking URI {uri!r} is not usable: {first}") from None
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    console.log.info(f"tracker mlflow: connecting to {uri} (at most {CONNECT_TIMEOUT_S:g} s)")
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise UserError(
            f"tracker 'mlflow' cannot reach its server {uri!r} ({why}); start it, or set MLFLOW_TRACKING_URI "
            "to one that answers (nothing was written)"
        ) from None


class MLflow:
    """A run of the experiment ``$MLFLOW_EXPERIMENT_NAME`` (``largemeta``) in the store at
    ``$MLFLOW_TRACKING_URI``, named after the folder; resumed by its run id."""

    def __init__(self, folder: Path, run_id: str, params: dict[str, Any], resumed: bool) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        for key, value in MLFLOW_LIMITS.items():
            os.environ.setdefault(key, value)
        self.client = MlflowClient(mlflow.get_tracking_uri())
        if resumed:
            self.id = run_id
            self.client.update_run(self.id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(
            experiment_id, run_name=folder.name, tags={"largemeta.folder": str(folder)}
        )
        self.id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def last_step(self) -> int:
        """The last step the store holds (a kill can come between sending a line and noting it)."""
        history = self.client.get_metric_history(self.id, "mean_loss")
        return max((m.step for m in history), default=-1)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.id, status="FAILED" if failed else "FINISHED")


class WandB:
    """A run of the project ``$WANDB_PROJECT`` (``largemeta``) whose id is the run folder's; resumed by it
    (W&B's ``resume="allow"``; the config is the one it started with). Its console capture is off: stdout
    stays the command's."""

    def __init__(self, folder: Path, run_id: str, params: dict[str, Any], resumed: bool) -> None:
        import wandb

        self.id = run_id
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # W&B's own deprecations are not the user's to act on
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT),
                id=run_id,
                name=folder.name,
                resume="allow",
                config=None if resumed else json.loads(json.dumps(params)),
                settings=wandb.Settings(console="off", silent=True),
                reinit="create_new",
            )

    def last_step(self) -> int:
        return -1

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


BACKENDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def open_backend(name: str, folder: Path, *, run_id: str, params: dict[str, Any], resumed: bool):
    return BACKENDS[name](folder, run_id, params, resumed)
