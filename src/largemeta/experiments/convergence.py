"""Meta-test accuracy against cumulative inner steps: each algorithm trains once at an equal budget of
inner steps per task, resuming from milestone to milestone, and φ is scored at every milestone."""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats
from largemeta.experiments.drive import drive, seed_suffix, store, train_seeds_of
from largemeta.experiments.scoring import VALIDATION, EvalSettings, protocol_of
from largemeta.experiments.spec import Common, Experiment, Part, Point, register
from largemeta.experiments.tables import cell, grid
from largemeta.experiments.tune import validate_run


def convergence(
    cfg,
    common: Common,
    *,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    tune: dict[str, Sequence[float]] | None = None,
    tune_fraction: float = 1.0,
    validation: EvalSettings = VALIDATION,
) -> dict[str, Any]:
    """Train each of ``common.algos`` at an equal budget of ``cfg.steps`` inner steps per task; evaluate at
    milestones (``fractions`` of the budget; ``scratch`` is the random init, evaluated once).

    ``tune`` (algorithm -> βs): before the algorithm's convergence runs, each of its βs is meta-trained once
    (the config's seed) for ``tune_fraction`` of the budget and scored with ``validation`` on the
    meta-training tasks' held-out images (:func:`largemeta.experiments.tune.validate_run`; the meta-test
    targets never influence the choice); the algorithm then runs at its best β. ``tuning[algo]`` records
    every β's validation score, meta-updates and the best β; the other algorithms run at the config's β.

    Training and evaluation run on ``common.device`` (default: the config's). Each algorithm is meta-trained
    ``common.train_seeds`` times (seeds ``cfg.seed``, ``cfg.seed + 1``, …; run folders ``ALGO_seedS`` when
    more than once). Each trained algorithm's entry records φ's meta-updates at each milestone; a milestone
    before the first meta-update is warned about up front."""
    from largemeta.experiments.parts import (
        check_algos,
        loss_curve,
        milestones_of,
        on_device,
        targets_of,
        train_to,
        without_meta_update,
    )
    from largemeta.experiments.reach import steps_to_reach
    from largemeta.metatest import load_init, scratch
    from largemeta.train.budget import lower_hint
    from largemeta.train.config import TRAIN_ALGORITHMS

    algos, out, settings, log, train_seeds = (
        common.algos,
        common.out,
        common.settings,
        common.log,
        common.train_seeds,
    )
    cfg = on_device(cfg, common.device)
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
    seeds = train_seeds_of(cfg, train_seeds)
    tune = {a: [float(b) for b in bs] for a, bs in (tune or {}).items() if a in algos}
    if tune:
        from largemeta.data.tasks.suite import load_suite
        from largemeta.errors import UserError
        from largemeta.train.build import select_tasks

        if not 0 < tune_fraction <= 1:
            raise UserError(f"the tuning budget must be a fraction in (0, 1], got {tune_fraction}")
        for a, bs in tune.items():
            if not bs or not all(math.isfinite(b) and b > 0 for b in bs):
                raise UserError(f"βs to tune {a} over must be finite numbers > 0, got {bs}")
        val_specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
        tune_steps = max(1, round(tune_fraction * cfg.steps))

    def tuning_parts(result: dict[str, Any], algo: str) -> Iterator[Part]:
        record = result.setdefault("tuning", {}).setdefault(
            algo,
            {
                "steps": tune_steps,
                "targets": [t.name for t in val_specs],
                "validation": {},
                "meta_updates": {},
            },
        )
        for beta in tune[algo]:

            def validate(beta=beta, record=record) -> None:
                log(f"tuning {algo}: β = {beta:g} for {tune_steps} steps, scored on the meta-training tasks")
                run = dataclasses.replace(cfg, algo=algo, meta_lr=beta, steps=tune_steps)
                folder = out / "tuning" / f"{algo}_beta{beta:g}"
                score, updates = validate_run(run, folder, val_specs, validation)
                record["validation"][f"{beta:g}"], record["meta_updates"][f"{beta:g}"] = score, updates
                record["best"] = max(record["validation"], key=record["validation"].get)

            yield f"tuning {algo}, β = {beta:g}", validate

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        for algo in algos:
            if algo in tune:
                yield from tuning_parts(result, algo)
            beta = float(result["tuning"][algo]["best"]) if algo in tune else cfg.meta_lr
            entry = result["algorithms"].setdefault(algo, {"accuracy": {}, "loss": []})
            if algo != "scratch":
                entry["beta"] = beta
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
            for seed in seeds:
                run_dir = out / f"{algo}{seed_suffix(seed, train_seeds)}"
                if train_seeds == 1:
                    entry["run_dir"] = str(run_dir)
                else:
                    entry.setdefault("run_dirs", {})[str(seed)] = str(run_dir)
                updates = entry.setdefault("meta_updates", {})  # milestone -> φ's meta-updates there
                for m in milestones:

                    def train_and_score(
                        algo=algo, entry=entry, updates=updates, run_dir=run_dir, m=m, seed=seed
                    ) -> None:
                        started = time.perf_counter()
                        what = algo if train_seeds == 1 else f"{algo} (seed {seed})"
                        log(f"{what}: training to {m} inner steps")
                        run = dataclasses.replace(cfg, algo=algo, seed=seed, meta_lr=entry["beta"])
                        updates[str(m)] = train_to(run, run_dir, m)
                        init = load_init(str(run_dir), model=cfg.model)
                        scored = settings.score(init, specs, cfg, device=cfg.device)
                        store(entry["accuracy"], str(m), seed, train_seeds, scored)
                        if train_seeds == 1:
                            entry["loss"] = loss_curve(run_dir)
                        else:
                            entry.setdefault("losses", {})[str(seed)] = loss_curve(run_dir)
                        result["steps_to_reach"] = steps_to_reach(result)
                        mean = 100 * scored["mean_accuracy"]
                        log(f"{what} @ {m}: mean accuracy {mean:.2f} % ({updates[str(m)]} meta-updates)")
                        _timed(entry, started)

                    label = f"{algo} @ {m} steps" + (f" (seed {seed})" if train_seeds > 1 else "")
                    yield label, train_and_score

    request = {
        "algos": list(algos),
        "milestones": milestones,
        "eval": dataclasses.asdict(settings),
        **({"train_seeds": train_seeds} if train_seeds > 1 else {}),
        **(
            {"tune": tune, "tune_steps": tune_steps, "validation": dataclasses.asdict(validation)}
            if tune
            else {}
        ),
    }
    protocol = protocol_of(settings, specs, cfg, seeds, milestones=milestones)
    return drive(
        "convergence",
        cfg,
        out,
        request,
        {"algorithms": {}, "steps_to_reach": []},
        parts,
        log=log,
        command=common.command_of("convergence"),
        device=cfg.device,
        warnings=warnings,
        protocol=protocol,
    )


