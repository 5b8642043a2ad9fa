"""``largemeta train --dry-run``: everything a run would check, and its plan, without training or writing.

The config is resolved and validated, the run folder is checked as ``train`` would (new or empty, or with
``--resume`` a checkpoint whose config differs in resumable keys only), the trackers' packages are looked
for, the device is opened, the tasks' images are loaded (a dataset not yet in the cache is fetched into it,
as training would) and the model is built and fitted to them. Nothing is written into the run folder; it is
not even created.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from largemeta import files, trackers
from largemeta.core.algorithms import ALGORITHMS
from largemeta.errors import UserError
from largemeta.metatest import check_image_size
from largemeta.runs.claim import accept_new_run
from largemeta.train.budget import meta_updates
from largemeta.train.build import build_run, place
from largemeta.train.config import TrainConfig, tracker_names
from largemeta.train.pins import data_identity, pin_data
from largemeta.train.run_folder import check_resume


def plan(
    cfg: TrainConfig,
    folder: Path,
    *,
    resume: bool,
    allow_model_change: bool = False,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Check everything ``train`` would check before its first step; the plan of the run."""
    saved, identity = None, {}
    if resume:
        saved, identity = check_resume(folder, cfg, allow_model_change)
    elif folder.exists():
        if not folder.is_dir():
            raise UserError(f"{str(folder)!r} exists and is not a folder")
        accept_new_run(folder, files.contents(folder))
    trackers.check(tracker_names(cfg))
    run = build_run(cfg, place(cfg), saved.data_placement if saved else None)
    try:
        now = data_identity(cfg.suite, run.specs, cfg.data_dir, identity.get("data"))
        pin_data(identity, now, saved.step if saved else None, allow_data_change, folder)
        for spec in {(s.channels, s.image_size): s for s in run.specs}.values():
            check_image_size(run.body, spec.channels, spec.image_size, f"task {spec.name!r}")
        start = saved.step if saved else 0
        todo = cfg.steps - start
        algo = ALGORITHMS.get(cfg.algo)
        return {
            "run_dir": str(folder),
            "resume_from_step": start,
            "steps": cfg.steps,
            "algo": cfg.algo,
            "device": str(run.placement.device),
            "tasks": [s.name for s in run.specs],
            "tasks_per_trajectory": cfg.tasks_per_trajectory or len(run.specs),
            "parameters_in_phi": sum(v.numel() for v in run.learner.phi.values()),
            "data_placement": run.data_placement,
            "trajectories": 0 if algo.joint else math.ceil(cfg.steps / cfg.k) - start // cfg.k,
            "meta_updates": meta_updates(cfg) - meta_updates(cfg, start),
            "metrics_lines": _count(start, cfg.steps, cfg.log_every),
            "checkpoints": _count(start, cfg.steps, cfg.checkpoint_every),
            "trackers": list(tracker_names(cfg)),
            "steps_to_run": todo,
        }
    finally:
        run.close()


def _count(start: int, end: int, every: int) -> int:
    """Steps in (start, end] that are multiples of ``every``, or ``end`` itself."""
    n = end // every - start // every
    return n + (1 if end % every and end > start else 0)


def describe(p: dict[str, Any]) -> str:
    """The plan in a few lines (TOML comments, so that the printed config stays a valid --config)."""
    tasks = p["tasks"]
    shown = ", ".join(tasks[:6]) + (f" and {len(tasks) - 6} more" if len(tasks) > 6 else "")
    at = f"from step {p['resume_from_step']} " if p["resume_from_step"] else ""
    lines = [
        f"plan: train {p['algo']} {at}to step {p['steps']} ({p['steps_to_run']} steps) on {p['device']} "
        f"-> {p['run_dir']}",
        f"tasks: {len(tasks)} ({shown}), {p['tasks_per_trajectory']} per trajectory; "
        f"images {p['data_placement']}",
        f"φ: {p['parameters_in_phi']:,} parameters; {p['trajectories']} trajectories; "
        f"{p['meta_updates']} meta-updates; {p['metrics_lines']} metrics lines; "
        f"{p['checkpoints']} checkpoints",
        f"trackers: {', '.join(p['trackers']) or 'none'}",
        "checked: config, run folder, data, model, device; nothing written (dry run)",
    ]
    return "".join(f"# {line}\n" for line in lines)
