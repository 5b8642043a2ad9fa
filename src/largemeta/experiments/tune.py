"""Fair tuning: each algorithm at its own best meta learning rate β, chosen on the *meta-training* tasks.

Every (algorithm, β) trains at the same budget; its φ is scored on a validation split made of the
meta-training tasks' own held-out images (limited-data fine-tuning, ``validation.train_size`` images per
task); the best β per algorithm is then — and only then — evaluated on the meta-test targets. The meta-test
targets never influence the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats, positive_int
from largemeta.errors import UserError
from largemeta.experiments.drive import drive, seed_suffix, store, train_seeds_of
from largemeta.experiments.scoring import VALIDATION, EvalSettings, protocol_of
from largemeta.experiments.spec import WAIT, Common, Experiment, Part, Point, register
from largemeta.experiments.tables import cell, grid


def tune(
    cfg,
    common: Common,
    *,
    betas: Sequence[float] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    validation: EvalSettings = VALIDATION,
) -> dict[str, Any]:
    """Each of ``common.algos`` at each β of ``betas``, scored with ``validation`` on the meta-training tasks;
    the best β's φ scored with ``common.settings`` on the meta-test targets (and scratch beside them). With
    ``train_seeds`` > 1 every (algorithm, β) is meta-trained that many times (seeds ``cfg.seed``, …): the
    validation score is the mean over the runs, and every run at the best β is tested. Training and evaluation
    run on ``common.device`` (default: the config's); ``meta_updates[algo][β]`` records φ's meta-updates, and
    a budget without one is warned about up front."""
    from largemeta.data.tasks.suite import load_suite
    from largemeta.experiments.parts import (
        on_device,
        score_run,
        score_scratch,
        targets_of,
        without_meta_update,
    )
    from largemeta.train.budget import lower_hint
    from largemeta.train.build import select_tasks

    if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
        raise UserError(f"--betas must be finite numbers > 0, got {list(betas)}")
    algos, out, test, log, train_seeds = (
        common.algos,
        common.out,
        common.settings,
        common.log,
        common.train_seeds,
    )
    cfg = on_device(cfg, common.device)
    val_specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    test_specs = targets_of(cfg, test.targets)
    warnings = []
    for algo in dict.fromkeys(algos):
        trained = dataclasses.replace(cfg, algo=algo)
        fix = f"raise --steps to >= {{every}} or {lower_hint(trained)}"
        warnings.append(without_meta_update(trained, [cfg.steps], budget="--steps {steps}", fix=fix))
    seeds = train_seeds_of(cfg, train_seeds)
    several = train_seeds > 1

    def run_dir(algo: str, beta: str, seed: int) -> Path:
        return out / f"{algo}_beta{beta}{seed_suffix(seed, train_seeds)}"

    def parts(result: dict[str, Any]) -> Iterator[Part | object]:
        for algo in algos:
            scores = result["validation"].setdefault(algo, {})
            updates = result.setdefault("meta_updates", {}).setdefault(algo, {})  # β -> φ's meta-updates
            by_seed = result.setdefault("validation_runs", {}).setdefault(algo, {}) if several else {}
            for beta in betas:
                for seed in seeds:
                    label = f"{algo}, β = {beta:g}" + (f", seed {seed}" if several else "")
                    run = dataclasses.replace(cfg, algo=algo, meta_lr=beta, seed=seed)

                    def keep(
                        value: tuple[float, int],
                        beta: str = f"{beta:g}",
                        seed: int = seed,
                        scores: dict = scores,
                        by_seed: dict = by_seed,
                        updates: dict = updates,
                    ) -> None:
                        score, updates[beta] = value
                        if not several:
                            scores[beta] = score
                            return
                        runs = by_seed.setdefault(beta, {})
                        runs[str(seed)] = score
                        scores[beta] = sum(runs.values()) / len(runs)

                    work = functools.partial(
                        validate_run, run, run_dir(algo, f"{beta:g}", seed), val_specs, validation
                    )
                    yield Part(label, work, keep)
            yield WAIT  # the best β is chosen from every score
            best = max(scores, key=scores.get)
            result["best"][algo] = best
            log(f"{algo}: best β = {best} (validation {100 * scores[best]:.2f} %)")
            for seed in seeds:
                label = f"{algo} at its best β, on the meta-test targets" + (
                    f" (seed {seed})" if several else ""
                )

                def keep_test(value: dict[str, Any], algo=algo, seed=seed) -> None:
                    store(result["test"], algo, seed, train_seeds, value)

                work = functools.partial(score_run, run_dir(algo, best, seed), cfg, test, test_specs)
                yield Part(label, work, keep_test)

        def keep_scratch(value: dict[str, Any]) -> None:
            result["test"]["scratch"] = value["scored"]

        yield Part("scratch", functools.partial(score_scratch, cfg, test, test_specs), keep_scratch)

    request = {
        "algos": list(algos),
        "betas": list(betas),
        "validation_eval": dataclasses.asdict(validation),
        "eval": dataclasses.asdict(test),
        **({"train_seeds": train_seeds} if several else {}),
    }
    empty = {"validation": {}, "best": {}, "test": {}, "meta_updates": {}}
    validated = validation.protocol(val_specs)
    protocol = protocol_of(test, test_specs, cfg, seeds, betas=list(betas), validation=validated)
    return drive(
        "tune",
        cfg,
        out,
        request,
        empty,
        parts,
        log=log,
        command=common.command_of("tune"),
        device=cfg.device,
        warnings=warnings,
        protocol=protocol,
        jobs=common.jobs,
    )


def validate_run(cfg, folder: Path, val_specs: list, validation: EvalSettings) -> tuple[float, int]:
    """Train ``folder`` with ``cfg`` to ``cfg.steps`` and score its φ with ``validation`` on ``val_specs``
    (the meta-training tasks' held-out images): (mean validation accuracy, φ's meta-updates)."""
    from largemeta.experiments.parts import score_run, train_to

    updates = train_to(cfg, folder, cfg.steps)
    return score_run(folder, cfg, validation, val_specs)["mean_accuracy"], updates


def table(result: dict[str, Any]) -> str:
    betas = [f"{b:g}" for b in result["betas"]]
    rows = {}
    for algo, test in result["test"].items():
        val = result["validation"].get(algo, {})
        rows[algo] = [f"{100 * val[b]:.1f}" if b in val else "" for b in betas]
        rows[algo] += [str(result["best"].get(algo, "—")), cell(test)]
    return grid("algorithm", [*(f"val. β = {b}" for b in betas), "best β", "meta-test"], rows)


def points(result: dict[str, Any]) -> list[Point]:
    return [("each one's best β", dict(result["test"]))] if result["test"] else []


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--betas", type=comma_floats, default="0.003,0.01,0.03,0.1,0.3,1", help="meta learning rates to try"
    )
    p.add_argument(
        "--val-steps", type=positive_int, default=100, help="fine-tuning steps for validation (100)"
    )
    p.add_argument("--val-seeds", type=positive_int, default=2)
    p.add_argument(
        "--val-train-size",
        type=positive_int,
        default=200,
        help="training images per meta-training task when validating (200)",
    )


def own(args: argparse.Namespace) -> dict[str, Any]:
    validation = EvalSettings(args.val_steps, args.val_seeds, args.eval_batch_size, args.val_train_size)
    return {"betas": args.betas, "validation": validation}


register(
    Experiment(
        name="tune",
        title="Fair tuning: each algorithm at its best β",
        help="fair tuning: each algorithm at its best β, chosen on the meta-training tasks",
        algos="cts,reptile,leap",
        run=tune,
        add_arguments=add_arguments,
        own=own,
        table=table,
        points=points,
        parallel=True,
    )
)
