"""The paper's experiments as functions: meta-test accuracy against cumulative inner steps (convergence),
against the horizon K (k-ablation). Each algorithm trains once, resuming exactly from milestone to milestone;
φ is evaluated at every milestone with the meta-test protocol (:mod:`largemeta.evaluate`). Everything lands in
``out/results.json`` plus one run folder per algorithm (usable as ``--init``); plots and reports read the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from largemeta.data.tasks import TaskSpec, load_suite
from largemeta.errors import UserError
from largemeta.evaluate import Init, evaluate, load_init
from largemeta.train.config import TRAIN_ALGORITHMS, TrainConfig
from largemeta.train.trainer import METRICS, Trainer

RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    steps: int = 1000
    seeds: int = 3
    batch_size: int = 128
    train_size: int | None = None
    targets: tuple[str, ...] = ()  # names of the suite's meta-test tasks (default: all)


def targets_of(cfg: TrainConfig, names: Sequence[str]) -> list[TaskSpec]:
    specs = list(load_suite(cfg.suite).meta_test)
    if not names:
        return specs
    by = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise UserError(f"unknown meta-test task {unknown[0]!r} (valid: {', '.join(by)})")
    return [by[n] for n in names]


def milestones_of(steps: int, fractions: Sequence[float]) -> list[int]:
    out = sorted({max(1, round(steps * f)) for f in fractions if 0 < f <= 1})
    if not out:
        raise UserError(f"no milestone in (0, 1] among {list(fractions)}")
    return out


def _train_to(cfg: TrainConfig, run_dir: Path, steps: int) -> None:
    resume = (run_dir / "checkpoint.pt").exists()
    trainer = Trainer(dataclasses.replace(cfg, steps=steps), run_dir, resume=resume, progress=False)
    try:
        trainer.run()
    finally:
        trainer.close()


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [{"step": r["step"], "mean_loss": r["mean_loss"]} for r in map(json.loads, path.read_text().splitlines())]


def convergence(cfg: TrainConfig, algos: Sequence[str], out: Path, *, fractions: Sequence[float] = (0.25, 0.5, 1.0),
                settings: EvalSettings = EvalSettings(), device: str = "cpu",
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Train each algorithm at an equal budget of ``cfg.steps`` inner steps per task; evaluate at milestones."""
    for a in algos:
        if a not in TRAIN_ALGORITHMS + ("scratch",):
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(TRAIN_ALGORITHMS + ('scratch',))})")
    out.mkdir(parents=True, exist_ok=True)
    milestones = milestones_of(cfg.steps, fractions)
    specs = targets_of(cfg, settings.targets)
    result: dict[str, Any] = {"experiment": "convergence", "config": cfg.to_dict(), "milestones": milestones,
                              "eval": dataclasses.asdict(settings), "algorithms": {}}
    channels = specs[0].channels

    def ev(init: Init) -> dict[str, Any]:
        return evaluate(init, specs, steps=settings.steps, seeds=settings.seeds, batch_size=settings.batch_size,
                        train_size=settings.train_size, device=device, data_dir=cfg.data_dir or None)

    for algo in algos:
        started = time.perf_counter()
        if algo == "scratch":
            kwargs = {"in_channels": channels, **({"width": cfg.width} if cfg.model in ("convnet", "resnet20") else {})}
            r = ev(Init("scratch", cfg.model, kwargs, None))
            entry = {"accuracy": {str(m): r for m in milestones}, "loss": []}
        else:
            run_dir = out / algo
            entry = {"accuracy": {}, "run_dir": str(run_dir)}
            for m in milestones:
                log(f"{algo}: training to {m} inner steps")
                _train_to(dataclasses.replace(cfg, algo=algo), run_dir, m)
                entry["accuracy"][str(m)] = ev(load_init(str(run_dir)))
                log(f"{algo} @ {m}: mean accuracy {100 * entry['accuracy'][str(m)]['mean_accuracy']:.2f} %")
            entry["loss"] = _metrics(run_dir)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        result["algorithms"][algo] = entry
        (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result


def k_ablation(cfg: TrainConfig, algos: Sequence[str], ks: Sequence[int], out: Path, *,
               settings: EvalSettings = EvalSettings(), device: str = "cpu",
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Final meta-test accuracy against K for each algorithm, at the same budget."""
    out.mkdir(parents=True, exist_ok=True)
    specs = targets_of(cfg, settings.targets)
    result: dict[str, Any] = {"experiment": "k-ablation", "config": cfg.to_dict(), "ks": list(ks),
                              "eval": dataclasses.asdict(settings), "algorithms": {}}
    for algo in algos:
        result["algorithms"][algo] = {}
        for k in ks:
            run_dir = out / f"{algo}_k{k}"
            log(f"{algo}, K = {k}")
            _train_to(dataclasses.replace(cfg, algo=algo, k=k, meta_every=min(cfg.meta_every, k)), run_dir, cfg.steps)
            r = evaluate(load_init(str(run_dir)), specs, steps=settings.steps, seeds=settings.seeds,
                         batch_size=settings.batch_size, train_size=settings.train_size, device=device,
                         data_dir=cfg.data_dir or None)
            result["algorithms"][algo][str(k)] = r
            (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    """A Markdown table of mean accuracy ± 95 % interval (over seeds, averaged over targets)."""
    if result["experiment"] == "convergence":
        cols = [str(m) for m in result["milestones"]]
        header = "| algorithm | " + " | ".join(f"{c} steps" for c in cols) + " |"
        rows = [header, "|---" * (len(cols) + 1) + "|"]
        for algo, entry in result["algorithms"].items():
            cells = [_cell(entry["accuracy"][c]) for c in cols]
            rows.append(f"| {algo} | " + " | ".join(cells) + " |")
        return "\n".join(rows)
    cols = [str(k) for k in result["ks"]]
    rows = ["| algorithm | " + " | ".join(f"K = {c}" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for algo, by_k in result["algorithms"].items():
        rows.append(f"| {algo} | " + " | ".join(_cell(by_k[c]) for c in cols) + " |")
    return "\n".join(rows)


def overall(r: dict[str, Any]) -> tuple[float, float]:
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over targets)."""
    from largemeta.evaluate import ci95

    per_seed = [sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()))]
    return r["mean_accuracy"], ci95(per_seed)


def _cell(r: dict[str, Any]) -> str:
    mean, width = overall(r)
    return f"{100 * mean:.1f} ± {100 * width:.1f}"
