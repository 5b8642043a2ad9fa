"""What an experiment kind is (:class:`Experiment`), the registry of kinds, and the one driver that runs an
experiment's parts into its ``results.json``.

A kind is one module of this package that adds an :class:`Experiment` to :data:`EXPERIMENTS`: its
command-line flags, how those become the experiment's request, its parts (trained and evaluated in order,
each skipped when a run of the same request finished it before), its table and its figures. The command line
(``largemeta experiment KIND``) and the report iterate the registry; adding a kind adds nothing elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from largemeta.errors import UserError
from largemeta.registry import Registry
from largemeta.stats import ci95

if TYPE_CHECKING:  # this module is read by the command line's start-up, which must not import torch
    from largemeta.data.tasks import TaskSpec
    from largemeta.metatest import Init
    from largemeta.train.config import TrainConfig

Part = tuple[str, Callable[[], None]]
"""A part of an experiment: its label (what ``results.json`` lists as done) and the work that does it."""


@dataclasses.dataclass(frozen=True)
class Common:
    """What every kind is asked on the command line: the algorithms, the folder, how φ is scored, where."""

    algos: list[str]
    out: Path
    settings: EvalSettings
    device: str | None
    """Where the experiment trains and fine-tunes (``--device``; None: the config's device)."""
    log: Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment kind."""

    name: str
    """The sub-command (``largemeta experiment NAME``) and the results' ``"experiment"``."""
    title: str
    """The report's section title."""
    help: str
    algos: str
    """The default ``--algos``."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """The kind's own flags."""
    from_args: Callable[[TrainConfig, argparse.Namespace, Common], dict[str, Any]]
    """Run the experiment the command line asks for; returns its results."""
    table: Callable[[dict[str, Any]], str]
    """A Markdown table of the results (a part not finished yet is an empty cell)."""
    plots: Callable[[dict[str, Any], Path], list[Path]] = lambda result, out: []
    """Its figures, written into ``out``."""


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How φ is scored: the meta-test protocol's steps, seeds, batch size and training-set size."""

    steps: int = 1000
    seeds: int = 3
    batch_size: int = 128
    train_size: int | None = None
    targets: tuple[str, ...] = ()  # names of the suite's meta-test tasks (default: all)

    def score(self, init: Init, specs: list[TaskSpec], cfg: TrainConfig, *, device: str) -> dict[str, Any]:
        """The meta-test protocol with these settings (:func:`largemeta.metatest.meta_test`); the images are
        found and placed as the run's config says (``data_dir``, ``data_placement``, ...)."""
        from largemeta.metatest import meta_test

        return meta_test(
            init,
            specs,
            steps=self.steps,
            seeds=self.seeds,
            batch_size=self.batch_size,
            train_size=self.train_size,
            device=device,
            data_dir=cfg.data_dir or None,
            data_placement=cfg.data_placement,
            memory_budget_gb=cfg.memory_budget_gb,
            stream_workers=cfg.stream_workers,
        )


PROTOCOL = EvalSettings()
"""The paper's meta-test protocol: 1000 fine-tuning steps, 3 seeds, batches of 128, every training image."""
VALIDATION = EvalSettings(steps=100, seeds=2, batch_size=64)
"""The shorter protocol that scores φ on the meta-training tasks when tuning."""


def drive(
    name: str,
    cfg: TrainConfig,
    out: Path,
    request: dict[str, Any],
    empty: dict[str, Any],
    parts: Callable[[dict[str, Any]], Iterator[Part]],
    *,
    log: Callable[[str], None],
    command: str,
    warnings: Sequence[str | None] = (),
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out/results.json``.

    ``request`` holds what decides the results beside the command and the config (it is recorded under
    ``"request"`` and, but for ``algos``, at the top level too); ``empty`` the result's containers;
    ``parts(result)`` yields the parts in order, lazily, so that a part may depend on the results of the
    parts before it. ``warnings`` (None: nothing to say) are logged as WARNING lines before the first part,
    into the folder's log.txt too."""
    from largemeta.console import log as console
    from largemeta.experiments.protocol import request_config
    from largemeta.experiments.record import Record

    skeleton: dict[str, Any] = {
        "experiment": name,
        "request": {"command": command, "config": request_config(cfg), **request},
        "config": cfg.to_dict(),
        **{k: v for k, v in request.items() if k != "algos"},
        **empty,
    }
    with Record(out, skeleton, log) as record:
        for warning in filter(None, warnings):
            console.warning(warning)
        for label, work in parts(record.result):
            if record.done(label):
                continue
            work()
            record.finish(label)
    return record.result


def table(result: dict[str, Any]) -> str:
    """The Markdown table of any experiment's results."""
    return EXPERIMENTS.get(result["experiment"]).table(result)


def overall(r: dict[str, Any]) -> tuple[float, float]:
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over
    targets)."""
    per_seed = [
        sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()), strict=True)
    ]
    return r["mean_accuracy"], ci95(per_seed)


def cell(r: dict[str, Any] | None) -> str:
    """``mean ± half-width`` in percent (``—``: not measured yet)."""
    if r is None:
        return "—"
    mean, width = overall(r)
    return f"{100 * mean:.1f} ± {100 * width:.1f}"


def grid(first: str, columns: list[str], rows: dict[str, list[str]]) -> str:
    """A Markdown table: a header of ``first`` and ``columns``, then one row per name."""
    lines = ["| " + " | ".join([first, *columns]) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def check_algos(algos: list[str], valid: tuple[str, ...]) -> None:
    for a in algos:
        if a not in valid:
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(valid)})")
