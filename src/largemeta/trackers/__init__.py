"""Experiment trackers as plugins: TensorBoard, MLflow and Weights & Biases (``trackers = [...]``).

A tracker run receives the resolved config as hyper-parameters and every numeric field of every
``metrics.jsonl`` line as a metric at that line's step (:func:`flat_metrics`: nested fields joined by ``/``,
``tasks/omniglot/loss``; ``null`` — a non-finite value — is left out). Only rank 0 logs. A run folder
remembers its tracker runs and the last step each was sent (``trackers.json``, bound to the run's id):
``--resume`` continues the same tracker runs and sends only the steps after it, so nothing is logged twice.
The run's identity (``run.json``, the checkpoint) records its tracker runs' ids too: a ``trackers.json``
that is gone, unreadable or another run's (copied) is one warning line, and the run's own tracker runs are
continued (their last step asked of the tracker). ``evaluate`` and the
experiments log their results the same way (:func:`log_results`).

Where the trackers keep their data is theirs to say: ``MLFLOW_TRACKING_URI`` (default: MLflow's own,
``sqlite:///mlflow.db`` in the working folder) and ``MLFLOW_EXPERIMENT_NAME`` (default ``largemeta``);
``WANDB_PROJECT`` (default ``largemeta``), ``WANDB_MODE`` (``offline`` logs without an account) and
``WANDB_DIR``; TensorBoard writes ``RUN/tensorboard/``. A tracker whose package is missing is refused
before anything is written, in one line naming the extra to install.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largemeta import console
from largemeta.errors import UserError, choice_error
from largemeta.files import atomic_write_text

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""Tracker name -> the package it needs (and the ``largemeta[...]`` extra that installs it)."""
STATE = "trackers.json"
"""In a run folder: each tracker's run id and the last step sent to it."""


def check_names(names: Sequence[str]) -> None:
    """A one-line error for an unknown tracker name."""
    for name in names:
        if name not in TRACKERS:
            raise choice_error("tracker", name, TRACKERS)


def require(names: Sequence[str]) -> None:
    """A one-line error naming the extra to install when a tracker's package is missing."""
    for name in names:
        package = TRACKERS[name]
        try:
            importlib.import_module(package)
        except ImportError:
            raise UserError(
                f"tracker {name!r} needs the {package} package: pip install 'largemeta[{package}]'"
            ) from None


def check(names: Sequence[str]) -> None:
    """What can be checked of each tracker before a run writes anything (``train`` and its ``--dry-run``):
    its package, and for MLflow the tracking URI — a scheme MLflow has no store for, or an ``http(s)``
    server that does not answer within :data:`CONNECT_TIMEOUT_S` — each refused in one line."""
    require(names)
    if "mlflow" in names:
        from largemeta.trackers.backends import check_mlflow

        check_mlflow()


