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
    overall,
)


def pretrained(
    cfg,
    init: str,
    sizes: Sequence[int],
    out: Path,
    *,
    settings: EvalSettings = PROTOCOL,
    device: str | None = None,
    log=lambda s: None,
    command: str = "experiment pretrained",
) -> dict[str, Any]:
    """``init`` is fine-tuned directly (the baseline) and used as the starting φ of meta-training with
    ``cfg.algo`` (CTS by default); both are evaluated on the meta-test targets sub-sampled to each size.
    Training and evaluation run on ``device`` (default: the config's); ``meta_updates[algo]`` records φ's
    meta-updates (a budget without one is warned about up front)."""
    from largemeta.experiments.protocol import on_device, targets_of, train_to, without_meta_update
    from largemeta.metatest import load_init
    from largemeta.train.budget import lower_hint

    cfg = on_device(cfg, device)
    specs = targets_of(cfg, settings.targets)
    run_dir = out / cfg.algo
    fix = f"raise --steps to >= {{every}} or {lower_hint(cfg)}"
    warning = without_meta_update(cfg, [cfg.steps], budget="--steps {steps}", fix=fix)

    def parts(result: dict[str, Any]) -> Iterator[Part]:
        def meta_train() -> None:
            log(f"meta-training {cfg.algo} from {init}")
            count = train_to(dataclasses.replace(cfg, init=init), run_dir, cfg.steps)
            result.setdefault("meta_updates", {})[cfg.algo] = count

        yield f"meta-training {cfg.algo}", meta_train
        for name, source in {"finetune": init, cfg.algo: str(run_dir)}.items():
            by_size = result["algorithms"].setdefault(name, {})
            start: list[Any] = []  # loaded once, by the first part that needs it
            for n in sizes:

                def score(name=name, source=source, by_size=by_size, start=start, n=n) -> None:
                    log(f"{name}, {n} training images per target")
                    start[:] = start or [load_init(source, model=cfg.model)]
                    sized = dataclasses.replace(settings, train_size=n)
                    by_size[str(n)] = sized.score(start[0], specs, cfg, device=cfg.device)

                yield f"{name}, {n} training images per target", score

    request = {"init": init, "sizes": list(sizes), "eval": dataclasses.asdict(settings)}
    empty = {"algorithms": {}, "meta_updates": {}}
    return drive("pretrained", cfg, out, request, empty, parts, log=log, command=command, warnings=[warning])


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
    from largemeta.experiments.plots import accuracy_plot

    sizes = result["sizes"]
    series = {n: (sizes, [by.get(str(k)) for k in sizes]) for n, by in result["algorithms"].items()}
    title = f"Meta-training on top of {result['init']} vs. plain fine-tuning"
    return [accuracy_plot(series, "training images per target", title, out / "pretrained.png")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", required=True, help="RUN_DIR, FILE.safetensors or torchvision:resnet18")
    p.add_argument("--sizes", type=comma_ints, default="500,1000,2000,5000", help="target training-set sizes")


def from_args(cfg, args: argparse.Namespace, common: Common) -> dict[str, Any]:
    if len(common.algos) != 1:
        raise UserError(f"experiment pretrained meta-trains one algorithm, got --algos {args.algos!r}")
    cfg = dataclasses.replace(cfg, algo=common.algos[0])
    return pretrained(
        cfg, args.init, args.sizes, common.out, settings=common.settings, device=common.device, log=common.log
    )


EXPERIMENTS.add(
    "pretrained",
    Experiment(
        name="pretrained",
        title="Meta-training on a pretrained start",
        help="CTS on top of a pretrained model vs plain fine-tuning of it",
        algos="cts",
        add_arguments=add_arguments,
        from_args=from_args,
        table=table,
        plots=plots,
    ),
)
