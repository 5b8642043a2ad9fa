"""Final meta-test accuracy against the horizon K, per algorithm, at the same budget of inner steps."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_ints
from largemeta.experiments.spec import (
    EXPERIMENTS,
    PROTOCOL,
    Common,
    EvalSettings,
    Experiment,
    Part,
    cell,
    drive,
    grid,
)


def k_ablation(
    cfg,
    algos: Sequence[str],
    ks: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = PROTOCOL,
    device: str | None = None,
    log=lambda s: None,
    command: str = "experiment k-ablation",
) -> dict[str, Any]:
    """Train each algorithm with each K (``meta_every`` capped at K) for ``cfg.steps``; score its φ. Training
    and evaluation run on ``device`` (default: the config's); ``meta_updates[algo][K]`` records φ's
    meta-updates, and a K whose first meta-update lies beyond the budget is warned about up front."""
    from largemeta.experiments.protocol import on_device, targets_of, train_to, without_meta_update
    from largemeta.metatest import load_init

    cfg = on_device(cfg, device)
    specs = targets_of(cfg, settings.targets)

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

                def train_and_score(
                    algo=algo, by_k=by_k, updates=updates, k=k, label=f"{algo}, K = {k}"
                ) -> None:
                    log(label)
                    run_dir = out / f"{algo}_k{k}"
                    updates[str(k)] = train_to(run_config(algo, k), run_dir, cfg.steps)
                    init = load_init(str(run_dir), model=cfg.model)
                    by_k[str(k)] = settings.score(init, specs, cfg, device=cfg.device)

                yield f"{algo}, K = {k}", train_and_score

    request = {"algos": list(algos), "ks": list(ks), "eval": dataclasses.asdict(settings)}
    empty = {"algorithms": {}, "meta_updates": {}}
    return drive("k-ablation", cfg, out, request, empty, parts, log=log, command=command, warnings=warnings)


def table(result: dict[str, Any]) -> str:
    cols = [str(k) for k in result["ks"]]
    rows = {a: [cell(by_k.get(c)) for c in cols] for a, by_k in result["algorithms"].items()}
    return grid("algorithm", [f"K = {c}" for c in cols], rows)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from largemeta.experiments.plots import accuracy_plot

    ks = result["ks"]
    series = {a: (ks, [by_k.get(str(k)) for k in ks]) for a, by_k in result["algorithms"].items()}
    return [
        accuracy_plot(
            series, "K (inner steps per trajectory)", "Meta-test accuracy vs. K", out / "k_ablation.png"
        )
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ks", type=comma_ints, default="10,100,1000", help="comma list of K")


def from_args(cfg, args: argparse.Namespace, common: Common) -> dict[str, Any]:
    return k_ablation(
        cfg, common.algos, args.ks, common.out, settings=common.settings, device=common.device, log=common.log
    )


EXPERIMENTS.add(
    "k-ablation",
    Experiment(
        name="k-ablation",
        title="K ablation",
        help="meta-test accuracy vs K",
        algos="cts,reptile,leap",
        add_arguments=add_arguments,
        from_args=from_args,
        table=table,
        plots=plots,
    ),
)
