"""Final meta-test accuracy against the horizon K, per algorithm, at the same budget of inner steps."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_ints
from largemeta.experiments.drive import drive, seed_suffix, store, train_seeds_of
from largemeta.experiments.scoring import protocol_of
from largemeta.experiments.spec import Common, Experiment, Part, Point, register
from largemeta.experiments.tables import cell, grid


def k_ablation(cfg, common: Common, *, ks: Sequence[int] = (10, 100, 1000)) -> dict[str, Any]:
    """Train each of ``common.algos`` with each K of ``ks`` (``meta_every`` capped at K) for ``cfg.steps``,
    ``train_seeds`` times (seeds ``cfg.seed``, ``cfg.seed + 1``, …); score its φ. Training and evaluation run
    on ``common.device`` (default: the config's); ``meta_updates[algo][K]`` records φ's meta-updates, and a K
    whose first meta-update lies beyond the budget is warned about up front."""
    from largemeta.experiments.parts import on_device, targets_of, train_and_score, without_meta_update

    algos, out, settings, log, train_seeds = (
        common.algos,
        common.out,
        common.settings,
        common.log,
        common.train_seeds,
    )
    cfg = on_device(cfg, common.device)
    specs = targets_of(cfg, settings.targets)
    seeds = train_seeds_of(cfg, train_seeds)

    def run_config(algo: str, k: int):
        return dataclasses.replace(cfg, algo=algo, k=k, meta_every=min(cfg.meta_every, k))

    warnings = [
        without_meta_update(
            run_config(algo, k),
            [cfg.steps],
            budget="--steps {steps}",
            fix=f"raise --steps to >= {{every}} or drop K={k} from --ks",
        )
        for algo in dict.fromkeys(algos)
        for k in ks
    ]

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        for algo in algos:
            by_k = result["algorithms"].setdefault(algo, {})
            updates = result.setdefault("meta_updates", {}).setdefault(algo, {})  # K -> φ's meta-updates
            for k in ks:
                for seed in seeds:
                    label = f"{algo}, K = {k}" + (f", seed {seed}" if train_seeds > 1 else "")
                    run_dir = out / f"{algo}_k{k}{seed_suffix(seed, train_seeds)}"
                    trained = dataclasses.replace(run_config(algo, k), seed=seed)

                    def keep(value: dict[str, Any], by_k=by_k, updates=updates, k=k, seed=seed) -> None:
                        updates[str(k)] = value["meta_updates"]
                        store(by_k, str(k), seed, train_seeds, value["scored"])

                    work = functools.partial(train_and_score, trained, run_dir, cfg.steps, settings, specs)
                    yield Part(label, work, keep)

    request = {
        "algos": list(algos),
        "ks": list(ks),
        "eval": dataclasses.asdict(settings),
        **({"train_seeds": train_seeds} if train_seeds > 1 else {}),
    }
    protocol = protocol_of(settings, specs, cfg, seeds)
    return drive(
        "k-ablation",
        cfg,
        out,
        request,
        {"algorithms": {}, "meta_updates": {}},
        parts,
        log=log,
        command=common.command_of("k-ablation"),
        device=cfg.device,
        warnings=warnings,
        protocol=protocol,
        jobs=common.jobs,
    )


def table(result: dict[str, Any]) -> str:
    cols = [str(k) for k in result["ks"]]
    rows = {a: [cell(by_k.get(c)) for c in cols] for a, by_k in result["algorithms"].items()}
    return grid("algorithm", [f"K = {c}" for c in cols], rows)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from largemeta.experiments.figures import accuracy_plot

    ks = result["ks"]
    series = {a: (ks, [by_k.get(str(k)) for k in ks]) for a, by_k in result["algorithms"].items()}
    return [
        accuracy_plot(
            series, "K (inner steps per trajectory)", "Meta-test accuracy vs. K", out / "k_ablation.png"
        )
    ]


def points(result: dict[str, Any]) -> list[Point]:
    return [
        (f"K = {k}", {a: by_k.get(str(k)) for a, by_k in result["algorithms"].items()}) for k in result["ks"]
    ]


def caption(result: dict[str, Any], name: str) -> str:
    p = result.get("protocol") or {}
    steps = p.get("meta_training_steps") or (result.get("config") or {}).get("steps")
    return (
        f"Meta-test accuracy (averaged over the held-out targets) of each algorithm's φ after {steps} inner "
        "steps per meta-training task, against the horizon K (inner steps between restarts); bars: 95 % "
        "t-interval over fine-tuning seeds"
        + (f" × {len(p['train_seeds'])} meta-training runs." if len(p.get("train_seeds") or []) > 1 else ".")
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ks", type=comma_ints, default="10,100,1000", help="comma list of K")


register(
    Experiment(
        name="k-ablation",
        title="K ablation",
        help="meta-test accuracy vs K",
        algos="cts,reptile,leap",
        run=k_ablation,
        add_arguments=add_arguments,
        own=lambda args: {"ks": args.ks},
        table=table,
        plots=plots,
        points=points,
        caption=caption,
        parallel=True,
    )
)
