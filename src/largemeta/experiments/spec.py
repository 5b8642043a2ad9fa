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
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from largemeta.errors import UserError
from largemeta.registry import Registry
from largemeta.stats import ci95, paired, plus_minus

if TYPE_CHECKING:  # this module is read by the command line's start-up, which must not import torch
    from largemeta.data.tasks import TaskSpec
    from largemeta.metatest import Init
    from largemeta.train.config import TrainConfig

Point = tuple[str, dict[str, "dict[str, Any] | None"]]
"""A point of comparison: its label (``"3000 steps"``) and each algorithm's meta-test result there."""
UNTRAINED = ("scratch", "finetune")
"""The baselines that are not meta-trained: measured once, whatever the number of meta-training seeds."""
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
    train_seeds: int = 1
    """How many times each algorithm is meta-trained (seeds ``seed``, ``seed + 1``, …)."""

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments every kind's function takes alike: ``device``, ``log``, ``train_seeds``."""
        return {"device": self.device, "log": self.log, "train_seeds": self.train_seeds}


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
    points: Callable[[dict[str, Any]], list[Point]] = lambda result: []
    """Where the algorithms are compared: each milestone, K, size… with every algorithm's meta-test result
    there (None: not measured yet); the paired comparisons are made at each."""
    caption: Callable[[dict[str, Any], str], str] = lambda result, name: ""
    """The report's caption of the figure file ``name``."""


EXPERIMENTS: Registry[Experiment] = Registry("experiment")

_HOOKS = ("add_arguments", "from_args", "table", "plots", "points", "caption")


def register(module: str, name: str, *, title: str, help: str, algos: str) -> None:
    """Register experiment kind ``name`` from the module that defines its hooks, by their names:
    ``add_arguments``, ``from_args`` and ``table``, and ``plots``, ``points`` and ``caption`` when it has them
    (:class:`Experiment` says what each does)."""
    hooks = {h: getattr(sys.modules[module], h) for h in _HOOKS if hasattr(sys.modules[module], h)}
    EXPERIMENTS.add(name, Experiment(name=name, title=title, help=help, algos=algos, **hooks))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How φ is scored: the meta-test protocol's steps, seeds, batch size and training-set size."""

    steps: int = 1000
    seeds: int = 3
    batch_size: int = 128
    train_size: int | None = None
    targets: tuple[str, ...] = ()  # names of the suite's meta-test tasks (default: all)

    def protocol(self, specs: list[TaskSpec]) -> dict[str, Any]:
        """How φ is scored on ``specs``, as a results file records it (``protocol``)."""
        from largemeta.metatest import FINE_TUNING

        return {
            "targets": [t.name for t in specs],
            "fine_tuning_steps": self.steps,
            "fine_tuning_seeds": self.seeds,
            "batch_size": self.batch_size,
            "train_size": self.train_size,
            "fine_tuning": FINE_TUNING,
        }

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
    device: str = "cpu",
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out/results.json``.

    ``request`` holds what decides the results beside the command and the config (it is recorded under
    ``"request"`` and, but for ``algos``, at the top level too); ``empty`` the result's containers;
    ``parts(result)`` yields the parts in order, lazily, so that a part may depend on the results of the
    parts before it. ``warnings`` (None: nothing to say) are logged as WARNING lines before the first part,
    into the folder's log.txt too. ``protocol`` (how φ is scored, :func:`protocol_of`) and the
    ``environment`` of this process (:func:`largemeta.provenance.environment`) are recorded beside them; after
    every part the paired comparisons (:func:`comparisons`) are brought up to date."""
    from largemeta.console import log as console
    from largemeta.experiments.protocol import request_config
    from largemeta.experiments.record import Record
    from largemeta.provenance import environment

    skeleton: dict[str, Any] = {
        "experiment": name,
        "request": {"command": command, "config": request_config(cfg), **request},
        "config": cfg.to_dict(),
        **{k: v for k, v in request.items() if k != "algos"},
        **empty,
    }
    with Record(out, skeleton, log, environment=environment(device), protocol=protocol) as record:
        for warning in filter(None, warnings):
            console.warning(warning)
        for label, work in parts(record.result):
            if record.done(label):
                continue
            work()
            record.result["comparisons"] = comparisons(record.result)
            record.finish(label)
    return record.result


def train_seeds_of(cfg: TrainConfig, n: int) -> list[int]:
    """The seeds of ``n`` meta-training runs of each algorithm: the config's seed, then the next ones."""
    if n < 1:
        raise UserError(f"--train-seeds must be >= 1, got {n}")
    return [cfg.seed + j for j in range(n)]