def _timed(entry: dict[str, Any], started: float) -> None:
    entry["seconds"] = round(entry.get("seconds", 0.0) + time.perf_counter() - started, 1)


def table(result: dict[str, Any]) -> str:
    """Accuracy at each milestone per algorithm (the best of each column in bold), with each one's β."""
    from largemeta.experiments.glance import mark_best
    from largemeta.experiments.tables import overall

    cols = [str(m) for m in result["milestones"]]
    algos = result["algorithms"]
    columns = []
    for c in cols:
        found = {a: e["accuracy"].get(c) for a, e in algos.items()}
        values = {a: overall(r)[0] if r is not None else None for a, r in found.items()}
        columns.append(mark_best(values, {a: cell(r) for a, r in found.items()}))
    rows = {a: [col[a] for col in columns] for a in algos}
    if any("beta" in e for e in algos.values()):
        tuned = result.get("tuning") or {}
        for a, e in algos.items():
            beta = "—" if "beta" not in e else f"{e['beta']:g}" + (" (tuned)" if a in tuned else "")
            rows[a] = [beta, *rows[a]]
        return grid("algorithm", ["β", *(f"{c} steps" for c in cols)], rows)
    return grid("algorithm", [f"{c} steps" for c in cols], rows)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from largemeta.experiments.figures import accuracy_plot, loss_plot, reach_plot

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
        log_x=False,
    )
    curves = {
        a: [(r["step"], r["mean_loss"]) for r in _first_loss(e) if r.get("mean_loss")]
        for a, e in result["algorithms"].items()
    }
    figures = [acc]
    if result.get("steps_to_reach"):
        reach = out / "convergence_steps_to_reach.png"
        figures.append(reach_plot(result["steps_to_reach"], milestones[-1], reach))
    return [*figures, loss_plot(curves, "Meta-training loss", out / "convergence_loss.png")]


