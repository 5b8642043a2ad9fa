"""``largemeta train``: meta-train a body over a suite's image tasks with any algorithm, one process or many.

    trainer = Trainer(load_config("configs/offline.toml", {"algo": "cts"}), Path("runs/cts"))
    trainer.run()

The run folder holds ``config.json`` (the resolved config), ``checkpoint.pt`` (latest, written atomically),
``metrics.jsonl`` and, optionally, TensorBoard event files. Under torchrun each rank holds a shard of the
tasks; rank 0 gathers every task's state into one checkpoint, so a run can resume on any number of ranks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from largemeta.core.engine import MetaLearner, algorithm
from largemeta.core.inner import make_inner_optimizer
from largemeta.data.datasets import load_dataset
from largemeta.data.sampler import TaskData, task_seed
from largemeta.data.tasks import TaskSpec, load_suite
from largemeta.errors import UserError
from largemeta.models import create_model, init_head, split_state
from largemeta.models.task import ImageTask
from largemeta.train import checkpoint, distributed
from largemeta.train.config import TrainConfig, diff, save_config
from largemeta.train.joint import JointLearner

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
QUERY_ALGOS = ("fomaml", "cts-fomaml", "imaml")


class NonFiniteLoss(UserError):
    exit_code = 4


class TaskSampler:
    """A task's training stream and, for FOMAML/iMAML, a query stream from held-out training images.

    The held-out share is fixed by the run's seed; the two streams have their own generators, so replaying the
    training stream (the shift-error probe) is not disturbed by query draws.
    """

    def __init__(self, data: TaskData, query_fraction: float | None, seed: int) -> None:
        self.query: TaskData | None = None
        self.train = data
        if query_fraction:
            n = data.num_train
            n_query = max(1, int(round(n * query_fraction)))
            if n_query >= n:
                raise UserError(f"task {data.name!r}: {n} training images are too few to hold out a query share")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(data.device)
            q, t = perm[:n_query].sort().values, perm[n_query:].sort().values
            args = (data.x_eval, data.y_eval, data.class_names)
            self.train = TaskData(data.spec, data.x_train[t], data.y_train[t], *args, seed=data.seed)
            self.query = TaskData(data.spec, data.x_train[q], data.y_train[q], *args, seed=data.seed + 1)

    def sample_train(self, batch: int):
        return self.train.sample_train(batch)

    def sample_query(self, batch: int):
        if self.query is None:
            raise RuntimeError("this task has no query split (only FOMAML and iMAML use one)")
        return self.query.sample_train(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.state_dict(), "query": self.query.state_dict() if self.query else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        if self.query is not None and state.get("query") is not None:
            self.query.load_state_dict(state["query"])


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run folder was started with (``config.json``)."""
    config_file = Path(run_dir) / CONFIG
    if not config_file.is_file():
        raise UserError(f"--resume {str(run_dir)!r}: no {CONFIG} there (not a run folder)")
    try:
        return json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"--resume {str(run_dir)!r}: {CONFIG} is corrupt") from None


