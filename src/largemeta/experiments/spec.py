"""What an experiment kind is (:class:`Experiment`), what every kind is asked (:class:`Common`), and the
registry of kinds (:data:`EXPERIMENTS`).

A kind is one module of this package that ends with ``register(Experiment(...))``, handing over its
functions themselves: how it runs (``run(cfg, common, **own)``), its own command-line flags and how they
become ``run``'s keywords, its table, figures, points of comparison and captions. A hook that is missing or
misspelled is an error when the module is imported, not a silent no-op. The command line
(``largemeta experiment KIND``, the demo) and the report iterate or look up the registry; adding a kind adds
nothing elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from largemeta.experiments.scoring import PROTOCOL, EvalSettings
from largemeta.registry import Registry

Point = tuple[str, dict[str, "dict[str, Any] | None"]]
"""A point of comparison: its label (``"3000 steps"``) and each algorithm's meta-test result there."""
UNTRAINED = ("scratch", "finetune")
"""The baselines that are not meta-trained: measured once, whatever the number of meta-training seeds."""


def _discard(value: Any) -> None:
    """What a part keeps of a value when its work put everything in place itself."""


@dataclasses.dataclass(frozen=True)
class Part:
    """A part of an experiment: its label (what ``results.json`` lists as done), its work, and what the
    driver keeps of the work's value.

    ``work()`` trains and fine-tunes and returns a value; ``keep(value)`` puts it into the results, always in
    the driver's process and in the order the parts were given, so a results file is the same whichever part
    finished first. With ``--jobs`` > 1 (:func:`largemeta.experiments.pool.run_parts`) ``work`` runs in a
    worker process: it must be picklable (a module-level function or a ``functools.partial`` of one) and
    write nothing but its own run folder. Parts of one ``chain`` (a run folder trained from milestone to
    milestone) run one after another; parts of different chains may run at once."""

    label: str
    work: Callable[[], Any]
    keep: Callable[[Any], None] = _discard
    chain: str | None = None
    """None: a chain of its own."""


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


WAIT = _Wait()
"""Yielded between parts: what follows needs every part before it kept (a choice made from their results)."""


def _quiet(text: str) -> None:
    """A log that says nothing (the default of a kind called from Python)."""


@dataclasses.dataclass(frozen=True)
class Common:
    """What every kind is asked: the algorithms, the results folder, how φ is scored, where, how often each
    algorithm is meta-trained, and the command recorded as the results' request."""

    algos: list[str]
    out: Path
    settings: EvalSettings = PROTOCOL
    device: str | None = None
    """Where the experiment trains and fine-tunes (``--device``; None: the config's device)."""
    log: Callable[[str], None] = _quiet
    train_seeds: int = 1
    """How many times each algorithm is meta-trained (seeds ``seed``, ``seed + 1``, …)."""
    command: str | None = None
    """The command recorded in ``results.json`` (None: ``experiment KIND``)."""
    jobs: int = 1
    """How many parts run at once, each in a worker process (kinds with ``parallel``; 1: in this process)."""

    def command_of(self, kind: str) -> str:
        return self.command or f"experiment {kind}"


def _no_arguments(p: argparse.ArgumentParser) -> None:
    """A kind without flags of its own."""


def _no_own(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def _no_plots(result: dict[str, Any], out: Path) -> list[Path]:
    return []


def _no_points(result: dict[str, Any]) -> list[Point]:
    return []


def _no_caption(result: dict[str, Any], name: str) -> str:
    return ""


_PLAIN = {"str": str, "bool": bool}
"""The fields of an :class:`Experiment` that are values, not hooks."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment kind: every hook is a function object, given by keyword."""

    name: str
    """The sub-command (``largemeta experiment NAME``) and the results' ``"experiment"``."""
    title: str
    """The report's section title."""
    help: str
    algos: str
    """The default ``--algos``."""
    run: Callable[..., dict[str, Any]]
    """``run(cfg, common, **own)``: run the experiment into ``common.out/results.json``; returns its
    results."""
    table: Callable[[dict[str, Any]], str]
    """A Markdown table of the results (a part not finished yet is an empty cell)."""
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    """The kind's own flags."""
    own: Callable[[argparse.Namespace], dict[str, Any]] = _no_own
    """The kind's own flags as ``run``'s keywords."""
    plots: Callable[[dict[str, Any], Path], list[Path]] = _no_plots
    """Its figures, written into ``out``."""
    points: Callable[[dict[str, Any]], list[Point]] = _no_points
    """Where the algorithms are compared: each milestone, K, size… with every algorithm's meta-test result
    there (None: not measured yet); the paired comparisons are made at each."""
    caption: Callable[[dict[str, Any], str], str] = _no_caption
    """The report's caption of the figure file ``name``."""
    parallel: bool = False
    """Whether its parts' work is picklable: ``--jobs N`` runs up to N of them at once."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = _PLAIN.get(str(field.type))
            if kind is not None and not isinstance(value, kind):
                raise TypeError(f"experiment {self.name!r}: {field.name} is not a {kind.__name__}: {value!r}")
            if kind is None and not callable(value):
                raise TypeError(f"experiment {self.name!r}: hook {field.name} is not callable: {value!r}")


EXPERIMENTS: Registry[Experiment] = Registry("experiment")
"""The experiment kinds by name (``largemeta experiment KIND``), each registered with :func:`register`."""


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (a second kind of the same name is an error)."""
    EXPERIMENTS.add(experiment.name, experiment)
    return experiment
