"""``largemeta train``: the training loop and its logging, one process or many.

    trainer = Trainer(load_config("offline", {"algo": "cts"}), Path("runs/cts"))
    trainer.run()

:mod:`largemeta.train.build` builds the run (device, process group, tasks, learner, executor),
:mod:`largemeta.train.state` lays out its checkpoint; this module owns the run folder (:mod:`largemeta.runs`)
and the loop: steps, non-finite guards, metrics lines, TensorBoard events, checkpoints. Under torchrun each
rank serves its tasks (or a slice of one task's batch: :mod:`largemeta.train.groups`); rank 0 writes the
metrics and every rank writes its own part of each checkpoint (:mod:`largemeta.train.sharded_state`).
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

from largemeta import sharded_checkpoint
from largemeta.errors import UserError
from largemeta.runs import CHECKPOINT, CHECKPOINT_NAME, CONFIG, METRICS, TENSORBOARD, read_config
from largemeta.train import distributed, sharded_state
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
        try:
            saved = self._prepare_run_dir(resume)
            self.run_state = build_run(cfg, self.placement)
            if saved is not None:
                sharded_state.restore(self.run_state, self.run_dir, saved)
        except BaseException:
            distributed.shutdown()  # leave the process group cleanly: no one calls close() on a failed start
            raise

    @property
    def learner(self):
        return self.run_state.learner

    @property
    def tasks(self):
        return self.run_state.tasks

    def _prepare_run_dir(self, resume: bool) -> sharded_state.Saved | None:
        if resume:
            saved_cfg = read_config(self.run_dir)
            differing = diff(saved_cfg, self.cfg)
            if differing:
                pairs = ", ".join(f"{k}: {saved_cfg.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in differing)
                raise UserError(f"--resume with a different config (only a longer steps is allowed): {pairs}")
            saved = sharded_state.read(self.run_dir)
            if saved.step > self.cfg.steps:
                raise UserError(f"--steps {self.cfg.steps} is below the {saved.step} steps already done")
            if self.rank == 0:  # unfinished checkpoint folders of a killed run
                sharded_checkpoint.sweep(self.run_dir, CHECKPOINT_NAME)
            return saved
        if sharded_state.exists(self.run_dir):
            raise UserError(f"{str(self.run_dir)!r} already holds a run; use --resume or another --out")
        if self.rank == 0:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.run_dir / CONFIG)
            except OSError as err:
                raise UserError(f"cannot write run folder {str(self.run_dir)!r}: {err.strerror}") from None
        return None

    def save(self) -> None:
        """Write the checkpoint (every rank its own entries), after making sure no non-finite parameter would
        reach it."""
        # A non-finite gradient shows in the parameters before it shows in a loss (one step later).
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            bad = next((k for k, v in params.items() if not torch.isfinite(v).all()), None)
            if bad is not None:
                raise NonFiniteLoss(
                    f"non-finite parameter {bad!r} in task {task.name!r} at step {self.learner.step}; "
                    f"stopped — the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}"
                )
        if self.placement.group is None:
            sharded_state.save(self.run_state, self.run_dir)
        else:
            distributed.guarded(
                lambda: sharded_state.save(self.run_state, self.run_dir), "writing a checkpoint"
            )

    # the loop ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics = open(self.run_dir / METRICS, "a") if self.rank == 0 else None
        writer = self._tensorboard() if self.rank == 0 else None
        bar = None
        if self.progress and sys.stderr.isatty():
            bar = tqdm(total=cfg.steps, initial=self.learner.step, unit="step", dynamic_ncols=True)
        window_losses = torch.zeros(len(self.tasks), dtype=torch.float64)
        window, t0 = 0, time.perf_counter()
        last: dict[str, Any] = {}
        try:
            while self.learner.step < cfg.steps:
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
                        f"non-finite loss {losses[t].item()} in task {self.tasks[t].name!r} at step {step}; "
                        f"stopped — the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r}"
                    )
                window_losses += losses
                window += 1
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last = self._log(
                        step, window_losses / window, window / (time.perf_counter() - t0), metrics, writer
                    )
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

    def _held_out_accuracy(self) -> list[float]:
        """Each local task's accuracy on the first ``eval_batches`` batches of its held-out split (NaN:
        none)."""
        out = []
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            batches = itertools.islice(task.sampler.train.iter_eval(256), self.cfg.eval_batches)
            out.append(task.loss_and_accuracy(params, batches)["accuracy"])
        return out

    def _log(self, step: int, losses: torch.Tensor, rate: float, metrics, writer) -> dict[str, Any]:
        mine = {self.tasks[i].name: {"loss": float(losses[i])} for i in range(len(self.tasks))}
        for name, acc in zip(mine, self._held_out_accuracy(), strict=True):
            mine[name]["accuracy"] = acc
        gathered = distributed.gather(mine, self.placement.group)
        if self.rank != 0:
            return {}
        tasks: dict[str, Any] = {}
        for part in gathered or []:
            tasks.update(part)
        record = {
            "step": step,
            "inner_steps": step,
            "time": time.time(),
            "steps_per_s": rate,
            "mean_loss": sum(t["loss"] for t in tasks.values()) / len(tasks),
            "meta_grad_norm": self.learner.last_meta_grad_norm,
            "shift_norm": self.learner.last_shift_norm,
            "tasks": tasks,
        }
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
        distributed.shutdown()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
