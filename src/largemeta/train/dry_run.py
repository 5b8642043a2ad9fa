"""``largemeta train --dry-run``: everything a run would check, and its plan, without training or writing.

The config is resolved and validated, the run folder is checked as ``train`` would (new or empty, or with
``--resume`` a checkpoint whose config differs in resumable keys only), the trackers' packages are looked
for, the device is opened, the tasks' images are loaded (a dataset not yet in the cache is fetched into it,
as training would) and the model is built and fitted to them. Nothing is written into the run folder; it is
not even created.

Before any of that the plan says what the run needs (:mod:`largemeta.train.needs`): the suite's datasets
(cached or not, download size, sources), the decoded size of each task and where it will live, the
parameters and an estimate of the peak memory per device; with ``measure`` also hours per device count from a
short warm-up on the current device. When a dataset is not in the cache the dry run fetches nothing: it
prints that plan, says what to fetch, and checks everything else (config, run folder, model, device).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from largemeta import files, trackers
from largemeta.core.algorithms import ALGORITHMS
from largemeta.data.sources.datasets import looks_like_path
from largemeta.data.tasks.suite import load_suite
from largemeta.errors import UserError
from largemeta.metatest import check_image_size
from largemeta.runs.claim import accept_new_run
from largemeta.train import needs
from largemeta.train.budget import meta_updates
from largemeta.train.build import build_run, place, select_tasks
from largemeta.train.config import TrainConfig, tracker_names
from largemeta.train.pins import data_identity, pin_data
from largemeta.train.resume import check_resume


def plan(
    cfg: TrainConfig,
    folder: Path,
    *,
    resume: bool,
    allow_model_change: bool = False,
    allow_data_change: bool = False,
    measure: bool = False,
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
    need = _needs(cfg, measure)
    if not need["data_ready"]:
        return {**_without_data(cfg, folder, saved.step if saved else 0, need), **need}
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
            "device": str(run.processes.device),
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
            **need,
        }
    finally:
        run.close()


def _needs(cfg: TrainConfig, measure: bool) -> dict[str, Any]:
    """The datasets, decoded sizes, memory and (measured) hours of :mod:`largemeta.train.needs`."""
    suite = load_suite(cfg.suite)
    specs = select_tasks(suite.meta_train, cfg.tasks)
    if not specs:
        raise UserError(f"suite {cfg.suite!r} has no meta-train tasks")
    rows = needs.datasets(cfg, suite)
    sizes = needs.task_images(cfg, specs)
    device = _device(cfg)
    where = _where(cfg, sizes, device)
    out: dict[str, Any] = {
        "data_ready": all(r["cached"] for r in rows),
        "datasets": rows,
        "task_images": sizes,
        "images_live": where,
        "data_dir": str(needs.data_dir(cfg.data_dir or None)),
        "fetch": _fetch_command(cfg, rows),
        "memory": needs.model_and_memory(cfg, specs, sizes, "device" if where.startswith("device") else ""),
    }
    if measure:
        out["measured"] = needs.measure(cfg, specs, device)
    return out


def _device(cfg: TrainConfig) -> Any:
    """The device the run would use (without joining a process group)."""
    import os

    from largemeta.devices import resolve_device

    return resolve_device(cfg.device, int(os.environ.get("RANK", "0")), what="config key 'device'")


def _fetch_command(cfg: TrainConfig, rows: list[dict[str, Any]]) -> str | None:
    """The command that fills the cache with what the run lacks (None when nothing is missing)."""
    missing = [r["name"] for r in rows if not r["cached"] and r["sources"] != ["path"]]
    if not missing:
        return None
    where = f" --data-dir {cfg.data_dir}" if cfg.data_dir else ""
    if len(missing) == len(rows) and not looks_like_path(cfg.suite):
        return f"largemeta data fetch --suite {cfg.suite}{where}"
    return f"largemeta data fetch {' '.join(missing)}{where}"


def _where(cfg: TrainConfig, sizes: list[dict[str, Any]], device: Any) -> str:
    """Where the meta-train images will live, as the run decides it (``auto``: against the budget)."""
    from largemeta.data.tasks.loader import memory_budget

    if cfg.data_placement != "auto":
        return cfg.data_placement
    known = [s["decoded_bytes"] for s in sizes if s["decoded_bytes"] is not None]
    total = sum(sorted(known, reverse=True)[: cfg.tasks_per_trajectory or None])
    budget, source = memory_budget(device, cfg.memory_budget_gb)
    verdict = "device" if total <= budget else "stream"
    return f"{verdict} (auto: {needs.gb(total)} decoded against a budget of {needs.gb(budget)}, {source})"


def _without_data(cfg: TrainConfig, folder: Path, start: int, need: dict[str, Any]) -> dict[str, Any]:
    """The plan's counts for a run whose data is not in the cache yet (nothing built, nothing fetched)."""
    specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    algo = ALGORITHMS.get(cfg.algo)
    return {
        "run_dir": str(folder),
        "resume_from_step": start,
        "steps": cfg.steps,
        "algo": cfg.algo,
        "device": str(_device(cfg)),
        "tasks": [s.name for s in specs],
        "tasks_per_trajectory": cfg.tasks_per_trajectory or len(specs),
        "parameters_in_phi": need["memory"]["body_parameters"],
        "data_placement": need["images_live"],
        "trajectories": 0 if algo.joint else math.ceil(cfg.steps / cfg.k) - start // cfg.k,
        "meta_updates": meta_updates(cfg) - meta_updates(cfg, start),
        "metrics_lines": _count(start, cfg.steps, cfg.log_every),
        "checkpoints": _count(start, cfg.steps, cfg.checkpoint_every),
        "trackers": list(tracker_names(cfg)),
        "steps_to_run": cfg.steps - start,
    }


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
        *_needs_lines(p),
    ]
    return "".join(f"# {line}\n" for line in lines)


