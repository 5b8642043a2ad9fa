"""Meta-test accuracy against cumulative inner steps: each algorithm trains once at an equal budget of
inner steps per task, resuming from milestone to milestone, and φ is scored at every milestone."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats
from largemeta.experiments.spec import (
    EXPERIMENTS,
    PROTOCOL,
    Common,
    EvalSettings,
    Experiment,
    Part,
    cell,
    check_algos,
    drive,
    grid,
)


def convergence(
    cfg,
    algos: Sequence[str],
    out: Path,
    *,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    settings: EvalSettings = PROTOCOL,
    device: str | None = None,
    log=lambda s: None,
    command: str = "experiment convergence",
) -> dict[str, Any]:
    """Train each algorithm at an equal budget of ``cfg.steps`` inner steps per task; evaluate at
    milestones (``fractions`` of the budget; ``scratch`` is the random init, evaluated once). Training and
    evaluation run on ``device`` (default: the config's). Each trained algorithm's entry records φ's
    meta-updates at each milestone; a milestone before the first meta-update is warned about up front."""
    from largemeta.experiments.protocol import (
        loss_curve,
        milestones_of,
        on_device,
        targets_of,
        train_to,
        without_meta_update,
    )
    from largemeta.metatest import load_init, scratch
    from largemeta.train.budget import lower_hint
    from largemeta.train.config import TRAIN_ALGORITHMS

    cfg = on_device(cfg, device)
    check_algos(list(algos), (*TRAIN_ALGORITHMS, "scratch"))
    milestones = milestones_of(cfg.steps, fractions)
    specs = targets_of(cfg, settings.targets)
    warnings = []
    for algo in dict.fromkeys(algos):
        if algo != "scratch":
            trained = dataclasses.replace(cfg, algo=algo)
            fix = f"raise --steps so that each milestone reaches {{every}} steps, or {lower_hint(trained)}"
            budget = f"milestone{{s}} {{steps}} of --steps {cfg.steps}"
            warnings.append(without_meta_update(trained, milestones, budget=budget, fix=fix))

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        for algo in algos:
            entry = result["algorithms"].setdefault(algo, {"accuracy": {}, "loss": []})
            if algo == "scratch":

                def evaluate_scratch(entry=entry) -> None:
                    started = time.perf_counter()
                    r = settings.score(
                        scratch(cfg.model, specs[0].channels, cfg.width), specs, cfg, device=cfg.device
                    )
                    entry["accuracy"] = {str(m): r for m in milestones}
                    _timed(entry, started)

                yield "scratch", evaluate_scratch
                continue
            run_dir = out / algo
            entry["run_dir"] = str(run_dir)
            updates = entry.setdefault("meta_updates", {})  # milestone -> φ's meta-updates there
            for m in milestones:

                def train_and_score(algo=algo, entry=entry, updates=updates, run_dir=run_dir, m=m) -> None:
                    started = time.perf_counter()
                    log(f"{algo}: training to {m} inner steps")
                    updates[str(m)] = train_to(dataclasses.replace(cfg, algo=algo), run_dir, m)
                    init = load_init(str(run_dir), model=cfg.model)
                    entry["accuracy"][str(m)] = settings.score(init, specs, cfg, device=cfg.device)
                    entry["loss"] = loss_curve(run_dir)
                    mean = entry["accuracy"][str(m)]["mean_accuracy"]
                    log(f"{algo} @ {m}: mean accuracy {100 * mean:.2f} % ({updates[str(m)]} meta-updates)")
                    _timed(entry, started)

                yield f"{algo} @ {m} steps", train_and_score

    request = {
        "algos": list(algos),
        "milestones": milestones,
        "eval": dataclasses.asdict(settings),
    }
    empty = {"algorithms": {}}
    return drive("convergence", cfg, out, request, empty, parts, log=log, command=command, warnings=warnings)


def _timed(entry: dict[str, Any], started: float) -> None:
    entry["seconds"] = round(entry.get("seconds", 0.0) + time.perf_counter() - started, 1)


def table(result: dict[str, Any]) -> str:
    cols = [str(m) for m in result["milestones"]]
    rows = {a: [cell(e["accuracy"].get(c)) for c in cols] for a, e in result["algorithms"].items()}
    return grid("algorithm", [f"{c} steps" for c in cols], rows)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from largemeta.experiments.plots import accuracy_plot, loss_plot

    milestones = result["milestones"]
    series = {
        a: (milestones, [e["accuracy"].get(str(m)) for m in milestones])
        for a, e in result["algorithms"].items()
    }
    acc = accuracy_plot(
        series,
        "cumulative inner steps per task",
        "Meta-test accuracy vs. inner steps (95 % interval over seeds)",
        out / "convergence_accuracy.png",
    )
    curves = {
        a: [(r["step"], r["mean_loss"]) for r in e.get("loss", []) if r.get("mean_loss")]
        for a, e in result["algorithms"].items()
    }
    return [acc, loss_plot(curves, "Meta-training loss", out / "convergence_loss.png")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--milestones",
        type=comma_floats,
        default="0.025,0.05,0.1,0.25,0.5,1",
        help="fractions of the budget at which φ is evaluated",
    )


def from_args(cfg, args: argparse.Namespace, common: Common) -> dict[str, Any]:
    return convergence(
        cfg,
        common.algos,
        common.out,
        fractions=args.milestones,
        settings=common.settings,
        device=common.device,
        log=common.log,
    )


EXPERIMENTS.add(
    "convergence",
    Experiment(
        name="convergence",
        title="Convergence",
        help="meta-test accuracy vs cumulative inner steps, per algorithm",
        algos="cts,reptile,leap,fomaml,imaml",
        add_arguments=add_arguments,
        from_args=from_args,
        table=table,
        plots=plots,
    ),
)
