"""Fair tuning: each algorithm at its own best meta learning rate β, chosen on the *meta-training* tasks.

Every (algorithm, β) trains at the same budget; its φ is scored on a validation split made of the
meta-training tasks' own held-out images (limited-data fine-tuning, ``validation.train_size`` images per
task); the best β per algorithm is then — and only then — evaluated on the meta-test targets. The meta-test
targets never influence the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_floats, positive_int
from largemeta.errors import UserError
from largemeta.experiments.spec import (
    EXPERIMENTS,
    PROTOCOL,
    VALIDATION,
    Common,
    EvalSettings,
    Experiment,
    Part,
    cell,
    drive,
    grid,
)


def tune(
    cfg,
    algos: Sequence[str],
    betas: Sequence[float],
    out: Path,
    *,
    validation: EvalSettings = VALIDATION,
    test: EvalSettings = PROTOCOL,
    device: str | None = None,
    log=lambda s: None,
    command: str = "experiment tune",
) -> dict[str, Any]:
    """Each algorithm at each β of ``betas``, scored with ``validation`` on the meta-training tasks; the
    best β's φ scored with ``test`` on the meta-test targets (and scratch beside them). Training and
    evaluation run on ``device`` (default: the config's); ``meta_updates[algo][β]`` records φ's
    meta-updates, and a budget without one is warned about up front."""
    from largemeta.data.tasks import load_suite
    from largemeta.experiments.protocol import on_device, targets_of, train_to, without_meta_update
    from largemeta.metatest import load_init, scratch
    from largemeta.train.budget import lower_hint
    from largemeta.train.build import select_tasks

    if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
        raise UserError(f"--betas must be finite numbers > 0, got {list(betas)}")
    cfg = on_device(cfg, device)
    val_specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    test_specs = targets_of(cfg, test.targets)
    warnings = []
    for algo in dict.fromkeys(algos):
        trained = dataclasses.replace(cfg, algo=algo)
        fix = f"raise --steps to >= {{every}} or {lower_hint(trained)}"
        warnings.append(without_meta_update(trained, [cfg.steps], budget="--steps {steps}", fix=fix))

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        for algo in algos:
            scores = result["validation"].setdefault(algo, {})
            updates = result.setdefault("meta_updates", {}).setdefault(algo, {})  # β -> φ's meta-updates
            for beta in betas:

                def validate(
                    algo=algo, beta=beta, scores=scores, updates=updates, label=f"{algo}, β = {beta:g}"
                ) -> None:
                    log(label)
                    run_dir = out / f"{algo}_beta{beta:g}"
                    run = dataclasses.replace(cfg, algo=algo, meta_lr=beta)
                    updates[f"{beta:g}"] = train_to(run, run_dir, cfg.steps)
                    init = load_init(str(run_dir), model=cfg.model)
                    scores[f"{beta:g}"] = validation.score(init, val_specs, cfg, device=cfg.device)[
                        "mean_accuracy"
                    ]

                yield f"{algo}, β = {beta:g}", validate
            best = max(scores, key=scores.get)
            result["best"][algo] = best

            def test_best(algo=algo, best=best, scores=scores) -> None:
                log(f"{algo}: best β = {best} (validation {100 * scores[best]:.2f} %)")
                init = load_init(str(out / f"{algo}_beta{best}"), model=cfg.model)
                result["test"][algo] = test.score(init, test_specs, cfg, device=cfg.device)

            yield f"{algo} at its best β, on the meta-test targets", test_best

        def test_scratch() -> None:
            init = scratch(cfg.model, test_specs[0].channels, cfg.width)
            result["test"]["scratch"] = test.score(init, test_specs, cfg, device=cfg.device)

        yield "scratch", test_scratch

    request = {
        "algos": list(algos),
        "betas": list(betas),
        "validation_eval": dataclasses.asdict(validation),
        "eval": dataclasses.asdict(test),
    }
    empty = {"validation": {}, "best": {}, "test": {}, "meta_updates": {}}
    return drive("tune", cfg, out, request, empty, parts, log=log, command=command, warnings=warnings)


def table(result: dict[str, Any]) -> str:
    betas = [f"{b:g}" for b in result["betas"]]
    rows = {}
    for algo, test in result["test"].items():
        val = result["validation"].get(algo, {})
        rows[algo] = [f"{100 * val[b]:.1f}" if b in val else "" for b in betas]
        rows[algo] += [str(result["best"].get(algo, "—")), cell(test)]
    return grid("algorithm", [*(f"val. β = {b}" for b in betas), "best β", "meta-test"], rows)


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


def from_args(cfg, args: argparse.Namespace, common: Common) -> dict[str, Any]:
    validation = EvalSettings(args.val_steps, args.val_seeds, common.settings.batch_size, args.val_train_size)
    return tune(
        cfg,
        common.algos,
        args.betas,
        common.out,
        validation=validation,
        test=common.settings,
        device=common.device,
        log=common.log,
    )


EXPERIMENTS.add(
    "tune",
    Experiment(
        name="tune",
        title="Fair tuning: each algorithm at its best β",
        help="fair tuning: each algorithm at its best β, chosen on the meta-training tasks",
        algos="cts,reptile,leap",
        add_arguments=add_arguments,
        from_args=from_args,
        table=table,
    ),
)
