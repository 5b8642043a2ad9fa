"""What every experiment's parts do: find the targets, train a run folder to a number of steps (resuming it
from milestone to milestone), read its loss curve."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largemeta import signals
from largemeta.data.tasks import TaskSpec, load_suite
from largemeta.errors import UserError
from largemeta.runs import checkpoint as runs_checkpoint
from largemeta.runs.checkpoint import has_checkpoint
from largemeta.runs.names import METRICS
from largemeta.train.build import select_tasks
from largemeta.train.config import RESUMABLE_CHANGES, TrainConfig
from largemeta.train.trainer import Trainer


def targets_of(cfg: TrainConfig, names: Sequence[str]) -> list[TaskSpec]:
    """The suite's meta-test tasks named (all of them when ``names`` is empty)."""
    return select_tasks(load_suite(cfg.suite).meta_test, tuple(names), what="meta-test task")


def milestones_of(steps: int, fractions: Sequence[float]) -> list[int]:
    out = sorted({max(1, round(steps * f)) for f in fractions if 0 < f <= 1})
    if not out:
        raise UserError(f"no milestone in (0, 1] among {list(fractions)}")
    return out


def train_to(cfg: TrainConfig, run_dir: Path, steps: int) -> None:
    """Train ``run_dir`` to ``steps``: a new run, or its checkpoint resumed (the config must be the same)."""
    resume = has_checkpoint(run_dir)
    if resume and runs_checkpoint.read(run_dir).step > steps:
        raise UserError(
            f"{str(run_dir)!r} is already past {steps} steps: it was not trained by this experiment"
        )
    trainer = Trainer(dataclasses.replace(cfg, steps=steps), run_dir, resume=resume)
    try:
        trainer.run()
    finally:
        trainer.close()
    signals.check()  # a signal that came with the last step: stop here, the run is saved


def loss_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The run's mean training loss at each logged step."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [
        {"step": r["step"], "mean_loss": r["mean_loss"]}
        for r in map(json.loads, path.read_text().splitlines())
    ]


def request_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys that decide an experiment's results (how often to log or save, where the data sit and
    the device may change between two runs of it)."""
    return {k: v for k, v in cfg.to_dict().items() if k == "steps" or k not in RESUMABLE_CHANGES}