def flat_metrics(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric field of a metrics line but its ``step``, nested names joined by ``/``."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if not prefix and key == "step":
            continue
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as tracker hyper-parameters: lists become comma-joined strings."""
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in config.items()}


def _guarded(name: str, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a tracker's own failure (a store that cannot be reached, a bad URI) becomes
    one line naming the tracker (the run's files and its last checkpoint are kept)."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"tracker {name!r} {what}: {first}") from None


class Trackers:
    """The tracker runs of one run folder (or one results folder): ``log(record)`` sends a metrics line to
    every one; ``close()`` ends them. With no tracker names it does nothing."""

    def __init__(
        self,
        names: Sequence[str],
        folder: Path | None,
        *,
        run_id: str,
        params: dict[str, Any],
        resume: bool = False,
        known: dict[str, str] | None = None,
    ) -> None:
        """``known``: the tracker run ids the run's identity recorded (they win over a ``trackers.json``
        that is not the run's)."""
        from largemeta.trackers.backends import open_backend

        self.folder, self.names, self.run_id = folder, list(dict.fromkeys(names)), run_id
        check_names(self.names)
        require(self.names)
        state = self._read_state(known or {}) if resume else {}
        self.state: dict[str, dict[str, Any]] = {}
        self.backends = []
        self._unwritable = False
        try:
            for name in self.names:
                saved = state.get(name, {})
                backend = _guarded(
                    name,
                    "could not start its run",
                    open_backend,
                    name,
                    self.folder or Path.cwd(),
                    run_id=saved.get("id") or run_id,
                    params=params,
                    resumed=bool(saved),
                )
                self.backends.append(backend)
                console.log.debug(f"tracker {name}: run {backend.id}{' (resumed)' if saved else ''}")
                last = max(saved.get("step", -1), backend.last_step() if saved else -1)
                self.state[name] = {"id": backend.id, "step": last}
        except BaseException:
            self.close(failed=True)
            raise
        if self.names:
            self._write_state()

    def _read_state(self, known: dict[str, str]) -> dict[str, Any]:
        """The tracker runs to continue: ``trackers.json``'s when it is this run's, else those the run's
        identity recorded (``known``; their last step is asked of the tracker), with a warning line."""
        if self.folder is None:
            return {}
        path = self.folder / STATE
        problem = None
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            state, problem = {}, "is gone"
        except (OSError, ValueError, RecursionError):
            state, problem = {}, "is unreadable"
        if not isinstance(state, dict):
            state, problem = {}, "is unreadable"
        owner = state.pop("run_id", None)
        entries = {k: v for k, v in state.items() if isinstance(v, dict) and isinstance(v.get("id"), str)}
        if owner is not None and owner != self.run_id:
            entries, problem = {}, f"is another run's (run {str(owner)[:8]}; copied?)"
        for name, tracker_id in known.items():
            if name in entries and entries[name]["id"] != tracker_id:
                entries, problem = {}, "names tracker runs this run did not record (copied?)"
                break
        recovered = {name: {"id": i, "step": -1} for name, i in known.items() if name not in entries}
        wanted = [n for n in self.names if n in known]
        if problem is not None and (known or path.exists()):
            what = (
                f"continuing this run's own tracker runs ({', '.join(wanted)}) as its identity records them"
                if wanted
                else "new tracker runs are started"
            )
            console.log.warning(f"{str(path)!r} {problem}: it is ignored; {what}")
        return {**recovered, **entries}

    def _write_state(self) -> None:
        if self.folder is None:
            return
        try:
            text = json.dumps({"run_id": self.run_id, **self.state}, indent=1) + "\n"
            atomic_write_text(self.folder / STATE, text)
        except UserError as err:  # a side channel: the run goes on, its identity keeps the tracker runs
            if not self._unwritable:
                self._unwritable = True
                why = str(err).split(": ", 1)[-1].split(";")[0]
                console.log.warning(
                    f"cannot write {str(self.folder / STATE)!r} ({why}); the run goes on (a resume asks "
                    "each tracker for its last step)"
                )

    @property
    def ids(self) -> dict[str, str]:
        """Each tracker's run id (what the run's identity records)."""
        return {name: entry["id"] for name, entry in self.state.items()}

    def log(self, record: dict[str, Any]) -> None:
        """Send a metrics line to every tracker that has not had its step yet."""
        if not self.backends:
            return
        step = int(record.get("step", 0))
        metrics = flat_metrics(record)
        sent = False
        for name, backend in zip(self.names, self.backends, strict=True):
            if step > self.state[name]["step"]:
                _guarded(name, f"could not log step {step}", backend.log_metrics, metrics, step)
                self.state[name]["step"] = step
                sent = True
        if sent:
            self._write_state()

    def close(self, failed: bool = False) -> None:
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.close(failed)


def log_results(
    names: Sequence[str], folder: Path | None, params: dict[str, Any], result: dict[str, Any]
) -> None:
    """One tracker run for a finished evaluation or experiment (``folder``: its results folder, which keeps
    the tracker runs' ids; None: none, and no TensorBoard): ``params``
    as hyper-parameters, every accuracy of ``result`` (``mean_accuracy`` and ``ci95`` fields) as a metric."""
    if not names:
        return
    import uuid

    metrics = {k: v for k, v in flat_metrics(result).items() if k.rsplit("/", 1)[-1] in RESULT_FIELDS}
    trackers = Trackers(names, folder, run_id=uuid.uuid4().hex, params=hyperparameters(params))
    try:
        for backend in trackers.backends:
            backend.log_metrics(metrics, 0)
    except BaseException:
        trackers.close(failed=True)
        raise
    trackers.close()


RESULT_FIELDS = ("mean_accuracy", "ci95")
"""The fields of a results.json that :func:`log_results` sends."""