def resolve_device(name: str, rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here (valid: cpu, auto)")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def select_tasks(specs: tuple[TaskSpec, ...], names: tuple[str, ...]) -> list[TaskSpec]:
    if not names:
        return list(specs)
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"unknown meta-train task {unknown[0]!r} (valid: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def _model_kwargs(cfg: TrainConfig, channels: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"in_channels": channels}
    if cfg.model in ("convnet", "resnet20"):
        kwargs["width"] = cfg.width
    return kwargs


def initial_phi(cfg: TrainConfig, phi: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """φ from ``cfg.init``, checked tensor by tensor against the body's shapes."""
    if cfg.init.startswith("torchvision:"):
        name = cfg.init.split(":", 1)[1]
        if name != cfg.model:
            raise UserError(f"init {cfg.init!r} needs model {name!r}, the config has {cfg.model!r}")
        try:
            pretrained = create_model(name, in_channels=3, weights="DEFAULT")
        except (OSError, RuntimeError) as err:  # torchvision tries its hub when the weights are not cached
            raise UserError(f"init {cfg.init!r}: torchvision's ImageNet weights are not available here "
                            f"({str(err).splitlines()[0][:120]}); offline, start from a φ of your own") from None
        source = split_state(pretrained)[0]
    else:
        from largemeta.evaluate import load_init

        loaded = load_init(cfg.init)
        if loaded.phi is None:
            raise UserError(f"init {cfg.init!r} holds no weights")
        source = loaded.phi
    for k, v in phi.items():
        if k not in source:
            raise UserError(f"init {cfg.init!r} lacks tensor {k!r} of model {cfg.model} (shape {tuple(v.shape)})")
        if source[k].shape != v.shape:
            raise UserError(f"init {cfg.init!r} does not fit model {cfg.model}: tensor {k!r} has shape "
                            f"{tuple(source[k].shape)}, the model needs {tuple(v.shape)}")
    return {k: source[k].detach().clone().to(v.dtype) for k, v in phi.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = resolve_device(cfg.device, int(os.environ.get("RANK", "0")))
        self.rank, self.world, self.group = distributed.init(self.device)
        self.progress = progress and self.rank == 0
        saved = self._prepare_run_dir(resume)

        suite = load_suite(cfg.suite)
        self.specs = select_tasks(suite.meta_train, cfg.tasks)
        if not self.specs:
            raise UserError(f"suite {cfg.suite!r} has no meta-train tasks")
        channels = {s.channels for s in self.specs}
        if len(channels) != 1:
            raise UserError(f"meta-train tasks mix {sorted(channels)} input channels; one model needs one count")
        self.mine = distributed.shard(len(self.specs), self.rank, self.world)

        torch.manual_seed(cfg.seed)  # the same initial φ on every rank
        self.body = create_model(cfg.model, **_model_kwargs(cfg, channels.pop()))
        phi, buffers = split_state(self.body)
        if cfg.init:
            phi = initial_phi(cfg, phi)
        phi = {k: v.to(self.device) for k, v in phi.items()}
        self.tasks, heads = self._build_tasks(buffers)
        inner = make_inner_optimizer(cfg.inner_optimizer, cfg.inner_lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        if cfg.algo in ("multitask", "single"):
            self.learner: Any = JointLearner(phi, self.tasks, inner, heads, group=self.group)
        else:
            options = {"lam": cfg.imaml_lambda, "cg_steps": cfg.imaml_cg_steps} if cfg.algo == "imaml" else {}
            meta_gradient, schedule = algorithm(cfg.algo, cfg.k, cfg.meta_every, **options)
            outer_cls = torch.optim.SGD if cfg.meta_optimizer == "sgd" else torch.optim.Adam
            outer = outer_cls(list(phi.values()), lr=cfg.meta_lr)
            executor = None
            if cfg.executor not in ("loop", "cuda_graph"):
                from largemeta.execution import make_executor

                executor = make_executor(cfg.executor)
            self.learner = MetaLearner(phi, self.tasks, inner, meta_gradient, schedule, private=heads, outer=outer,
                                       reset_inner_state=cfg.reset_inner_state, group=self.group, executor=executor)
        self.step_fn = self.learner.inner_step
        if cfg.executor == "cuda_graph":
            from largemeta.execution import CudaGraphMetaStep

            self.step_fn = CudaGraphMetaStep(self.learner)
        self.probe = None
        if cfg.shift_error_every:
            from largemeta.core.diagnostics import ShiftErrorProbe

            self.probe = ShiftErrorProbe(self.learner, task=0, every=cfg.shift_error_every)
        if saved is not None:
            self._restore(saved)

    # set-up ------------------------------------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        path = self.run_dir / CHECKPOINT
        if resume:
            saved_cfg = read_run_config(self.run_dir)
            differing = diff(saved_cfg, self.cfg)
            if differing:
                pairs = ", ".join(f"{k}: {saved_cfg.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in differing)
                raise UserError(f"--resume with a different config (only a longer steps is allowed): {pairs}")
            state = checkpoint.load(path, map_location="cpu")
            if state["step"] > self.cfg.steps:
                raise UserError(f"--steps {self.cfg.steps} is below the {state['step']} steps already done")
            return state
        if path.exists():
            raise UserError(f"{str(self.run_dir)!r} already holds a run; use --resume or another --out")
        if self.rank == 0:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.run_dir / CONFIG)
            except OSError as err:
                raise UserError(f"cannot write run folder {str(self.run_dir)!r}: {err.strerror}") from None
        return None

    def _build_tasks(self, buffers: dict[str, torch.Tensor]) -> tuple[list[ImageTask], list[dict[str, torch.Tensor]]]:
        cfg = self.cfg
        datasets: dict[str, Any] = {}
        tasks, heads = [], []
        for gi in self.mine:
            spec = self.specs[gi]
            if spec.dataset not in datasets:
                datasets[spec.dataset] = load_dataset(spec.dataset, data_dir=cfg.data_dir or None)
            seed = task_seed(cfg.seed, gi)
            data = TaskData.from_arrays(spec, datasets[spec.dataset], device=self.device, seed=seed)
            query = cfg.query_fraction if cfg.algo in QUERY_ALGOS else None
            sampler = TaskSampler(data, query, seed)
            task = ImageTask(self.body, sampler, classes=data.num_classes, batch_size=cfg.batch_size,
                             buffers={k: v.clone() for k, v in buffers.items()}, device=self.device, name=spec.name)
            head = init_head(data.num_classes, task.num_features, torch.Generator().manual_seed(seed))
            tasks.append(task)
            heads.append({k: v.to(self.device) for k, v in head.items()})
        return tasks, heads

    # checkpoints -------------------------------------------------------------------------------------------
    def _piece(self) -> dict[str, Any]:
        return {"tasks": self.mine, "learner": _to_cpu(self.learner.state_dict()),
                "task_states": [_to_cpu(t.state_dict()) for t in self.tasks]}

    def save(self) -> None:
        # Never overwrite a good checkpoint with a poisoned state: a non-finite gradient shows in the
        # parameters before it shows in a loss (one step later).
        for task, params in zip(self.tasks, self.learner.params):
            bad = next((k for k, v in params.items() if not torch.isfinite(v).all()), None)
            if bad is not None:
                raise NonFiniteLoss(
                    f"non-finite parameter {bad!r} in task {task.name!r} at step {self.learner.step}; stopped — "
                    f"the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}")
        pieces = distributed.gather(self._piece(), self.group)
        if self.rank == 0:
            assert pieces is not None
            per_task: list[Any] = [None] * len(self.specs)
            for piece in pieces:
                learner = piece["learner"]
                for local, gi in enumerate(piece["tasks"]):
                    meta = {key: values[local] for key, values in learner.get("meta_gradient", {}).items()
                            if local in values}
                    per_task[gi] = {"params": learner["params"][local], "inner_state": learner["inner_states"][local],
                                    "task": piece["task_states"][local], "meta": meta}
            shared = {k: v for k, v in pieces[0]["learner"].items()
                      if k not in ("params", "inner_states", "meta_gradient")}
            state = {"config": self.cfg.to_dict(), "step": self.learner.step, "world": self.world,
                     "task_names": [s.name for s in self.specs], "shared": shared, "tasks": per_task}
            checkpoint.save(self.run_dir / CHECKPOINT, state)
        distributed.barrier(self.group)

    def _restore(self, state: dict[str, Any]) -> None:
        names = [s.name for s in self.specs]
        if state.get("task_names") != names or len(state.get("tasks", [])) != len(names):
            raise UserError(f"checkpoint tasks {state.get('task_names')} do not match the config's {names}")
        mine = [state["tasks"][gi] for gi in self.mine]
        learner_state = dict(state["shared"])
        learner_state["params"] = [t["params"] for t in mine]
        learner_state["inner_states"] = [t["inner_state"] for t in mine]
        # every key the meta-gradient keeps (Leap: "acc", "prev"), even where no task has an entry right now
        meta_keys = set(self.learner.state_dict().get("meta_gradient", {})) | {key for t in mine for key in t["meta"]}
        learner_state["meta_gradient"] = {key: {local: t["meta"][key] for local, t in enumerate(mine) if key in t["meta"]}
                                          for key in meta_keys}
        try:
            _check_shapes(self.learner.state_dict(), learner_state)
            self.learner.load_state_dict(_to_device(learner_state, self.device))
            for task, t in zip(self.tasks, mine):
                task.load_state_dict(_to_device(t["task"], self.device, keep_generators=True))
        except (KeyError, TypeError, IndexError) as err:
            raise UserError(f"checkpoint does not fit this run ({type(err).__name__}: {err})") from None

    # the loop ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics = open(self.run_dir / METRICS, "a") if self.rank == 0 else None
        writer = self._tensorboard() if self.rank == 0 else None
        bar = None
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.learner.step, unit="step", dynamic_ncols=True)
        window_losses = torch.zeros(len(self.tasks), dtype=torch.float64)
        window, t0 = 0, time.perf_counter()
        last: dict[str, Any] = {}
        try:
            while self.learner.step < cfg.steps:
                losses = distributed.guarded(self.step_fn, "the meta-update all-reduce") if self.group else self.step_fn()
                step = self.learner.step
                losses = losses.detach().double().cpu()
                bad = (~torch.isfinite(losses)).nonzero()
                if len(bad):
                    t = int(bad[0])
                    raise NonFiniteLoss(
                        f"non-finite loss {losses[t].item()} in task {self.tasks[t].name!r} at step {step}; "
                        f"stopped — the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}")
                window_losses += losses
                window += 1
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last = self._log(step, window_losses / window, window / (time.perf_counter() - t0), metrics, writer)
                    window_losses.zero_()
                    window, t0 = 0, time.perf_counter()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.close()
        return last

    def _evaluate(self) -> list[float]:
        out = []
        for task, params in zip(self.tasks, self.learner.params):
            data = task.sampler.train
            if self.cfg.eval_batches == 0 or data.num_eval == 0:
                out.append(float("nan"))
                continue
            correct = total = 0
            for i, (x, y) in enumerate(data.iter_eval(256)):
                if i >= self.cfg.eval_batches:
                    break
                acc = task.loss_and_accuracy(params, x, y)["accuracy"]
                correct += acc * len(y)
                total += len(y)
            out.append(correct / max(total, 1))
        return out

    def _log(self, step: int, losses: torch.Tensor, rate: float, metrics, writer) -> dict[str, Any]:
        mine = {self.tasks[i].name: {"loss": float(losses[i])} for i in range(len(self.tasks))}
        for name, acc in zip(mine, self._evaluate()):
            mine[name]["accuracy"] = acc
        gathered = distributed.gather(mine, self.group)
        if self.rank != 0:
            return {}
        tasks: dict[str, Any] = {}
        for part in gathered or []:
            tasks.update(part)
        record = {
            "step": step, "inner_steps": step, "time": time.time(), "steps_per_s": rate,
            "mean_loss": sum(t["loss"] for t in tasks.values()) / len(tasks),
            "meta_grad_norm": self.learner.last_meta_grad_norm, "shift_norm": self.learner.last_shift_norm,
            "tasks": tasks,
        }
        if self.probe is not None and self.probe.records:
            record["shift_error"] = self.probe.records[-1]
        metrics.write(json.dumps(_finite(record)) + "\n")
        metrics.flush()
        if writer is not None:
            writer.add_scalar("train/mean_loss", record["mean_loss"], step)
            writer.add_scalar("train/steps_per_s", rate, step)
            for key in ("meta_grad_norm", "shift_norm"):
                if math.isfinite(record[key]):
                    writer.add_scalar(f"meta/{key}", record[key], step)
            for name, t in tasks.items():
                for key, value in t.items():
                    writer.add_scalar(f"{key}/{name}", value, step)
        return record

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("tensorboard = true needs the tensorboard package: pip install largemeta[tensorboard]") from None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def close(self) -> None:
        distributed.shutdown()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _map(value: Any, fn) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    return value


def _to_cpu(value: Any) -> Any:
    return _map(value, lambda t: t.detach().cpu().clone())


def _to_device(value: Any, device: torch.device, keep_generators: bool = False) -> Any:
    # Generator states are CPU byte tensors whatever the device; everything else moves.
    return _map(value, lambda t: t if (keep_generators and t.dtype == torch.uint8) else t.to(device))


def _check_shapes(expected: Any, got: Any, where: str = "") -> None:
    """Refuse a checkpoint whose tensors do not match this run's model (another architecture)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise UserError(f"checkpoint tensor {where or '?'} has shape {shape}, this run needs {tuple(expected.shape)}")
    elif isinstance(expected, dict) and isinstance(got, dict):
        for k in expected:
            if k in got:
                _check_shapes(expected[k], got[k], f"{where}.{k}" if where else str(k))
    elif isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for i, (a, b) in enumerate(zip(expected, got)):
            _check_shapes(a, b, f"{where}[{i}]")
