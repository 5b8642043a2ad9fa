"""The paper's experiments as functions: meta-test accuracy against cumulative inner steps (convergence),
against the horizon K (k-ablation). Each algorithm trains once, resuming exactly from milestone to milestone;
φ is evaluated at every milestone with the meta-test protocol (:mod:`largemeta.metatest`). Everything lands in
``out/results.json`` plus one run folder per algorithm (usable as ``--init``); plots and reports read the
JSON.
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
from largemeta.metatest import Init, load_init, meta_test, scratch
from largemeta.runs import METRICS, has_checkpoint
from largemeta.stats import ci95
from largemeta.train.build import select_tasks
from largemeta.train.config import TRAIN_ALGORITHMS, TrainConfig
from largemeta.train.trainer import Trainer

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
    resume = has_checkpoint(run_dir)
    trainer = Trainer(dataclasses.replace(cfg, steps=steps), run_dir, resume=resume, progress=False)
    try:
        trainer.run()
    finally:
        trainer.close()


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [
        {"step": r["step"], "mean_loss": r["mean_loss"]}
        for r in map(json.loads, path.read_text().splitlines())
    ]


def convergence(
    cfg: TrainConfig,
    algos: Sequence[str],
    out: Path,
    *,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Train each algorithm at an equal budget of ``cfg.steps`` inner steps per task; evaluate at
    milestones."""
    for a in algos:
        if a not in TRAIN_ALGORITHMS + ("scratch",):
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(TRAIN_ALGORITHMS + ('scratch',))})")
    out.mkdir(parents=True, exist_ok=True)
    milestones = milestones_of(cfg.steps, fractions)
    specs = targets_of(cfg, settings.targets)
    result: dict[str, Any] = {
        "experiment": "convergence",
        "config": cfg.to_dict(),
        "milestones": milestones,
        "eval": dataclasses.asdict(settings),
        "algorithms": {},
    }
    channels = specs[0].channels

    def ev(init: Init) -> dict[str, Any]:
        return meta_test(
            init,
            specs,
            steps=settings.steps,
            seeds=settings.seeds,
            batch_size=settings.batch_size,
            train_size=settings.train_size,
            device=device,
            data_dir=cfg.data_dir or None,
        )

    for algo in algos:
        started = time.perf_counter()
        if algo == "scratch":
            r = ev(scratch(cfg.model, channels, cfg.width))
            entry = {"accuracy": {str(m): r for m in milestones}, "loss": []}
        else:
            run_dir = out / algo
            entry = {"accuracy": {}, "run_dir": str(run_dir)}
            for m in milestones:
                log(f"{algo}: training to {m} inner steps")
                _train_to(dataclasses.replace(cfg, algo=algo), run_dir, m)
                entry["accuracy"][str(m)] = ev(load_init(str(run_dir), model=cfg.model))
                log(f"{algo} @ {m}: mean accuracy {100 * entry['accuracy'][str(m)]['mean_accuracy']:.2f} %")
            entry["loss"] = _metrics(run_dir)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        result["algorithms"][algo] = entry
        (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result


def k_ablation(
    cfg: TrainConfig,
    algos: Sequence[str],
    ks: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Final meta-test accuracy against K for each algorithm, at the same budget."""
    out.mkdir(parents=True, exist_ok=True)
    specs = targets_of(cfg, settings.targets)
    result: dict[str, Any] = {
        "experiment": "k-ablation",
        "config": cfg.to_dict(),
        "ks": list(ks),
        "eval": dataclasses.asdict(settings),
        "algorithms": {},
    }
    for algo in algos:
        result["algorithms"][algo] = {}
        for k in ks:
            run_dir = out / f"{algo}_k{k}"
            log(f"{algo}, K = {k}")
            _train_to(
                dataclasses.replace(cfg, algo=algo, k=k, meta_every=min(cfg.meta_every, k)),
                run_dir,
                cfg.steps,
            )
            r = meta_test(
                load_init(str(run_dir), model=cfg.model),
                specs,
                steps=settings.steps,
                seeds=settings.seeds,
                batch_size=settings.batch_size,
                train_size=settings.train_size,
                device=device,
                data_dir=cfg.data_dir or None,
            )
            result["algorithms"][algo][str(k)] = r
            (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    """A Markdown table of mean accuracy ± 95 % interval (over seeds, averaged over targets)."""
    if result["experiment"] == "tune":
        betas = [f"{b:g}" for b in result["betas"]]
        rows = [
            "| algorithm | " + " | ".join(f"val. β = {b}" for b in betas) + " | best β | meta-test |",
            "|---" * (len(betas) + 3) + "|",
        ]
        for algo, test in result["test"].items():
            val = result["validation"].get(algo, {})
            cells = [f"{100 * val[b]:.1f}" if b in val else "" for b in betas]
            rows.append(
                f"| {algo} | " + " | ".join(cells) + f" | {result['best'].get(algo, '—')} | {_cell(test)} |"
            )
        return "\n".join(rows)
    if result["experiment"] == "pretrained":
        sizes = [str(n) for n in result["sizes"]]
        rows = [
            "| start | " + " | ".join(f"{n} images" for n in sizes) + " |",
            "|---" * (len(sizes) + 1) + "|",
        ]
        for name, by_size in result["algorithms"].items():
            rows.append(f"| {name} | " + " | ".join(_cell(by_size[n]) for n in sizes) + " |")
        names = list(result["algorithms"])
        if len(names) == 2:
            gains = [
                100
                * (
                    overall(result["algorithms"][names[1]][n])[0]
                    - overall(result["algorithms"][names[0]][n])[0]
                )
                for n in sizes
            ]
            rows.append(f"| gain of {names[1]} | " + " | ".join(f"{g:+.1f}" for g in gains) + " |")
        return "\n".join(rows)
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
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over
    targets)."""
    per_seed = [
        sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()), strict=True)
    ]
    return r["mean_accuracy"], ci95(per_seed)


