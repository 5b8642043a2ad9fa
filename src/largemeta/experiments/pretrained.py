"""Meta-training on top of a pretrained model against plain fine-tuning of that model, per target
training-set size."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from largemeta.argtypes import comma_ints
from largemeta.errors import UserError
from largemeta.experiments.drive import drive, seed_suffix, store, train_seeds_of
from largemeta.experiments.scoring import protocol_of
from largemeta.experiments.spec import Common, Experiment, Part, Point, register
from largemeta.experiments.tables import cell, grid, overall


def pretrained(
    cfg, common: Common, *, init: str, sizes: Sequence[int] = (500, 1000, 2000, 5000)
) -> dict[str, Any]:
    """``init`` is fine-tuned directly (the baseline) and used as the starting φ of meta-training with the one
    algorithm of ``common.algos`` (``common.train_seeds`` runs, seeds ``cfg.seed``, ``cfg.seed + 1``, …); both
    are evaluated on the meta-test targets sub-sampled to each size. Training and evaluation run on
    ``common.device`` (default: the config's); ``meta_updates[algo]`` records φ's meta-updates (a budget
    without one is warned about up front)."""
    from largemeta.experiments.parts import on_device, targets_of, train_to, without_meta_update
    from largemeta.metatest import load_init
    from largemeta.train.budget import lower_hint

    if len(common.algos) != 1:
        algos = ",".join(common.algos)
        raise UserError(f"experiment pretrained meta-trains one algorithm, got --algos {algos!r}")
    out, settings, log, train_seeds = common.out, common.settings, common.log, common.train_seeds
    cfg = on_device(dataclasses.replace(cfg, algo=common.algos[0]), common.device)
    specs = targets_of(cfg, settings.targets)
    seeds = train_seeds_of(cfg, train_seeds)
    run_dirs = {seed: out / f"{cfg.algo}{seed_suffix(seed, train_seeds)}" for seed in seeds}
    fix = f"raise --steps to >= {{every}} or {lower_hint(cfg)}"
    warning = without_meta_update(cfg, [cfg.steps], budget="--steps {steps}", fix=fix)

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        for seed, run_dir in run_dirs.items():
            label = f"meta-training {cfg.algo}" + (f" (seed {seed})" if train_seeds > 1 else "")

            def meta_train(seed=seed, run_dir=run_dir, label=label) -> None:
                log(f"{label} from {init}")
                count = train_to(dataclasses.replace(cfg, init=init, seed=seed), run_dir, cfg.steps)
                result.setdefault("meta_updates", {})[cfg.algo] = count

            yield Part(label, meta_train)
        sources = {("finetune", None): init, **{(cfg.algo, s): str(d) for s, d in run_dirs.items()}}
        for (name, seed), source in sources.items():
            by_size = result["algorithms"].setdefault(name, {})
            start: list[Any] = []  # loaded once, by the first part that needs it
            for n in sizes:
                label = f"{name}, {n} training images per target"
                label += f" (seed {seed})" if seed is not None and train_seeds > 1 else ""

                def score(
                    name=name, seed=seed, source=source, by_size=by_size, start=start, n=n, label=label
                ):
                    start[:] = start or [load_init(source, model=cfg.model)]
                    sized = dataclasses.replace(settings, train_size=n)
                    scored = sized.score(start[0], specs, cfg, device=cfg.device)
                    if seed is None:
                        by_size[str(n)] = scored
                    else:
                        store(by_size, str(n), seed, train_seeds, scored)

                yield Part(label, score)

    request = {
        "init": init,
        "sizes": list(sizes),
        "eval": dataclasses.asdict(settings),
        **({"train_seeds": train_seeds} if train_seeds > 1 else {}),
    }
    protocol = protocol_of(settings, specs, cfg, seeds, train_size=list(sizes))
    return drive(
        "pretrained",
        cfg,
        out,
        request,
        {"algorithms": {}, "meta_updates": {}},
        parts,
        log=log,
        command=common.command_of("pretrained"),
        device=cfg.device,
        warnings=[warning],
        protocol=protocol,
    )


def table(result: dict[str, Any]) -> str:
    sizes = [str(n) for n in result["sizes"]]
    rows = {name: [cell(by_size.get(n)) for n in sizes] for name, by_size in result["algorithms"].items()}
    names = list(result["algorithms"])
    if len(names) == 2:
        first, second = (result["algorithms"][n] for n in names)
        rows[f"gain of {names[1]}"] = [
            f"{100 * (overall(second[n])[0] - overall(first[n])[0]):+.1f}"
            if n in first and n in second
            else "—"
            for n in sizes
        ]
    return grid("start", [f"{n} images" for n in sizes], rows)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from largemeta.experiments.figures import accuracy_plot

    sizes = result["sizes"]
    series = {n: (sizes, [by.get(str(k)) for k in sizes]) for n, by in result["algorithms"].items()}
    title = f"Meta-training on top of {result['init']} vs. plain fine-tuning"
    return [accuracy_plot(series, "training images per target", title, out / "pretrained.png")]


def points(result: dict[str, Any]) -> list[Point]:
    """Each size, the meta-trained φ first: its comparison reads as the gain over plain fine-tuning."""
    names = sorted(result["algorithms"], key=lambda name: name == "finetune")
    return [
        (f"{n} images", {name: result["algorithms"][name].get(str(n)) for name in names})
        for n in result["sizes"]
    ]


def caption(result: dict[str, Any], name: str) -> str:
    p = result.get("protocol") or {}
    runs = len(p.get("train_seeds") or [0])
    return (
        f"Meta-test accuracy (averaged over the held-out targets) of {result.get('init')} fine-tuned "
        "directly (finetune) and after meta-training on top of it, against the number of training images per "
        "target; bars: 95 % t-interval over fine-tuning seeds"
        + (f" × {runs} meta-training runs." if runs > 1 else ".")
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", required=True, help="RUN_DIR, FILE.safetensors or torchvision:resnet18")
    p.add_argument("--sizes", type=comma_ints, default="500,1000,2000,5000", help="target training-set sizes")


register(
    Experiment(
        name="pretrained",
        title="Meta-training on a pretrained start",
        help="CTS on top of a pretrained model vs plain fine-tuning of it",
        algos="cts",
        run=pretrained,
        add_arguments=add_arguments,
        own=lambda args: {"init": args.init, "sizes": args.sizes},
        table=table,
        plots=plots,
        points=points,
        caption=caption,
    )
)
