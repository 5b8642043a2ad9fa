"""Meta-test accuracy against cumulative inner steps: each algorithm trains once at an equal budget of
inner steps per task, resuming from milestone to milestone, and φ is scored at every milestone."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats
from largemeta.experiments.drive import drive, seed_suffix, store, train_seeds_of
from largemeta.experiments.scoring import VALIDATION, EvalSettings, protocol_of
from largemeta.experiments.spec import WAIT, Common, Experiment, Part, Point, register
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
        milestones_of,
        on_device,
        score_scratch,
        targets_of,
        train_and_score,
        without_meta_update,
    )
    from largemeta.experiments.reach import steps_to_reach
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
            run = dataclasses.replace(cfg, algo=algo, meta_lr=beta, steps=tune_steps)
            folder = out / "tuning" / f"{algo}_beta{beta:g}"

            def keep(value: tuple[float, int], beta=beta, record=record) -> None:
                record["validation"][f"{beta:g}"], record["meta_updates"][f"{beta:g}"] = value
                record["best"] = max(record["validation"], key=record["validation"].get)
                log(f"tuning {algo}: β = {beta:g} scores {100 * value[0]:.2f} % on the meta-training tasks")

            work = functools.partial(validate_run, run, folder, val_specs, validation)
            yield Part(f"tuning {algo}, β = {beta:g}", work, keep)
        yield WAIT  # the algorithm's runs use the best β

    def parts(result: dict[str, Any]) -> Iterator[Part | object]:
        for algo in algos:
            if algo in tune:
                yield from tuning_parts(result, algo)
            beta = float(result["tuning"][algo]["best"]) if algo in tune else cfg.meta_lr
            entry = result["algorithms"].setdefault(algo, {"accuracy": {}, "loss": []})
            if algo == "scratch":

                def keep_scratch(value: dict[str, Any], entry=entry) -> None:
                    entry["accuracy"] = {str(m): value["scored"] for m in milestones}
                    _timed(entry, value["seconds"])

                yield Part("scratch", functools.partial(score_scratch, cfg, settings, specs), keep_scratch)
                continue
            entry["beta"] = beta
            for seed in seeds:
                run_dir = out / f"{algo}{seed_suffix(seed, train_seeds)}"
                if train_seeds == 1:
                    entry["run_dir"] = str(run_dir)
                else:
                    entry.setdefault("run_dirs", {})[str(seed)] = str(run_dir)
                updates = entry.setdefault("meta_updates", {})  # milestone -> φ's meta-updates there
                what = algo if train_seeds == 1 else f"{algo} (seed {seed})"
                run = dataclasses.replace(cfg, algo=algo, seed=seed, meta_lr=beta)
                for m in milestones:

                    def keep(value: dict[str, Any], entry=entry, updates=updates, m=m, seed=seed, what=what):
                        updates[str(m)] = value["meta_updates"]
                        store(entry["accuracy"], str(m), seed, train_seeds, value["scored"])
                        if train_seeds == 1:
                            entry["loss"] = value["loss"]
                        else:
                            entry.setdefault("losses", {})[str(seed)] = value["loss"]
                        result["steps_to_reach"] = steps_to_reach(result)
                        mean = 100 * value["scored"]["mean_accuracy"]
                        log(f"{what} @ {m}: mean accuracy {mean:.2f} % ({updates[str(m)]} meta-updates)")
                        _timed(entry, value["seconds"])

                    label = f"{algo} @ {m} steps" + (f" (seed {seed})" if train_seeds > 1 else "")
                    work = functools.partial(train_and_score, run, run_dir, m, settings, specs)
                    yield Part(label, work, keep, chain=str(run_dir))

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
        jobs=common.jobs,
    )


def _timed(entry: dict[str, Any], seconds: float) -> None:
    """Add a part's seconds to the algorithm's (the sum over its parts, wherever they ran)."""
    entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 1)


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
        parallel=True,
    )
)
