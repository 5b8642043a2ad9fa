"""What every experiment's parts do: put the run on its device, find the targets, train a run folder to a
number of steps (resuming it from milestone to milestone) and count its meta-updates, warn about a budget
that holds none, read its loss curve."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largemeta import signals
from largemeta.data.tasks.suite import TaskSpec, load_suite
from largemeta.devices import resolve_device
from largemeta.errors import UserError
from largemeta.experiments.scoring import EvalSettings
from largemeta.runs import checkpoint
from largemeta.runs.names import METRICS
from largemeta.train.budget import meta_update_every, no_meta_update
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


def on_device(cfg: TrainConfig, device: str | None = None) -> TrainConfig:
    """``cfg`` on the device an experiment trains *and* fine-tunes on: ``device`` when given (the command's
    ``--device``), else the config's; resolved once, before any work (``auto``: CUDA, then MPS, then CPU),
    and recorded as resolved, so each run folder's ``config.json`` and the results name the device used. A
    bad or absent device is one line (:func:`largemeta.devices.resolve_device`)."""
    what = "--device" if device is not None else "config key 'device'"
    resolved = resolve_device(device if device is not None else cfg.device, what=what)
    return dataclasses.replace(cfg, device=str(resolved))


def train_to(cfg: TrainConfig, run_dir: Path, steps: int) -> int:
    """Train ``run_dir`` to ``steps``: a new run, or its checkpoint resumed (the config must be the same).
    Returns φ's meta-updates at ``steps``, as the run's controller counts them (0 for joint training)."""
    resume = checkpoint.has_checkpoint(run_dir)
    if resume and checkpoint.read(run_dir).step > steps:
        raise UserError(
            f"{str(run_dir)!r} is already past {steps} steps: it was not trained by this experiment"
        )
    # the experiment warned about budgets without a meta-update up front, in its own terms
    trainer = Trainer(dataclasses.replace(cfg, steps=steps), run_dir, resume=resume, check_budget=False)
    try:
        trainer.run()
        count = trainer.meta_updates
    finally:
        trainer.close()
    signals.check()  # a signal that came with the last step: stop here, the run is saved
    return count


def without_meta_update(cfg: TrainConfig, steps: Sequence[int], *, budget: str, fix: str) -> str | None:
    """The warning line when some of ``steps`` (milestones, or an experiment's budget) hold no meta-update
    of ``cfg``'s algorithm — φ scored there is its initialization — else None. ``budget`` names them
    (``{steps}``: those steps, ``{s}``: "s" for several), ``fix`` says what to change (``{every}``: the first
    meta-update's step). :func:`largemeta.experiments.spec.drive` logs it, once the results folder's log.txt
    is open, before any part runs."""
    every = meta_update_every(cfg)
    short = [s for s in steps if every is not None and s < every]
    if not short:
        return None
    plural = len(short) > 1
    where = budget.format(steps=", ".join(map(str, short)), s="s" if plural else "")
    return no_meta_update(cfg, max(short), budget=where, fix=fix.format(every=every), plural=plural)


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


def check_algos(algos: list[str], valid: tuple[str, ...]) -> None:
    """An unknown algorithm among ``algos`` is one line naming the valid ones."""
    for a in algos:
        if a not in valid:
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(valid)})")


def train_and_score(
    cfg: TrainConfig, run_dir: Path, steps: int, settings: EvalSettings, specs: list[TaskSpec]
) -> dict[str, Any]:
    """A part's work (picklable as a ``functools.partial``): train ``run_dir`` with ``cfg`` to ``steps``
    (:func:`train_to`) and score its φ with ``settings`` on ``specs``. Returns ``meta_updates``, the meta-test
    result ``scored``, the run's ``loss`` curve and the ``seconds`` it took."""
    started = time.perf_counter()
    updates = train_to(cfg, run_dir, steps)
    scored = score_run(run_dir, cfg, settings, specs)
    return {
        "meta_updates": updates,
        "scored": scored,
        "loss": loss_curve(run_dir),
        "seconds": time.perf_counter() - started,
    }


def score_run(
    run_dir: Path, cfg: TrainConfig, settings: EvalSettings, specs: list[TaskSpec]
) -> dict[str, Any]:
    """The meta-test (with ``settings``, on ``specs``) of the φ trained in ``run_dir``; also a part's work."""
    from largemeta.metatest import load_init

    return settings.score(load_init(str(run_dir), model=cfg.model), specs, cfg, device=cfg.device)


def score_scratch(cfg: TrainConfig, settings: EvalSettings, specs: list[TaskSpec]) -> dict[str, Any]:
    """A part's work: the meta-test of a randomly initialized body of ``cfg``'s model (the scratch baseline),
    with the ``seconds`` it took."""
    from largemeta.metatest import scratch

    started = time.perf_counter()
    init = scratch(cfg.model, specs[0].channels, cfg.width)
    scored = settings.score(init, specs, cfg, device=cfg.device)
    return {"scored": scored, "seconds": time.perf_counter() - started}