def _first_loss(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The loss curve of the algorithm's (first) meta-training run."""
    if "losses" in entry:
        return entry["losses"][min(entry["losses"], key=int)] if entry["losses"] else []
    return entry.get("loss", [])


def points(result: dict[str, Any]) -> list[Point]:
    return [
        (f"{m} steps", {a: e["accuracy"].get(str(m)) for a, e in result["algorithms"].items()})
        for m in result["milestones"]
    ]


def caption(result: dict[str, Any], name: str) -> str:
    protocol = result.get("protocol") or {}
    over = _over(protocol)
    if name == "convergence_accuracy.png":
        return (
            "Meta-test accuracy of each algorithm's φ (fine-tuned on the held-out targets, averaged over "
            f"them) against the cumulative inner steps per meta-training task it was trained for (linear "
            f"axes); bands: 95 % t-interval over {over}. Scratch is the random initialization (not "
            "meta-trained). Two "
            "algorithms' bands may overlap where their paired difference is significant: the verdict "
            "matrices above say which differences are."
        )
    if name == "convergence_steps_to_reach.png":
        return (
            "For each baseline: the cumulative inner steps it needs to reach CTS's mean accuracy at a "
            "milestone, over the milestone's steps (1: as many as CTS; dotted line), interpolated linearly "
            "between milestones; bars: 95 % paired bootstrap interval over the (meta-training seed, target, "
            "fine-tuning seed) units, running to the top where an end is not reached within the budget. An "
            "open triangle: not reached within the budget (the ratio is more than the height drawn); a "
            "downward triangle: reached by the first milestone (at most the height drawn)."
        )
    if name == "convergence_loss.png":
        return (
            "Mean meta-training loss over the meta-training tasks against cumulative inner steps per task"
            + (
                " (the first meta-training seed's run)."
                if len(protocol.get("train_seeds") or []) > 1
                else "."
            )
        )
    return ""


def _over(protocol: dict[str, Any]) -> str:
    seeds = protocol.get("fine_tuning_seeds")
    runs = len(protocol.get("train_seeds") or [0])
    if seeds is None:
        return "seeds"
    text = f"{seeds} fine-tuning seed{'s' if seeds != 1 else ''} (target-averaged)"
    return text + (f" × {runs} meta-training runs" if runs > 1 else "")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tune",
        default="",
        help="comma list of algorithms to run at their own best β, chosen among --tune-betas on the "
        "meta-training tasks' held-out images (default: none; every algorithm at the config's β)",
    )
    p.add_argument(
        "--tune-betas", type=comma_floats, default="0.01,0.1,1", help="the βs --tune chooses among"
    )
    p.add_argument(
        "--tune-fraction",
        type=float,
        default=1.0,
        help="fraction of the budget each β is meta-trained for when tuning (1)",
    )
    p.add_argument(
        "--milestones",
        type=comma_floats,
        default="0.025,0.05,0.1,0.25,0.5,1",
        help="fractions of the budget at which φ is evaluated",
    )


def own(args: argparse.Namespace) -> dict[str, Any]:
    tuned = [a.strip() for a in args.tune.split(",") if a.strip()]
    return {
        "fractions": args.milestones,
        **({"tune": {a: tuple(args.tune_betas) for a in tuned}} if tuned else {}),
        "tune_fraction": args.tune_fraction,
    }


register(
    Experiment(
        name="convergence",
        title="Convergence",
        help="meta-test accuracy vs cumulative inner steps, per algorithm",
        algos="cts,reptile,leap,fomaml,imaml",
        run=convergence,
        add_arguments=add_arguments,
        own=own,
        table=table,
        plots=plots,
        points=points,
        caption=caption,
    )
)
