"""``largemeta train``: the training loop and its logging, one process or many.

    trainer = Trainer(load_config("offline", {"algo": "cts"}), Path("runs/cts"))
    trainer.run()

:mod:`largemeta.train.build` builds the run (device, process group, tasks, learner, executor),
:mod:`largemeta.train.state` lays out its checkpoint; this module owns the run folder (:mod:`largemeta.runs`)
and the loop: steps, non-finite guards, metrics lines, TensorBoard events, checkpoints. Under torchrun each
rank holds a shard of the tasks and rank 0 writes the files.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from largemeta import checkpoint
from largemeta.errors import UserError
from largemeta.runs import CHECKPOINT, CONFIG, METRICS, TENSORBOARD, read_config
from largemeta.train import distributed, state
from largemeta.train.build import build_run, place
from largemeta.train.config import TrainConfig, diff, save_config


class NonFiniteLoss(UserError):
    exit_code = 4


class Trainer:
    """One training run: ``Trainer(cfg, run_dir).run()`` trains to ``cfg.steps`` (resuming with
    ``resume``)."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True
    ) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.placement = place(cfg)
        self.rank = self.placement.rank
        self.progress = progress and self.rank == 0
        saved = self._prepare_run_dir(resume)
        self.run_state = build_run(cfg, self.placement, saved)
        if saved is not None:
            state.restore(self.run_state, saved)

    @property
    def learner(self):
        return self.run_state.learner

    @property
    def tasks(self):
        return self.run_state.tasks

    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        path = self.run_dir / CHECKPOINT
        if resume:
            saved_cfg = read_config(self.run_dir)
            differing = diff(saved_cfg, self.cfg)
            if differing:
                pairs = ", ".join(f"{k}: {saved_cfg.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in differing)
                raise UserError(f"--resume with a different config (only a longer steps is allowed): {pairs}")
            saved = checkpoint.load(path, map_location="cpu")
            if saved["step"] > self.cfg.steps:
                raise UserError(f"--steps {self.cfg.steps} is below the {saved['step']} steps already done")
            return saved
        if path.exists():
            raise UserError(f"{str(self.run_dir)!r} already holds a run; use --resume or another --out")
        if self.rank == 0:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.run_dir / CONFIG)
            except OSError as err:
                raise UserError(f"cannot write run folder {str(self.run_dir)!r}: {err.strerror}") from None
        return None

    def save(self) -> None:
        """Write the checkpoint (rank 0), after making sure no non-finite parameter would reach it."""
        # A non-finite gradient shows in the parameters before it shows in a loss (one step later).
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            bad = next((k for k, v in params.items() if not torch.isfinite(v).all()), None)
            if bad is not None:
                raise NonFiniteLoss(
                    f"non-finite parameter {bad!r} in task {task.name!r} at step {self.learner.step}; "
                    f"stopped — the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}"
                )
        whole = state.collect(self.run_state)
        if whole is not None:
            checkpoint.save(self.run_dir / CHECKPOINT, whole)
        distributed.barrier(self.placement.group)

    # the loop ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics = open(self.run_dir / METRICS, "a") if self.rank == 0 else None
        writer = self._tensorboard() if self.rank == 0 else None
        bar = None
        if self.progress and sys.stderr.isatty():
            bar = tqdm(total=cfg.steps, initial=self.learner.step, unit="step", dynamic_ncols=True)
        window_losses: dict[str, list[float]] = {}  # task -> [sum of its losses, steps] in this window
        window, t0 = 0, time.perf_counter()
        last: dict[str, Any] = {}
        try:
            while self.learner.step < cfg.steps:
                names = [t.name for t in self.tasks]  # a task pool's restart at this step swaps tasks
                take_step = self.run_state.take_step
                group = self.placement.group
                losses = (
                    distributed.guarded(take_step, "the meta-update all-reduce") if group else take_step()
                )
                step = self.learner.step
                losses = losses.detach().double().cpu()
                bad = (~torch.isfinite(losses)).nonzero()
                if len(bad):
                    t = int(bad[0])
                    raise NonFiniteLoss(
                        f"non-finite loss {losses[t].item()} in task {names[t]!r} at step {step}; "
                        f"stopped — the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}"
                    )
                for name, loss in zip(names, losses.tolist(), strict=True):
                    total = window_losses.setdefault(name, [0.0, 0])
                    total[0] += loss
                    total[1] += 1
                window += 1
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last = self._log(
                        step,
                        {name: total / n for name, (total, n) in window_losses.items()},
                        window / (time.perf_counter() - t0),
                        metrics,
                        writer,
                    )
                    window_losses.clear()
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

    def _held_out_accuracy(self) -> list[float]:
        """Each local task's accuracy on the first ``eval_batches`` batches of its held-out split (NaN:
        none)."""
        out = []
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            batches = itertools.islice(task.sampler.train.iter_eval(256), self.cfg.eval_batches)
            out.append(task.loss_and_accuracy(params, batches)["accuracy"])
        return out

    def _log(self, step: int, losses: dict[str, float], rate: float, metrics, writer) -> dict[str, Any]:
        """``losses``: each task's mean training loss over the window (with a task pool, the tasks active in
        it); held-out accuracy is measured for the tasks active now."""
        mine: dict[str, dict[str, float]] = {name: {"loss": loss} for name, loss in losses.items()}
        for task, acc in zip(self.tasks, self._held_out_accuracy(), strict=True):
            mine.setdefault(task.name, {})["accuracy"] = acc
        gathered = distributed.gather(mine, self.placement.group)
        if self.rank != 0:
            return {}
        tasks: dict[str, Any] = {}
        for part in gathered or []:
            for name, fields in part.items():
                tasks.setdefault(name, {}).update(fields)
        trained = [t["loss"] for t in tasks.values() if "loss" in t]
        record = {
            "step": step,
            "inner_steps": step,
            "time": time.time(),
            "steps_per_s": rate,
            "mean_loss": sum(trained) / len(trained),
            "meta_grad_norm": self.learner.last_meta_grad_norm,
            "shift_norm": self.learner.last_shift_norm,
            "tasks": tasks,
        }
        record.update(self.run_state.log_fields())  # data placement; a task pool's active tasks and draws
        probe = self.run_state.probe
        if probe is not None and probe.records:
            record["shift_error"] = probe.records[-1]
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
            raise UserError(
                "tensorboard = true needs the tensorboard package: pip install largemeta[tensorboard]"
            ) from None
        return SummaryWriter(str(self.run_dir / TENSORBOARD))

    def close(self) -> None:
        self.run_state.close()
        distributed.shutdown()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