def seed_suffix(seed: int, n: int) -> str:
    """The run folder's suffix of the meta-training run with ``seed`` (none when each trains once)."""
    return "" if n == 1 else f"_seed{seed}"


def store(slot: dict[str, Any], key: str, seed: int, n: int, result: dict[str, Any]) -> None:
    """Put the meta-test ``result`` of the run meta-trained with ``seed`` (of ``n``) in ``slot[key]``: as it
    is when each algorithm trains once, else merged with the other runs' (:func:`merge_runs`)."""
    if n == 1:
        slot[key] = result
        return
    runs = dict(slot[key]["runs"]) if isinstance(slot.get(key), dict) and "runs" in slot[key] else {}
    runs[str(seed)] = result
    slot[key] = merge_runs(runs)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def merge_runs(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The meta-test results of several meta-training runs (by seed) as one result of the same shape: each
    target's ``per_seed`` runs over (meta-training seed, fine-tuning seed), seeds in order; ``runs`` keeps
    each run's own result and ``train_seeds`` says which are in."""
    order = sorted(runs, key=int)
    first = runs[order[0]]
    tasks = {}
    for name in first["tasks"]:
        per_seed = [v for seed in order for v in runs[seed]["tasks"][name]["per_seed"]]
        curves = [runs[seed]["tasks"][name]["curve"] for seed in order]
        tasks[name] = {
            "mean_accuracy": _mean(per_seed),
            "ci95": ci95(per_seed),
            "per_seed": per_seed,
            "curve": {k: _mean([c[k] for c in curves]) for k in curves[0]},
        }
    return {
        **{k: first.get(k) for k in ("init", "steps", "seeds", "train_size")},
        "train_seeds": [int(seed) for seed in order],
        "tasks": tasks,
        "mean_accuracy": _mean([t["mean_accuracy"] for t in tasks.values()]),
        "runs": runs,
    }


def protocol_of(
    settings: EvalSettings, targets: list[TaskSpec], cfg: TrainConfig, train_seeds: list[int], **more: Any
) -> dict[str, Any]:
    """The ``protocol`` record of a results file: how φ is meta-trained and scored."""
    scored = settings.protocol(targets)
    return {"meta_training_steps": cfg.steps, "train_seeds": train_seeds, **scored, **more}


def table(result: dict[str, Any]) -> str:
    """The Markdown table of any experiment's results, with the paired verdicts below it."""
    text = EXPERIMENTS.get(result["experiment"]).table(result)
    footer = verdicts(result)
    return text + ("\n\n" + "\n".join(footer) if footer else "")


def _samples(r: dict[str, Any]) -> dict[tuple[str | None, str, int], float]:
    """A meta-test result's accuracies by (meta-training seed or None, target, fine-tuning seed)."""
    runs = r.get("runs") or {None: r}
    return {
        (seed, target, s): value
        for seed, run in runs.items()
        for target, task in run["tasks"].items()
        for s, value in enumerate(task["per_seed"])
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def compare(a: str, ra: dict[str, Any], b: str, rb: dict[str, Any], at: str) -> dict[str, Any]:
    """The paired comparison of ``a`` and ``b`` at ``at``: differences of accuracy (fractions) over the
    (meta-training seed, target, fine-tuning seed) units both were measured on. Each meta-test fine-tunes
    every initialization on the same targets with the same seeds (the same images, subsets, batches and
    heads), so the accuracies pair up; a baseline that is not meta-trained pairs with every run."""
    if any(ra.get(k) != rb.get(k) for k in ("steps", "train_size")):
        raise ValueError(f"{a} and {b} at {at} were scored with different protocols: not paired")
    sa, sb = _samples(ra), _samples(rb)

    def lookup(samples: dict, unit: tuple) -> float | None:
        return samples[unit] if unit in samples else samples.get((None, *unit[1:]))

    candidates = list(dict.fromkeys([*sa, *sb]))
    if any(u[0] is not None for u in candidates):
        candidates = [u for u in candidates if u[0] is not None]
    units = [u for u in candidates if lookup(sa, u) is not None and lookup(sb, u) is not None]
    xs, ys = [lookup(sa, u) for u in units], [lookup(sb, u) for u in units]
    record = {"a": a, "b": b, "at": at, **paired(xs, ys), "unit": "fraction"}
    train = len({k[0] for k in units if k[0] is not None})
    targets, seeds = len({k[1] for k in units}), len({k[2] for k in units})
    over = f"{_plural(targets, 'target')} × {_plural(seeds, 'fine-tuning seed')}"
    if train > 1:
        over += f" × {_plural(train, 'meta-training run')}"
    elif not (a in UNTRAINED and b in UNTRAINED):
        over += " of 1 meta-training run"
    return {**record, "over": over}


def comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every two algorithms compared at every point of the experiment (:attr:`Experiment.points`) where
    both were measured: ``a``, ``b``, ``at``, ``mean_diff`` (a − b, a fraction of test images like the
    accuracies), ``ci95`` ([low, high]: the 95 % paired t-interval; None under two pairs), ``n`` (pairs),
    ``unit`` and ``over`` (what the pairs run over)."""
    spec = EXPERIMENTS.get(result["experiment"])
    out = []
    for at, by_name in spec.points(result):
        names = [n for n, r in by_name.items() if r is not None]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                try:
                    out.append(compare(a, by_name[a], b, by_name[b], at))
                except ValueError:
                    continue
    return out


def verdict(c: dict[str, Any]) -> str:
    """One sentence the comparison supports, and no more."""
    text = f"{c['a']} − {c['b']} at {c['at']}: "
    if c["mean_diff"] is None:
        return text + "no pairs"
    if not _finite(c["mean_diff"]):  # a results file holding NaN (an accuracy never measured): no verdict
        return text + "the difference is not a number (an accuracy was not finite): no verdict"
    text += f"{100 * c['mean_diff']:+.1f} points"
    if c["ci95"] is None:
        return text + f", {_plural(c['n'], 'pair')}: too few pairs for an interval"
    if not all(_finite(v) for v in c["ci95"]):
        return text + f", {_plural(c['n'], 'pair')}: the interval is not a number: no verdict"
    low, high = (100 * v for v in c["ci95"])
    text += f", 95 % CI [{_bound(low)}, {_bound(high)}], {_plural(c['n'], 'pair')}"
    if low <= 0 <= high:
        return text + ": no significant difference"
    return text + f": {c['a'] if low > 0 else c['b']} higher"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bound(points: float) -> str:
    """An interval's end in points: one decimal, or two where one would read as 0 while it is not."""
    return f"{points:.1f}" if round(points, 1) != 0 or points == 0 else f"{points:.2f}"


def verdicts(result: dict[str, Any]) -> list[str]:
    """The verdicts of the results' paired comparisons (those stored, else worked out from the results),
    under a line that says what each interval is over."""
    found = result.get("comparisons")
    if found is None:
        found = comparisons(result)
    if not found:
        return []
    lines: list[str] = []
    for over in dict.fromkeys(c.get("over", "") for c in found):
        lines += [""] if lines else []
        lines.append(
            f"Paired differences a − b in accuracy points (95 % t-interval over {over}; the same targets "
            "and fine-tuning seeds for every algorithm):"
        )
        lines.append("")
        lines += [f"- {verdict(c)}" for c in found if c.get("over", "") == over]
    return lines


def overall(r: dict[str, Any]) -> tuple[float, float | None]:
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over
    targets; None for one seed)."""
    per_seed = [
        sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()), strict=True)
    ]
    return r["mean_accuracy"], ci95(per_seed)


def cell(r: dict[str, Any] | None) -> str:
    """``mean ± half-width`` in percent (``—``: not measured yet)."""
    if r is None:
        return "—"
    return plus_minus(*overall(r))


def grid(first: str, columns: list[str], rows: dict[str, list[str]]) -> str:
    """A Markdown table: a header of ``first`` and ``columns``, then one row per name."""
    lines = ["| " + " | ".join([first, *columns]) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def check_algos(algos: list[str], valid: tuple[str, ...]) -> None:
    for a in algos:
        if a not in valid:
            raise UserError(f"unknown algorithm {a!r} (valid: {', '.join(valid)})")