def _needs_lines(p: dict[str, Any]) -> list[str]:
    rows = p["datasets"]
    missing = [r for r in rows if not r["cached"]]
    mb = [r["download_mb"] for r in missing]
    unknown = " + sizes unknown" if None in mb else ""
    size = f"{sum(m for m in mb if m) / 1e3:.2f} GB{unknown}" if missing else "0"
    lines = [
        f"datasets: {len(rows)}, {len(rows) - len(missing)} cached, {len(missing)} to fetch "
        f"(download {size}) into {p['data_dir']}"
    ]
    for r in rows:
        known = f"{r['download_mb']:.1f} MB" if r["download_mb"] else "size unknown"
        state = "cached" if r["cached"] else f"not cached, {known}"
        lines.append(f"  {r['name']} ({', '.join(r['roles'])}): {state}; sources {'; '.join(r['sources'])}")
    lines.append(f"task images decoded (uint8), living on: {p['images_live']}")
    for t in p["task_images"]:
        n = f"{t['images']:,} images" if t["images"] is not None else "? images"
        how = "" if t["exact"] else " (estimated from the registry's count)"
        lines.append(f"  {t['task']}: {n}, {needs.gb(t['decoded_bytes'])}{how}")
    mem = p["memory"]
    peaks = ", ".join(f"{w}: {needs.gb(b)}" for w, b in mem["peak_bytes_per_device"].items())
    lines.append(
        f"body {mem['body_parameters']:,} parameters + heads {sum(mem['head_parameters']):,}; "
        f"peak memory per device, estimated (devices: bytes): {peaks}"
    )
    if "measured" in p:
        m = p["measured"]
        steps = ", ".join(f"{k}: {v * 1e3:.1f} ms" for k, v in m["seconds_per_step"].items())
        hours = ", ".join(f"{w}: {needs.hours_text(h)}" for w, h in m["hours"].items())
        lines.append(
            f"measured on {m['device']}, {m['precision']} ({m['warmup_steps']} warm-up + {m['timed_steps']} "
            f"timed inner steps per image shape, median): {steps}"
        )
        lines.append(f"hours for {p['steps_to_run']} steps (devices: time; inner steps only): {hours}")
    if missing:
        if p["fetch"]:
            lines.append(f"to fetch first: {p['fetch']}")
        lines.append("checked: config, run folder, model, device; not the data (not cached); nothing written")
    else:
        lines.append("checked: config, run folder, data, model, device; nothing written (dry run)")
    return lines