def _cell(r: dict[str, Any]) -> str:
    mean, width = overall(r)
    return f"{100 * mean:.1f} ± {100 * width:.1f}"


def tune(
    cfg: TrainConfig,
    algos: Sequence[str],
    betas: Sequence[float],
    out: Path,
    *,
    validation: EvalSettings = EvalSettings(steps=100, seeds=2, batch_size=64),
    test: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Fair tuning: each algorithm at its own best meta learning rate β, chosen on the *meta-training* tasks.

    Every (algorithm, β) trains at the same budget; its φ is scored on a validation split made of the
    meta-training tasks' own held-out images (limited-data fine-tuning, ``validation.train_size`` images per
    task); the best β per algorithm is then — and only then — evaluated on the meta-test targets. The
    meta-test targets never influence the choice.
    """
    if not betas or min(betas) <= 0:
        raise UserError(f"--betas must be positive numbers, got {list(betas)}")
    out.mkdir(parents=True, exist_ok=True)
    val_specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    test_specs = targets_of(cfg, test.targets)
    result: dict[str, Any] = {
        "experiment": "tune",
        "config": cfg.to_dict(),
        "betas": list(betas),
        "validation_eval": dataclasses.asdict(validation),
        "eval": dataclasses.asdict(test),
        "validation": {},
        "best": {},
        "test": {},
    }

    def ev(init: Init, specs: list[TaskSpec], s: EvalSettings) -> dict[str, Any]:
        return meta_test(
            init,
            specs,
            steps=s.steps,
            seeds=s.seeds,
            batch_size=s.batch_size,
            train_size=s.train_size,
            device=device,
            data_dir=cfg.data_dir or None,
        )

    for algo in algos:
        scores = {}
        for beta in betas:
            run_dir = out / f"{algo}_beta{beta:g}"
            log(f"{algo}, β = {beta:g}")
            _train_to(dataclasses.replace(cfg, algo=algo, meta_lr=beta), run_dir, cfg.steps)
            scores[f"{beta:g}"] = ev(load_init(str(run_dir), model=cfg.model), val_specs, validation)[
                "mean_accuracy"
            ]
        best = max(scores, key=scores.get)
        result["validation"][algo], result["best"][algo] = scores, best
        log(f"{algo}: best β = {best} (validation {100 * scores[best]:.2f} %)")
        result["test"][algo] = ev(
            load_init(str(out / f"{algo}_beta{best}"), model=cfg.model), test_specs, test
        )
        (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    result["test"]["scratch"] = ev(scratch(cfg.model, test_specs[0].channels, cfg.width), test_specs, test)
    (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result


def pretrained(
    cfg: TrainConfig,
    init: str,
    sizes: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = EvalSettings(),
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """CTS on top of a pretrained model vs plain fine-tuning of that model, per target training-set size.

    ``init`` is fine-tuned directly (the baseline) and used as the starting φ of meta-training with
    ``cfg.algo`` (CTS by default); both are evaluated on the meta-test targets sub-sampled to each size.
    """
    out.mkdir(parents=True, exist_ok=True)
    specs = targets_of(cfg, settings.targets)
    run_dir = out / cfg.algo
    log(f"meta-training {cfg.algo} from {init}")
    _train_to(dataclasses.replace(cfg, init=init), run_dir, cfg.steps)
    starts = {
        "finetune": load_init(init, model=cfg.model),
        cfg.algo: load_init(str(run_dir), model=cfg.model),
    }
    result: dict[str, Any] = {
        "experiment": "pretrained",
        "config": cfg.to_dict(),
        "init": init,
        "sizes": list(sizes),
        "eval": dataclasses.asdict(settings),
        "algorithms": {},
    }
    for name, start in starts.items():
        result["algorithms"][name] = {}
        for n in sizes:
            log(f"{name}, {n} training images per target")
            result["algorithms"][name][str(n)] = meta_test(
                start,
                specs,
                steps=settings.steps,
                seeds=settings.seeds,
                batch_size=settings.batch_size,
                train_size=n,
                device=device,
                data_dir=cfg.data_dir or None,
            )
        (out / RESULTS).write_text(json.dumps(result, indent=1) + "\n")
    return result
