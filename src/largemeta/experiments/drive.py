"""The one driver of every experiment (:func:`drive`: its parts in order into ``results.json``, the paired
comparisons kept up to date) and the plumbing of meta-training seeds: which seeds, which run folder, and how
the meta-test results of several meta-training runs are stored as one."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from largemeta.errors import UserError
from largemeta.experiments.pool import run_parts
from largemeta.experiments.spec import Part
from largemeta.experiments.verdicts import comparisons
from largemeta.stats import ci95

if TYPE_CHECKING:  # this module is read by the command line's start-up, which must not import torch
    from largemeta.train.config import TrainConfig


def drive(
    name: str,
    cfg: TrainConfig,
    out: Path,
    request: dict[str, Any],
    empty: dict[str, Any],
    parts: Callable[[dict[str, Any]], Iterator[Part | object]],
    *,
    log: Callable[[str], None],
    command: str,
    warnings: Sequence[str | None] = (),
    device: str = "cpu",
    protocol: dict[str, Any] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out/results.json``.

    ``request`` holds what decides the results beside the command and the config (it is recorded under
    ``"request"`` and, but for ``algos``, at the top level too); ``empty`` the result's containers;
    ``parts(result)`` yields the parts in order, lazily, so that a part may depend on the results of the
    parts before it. ``warnings`` (None: nothing to say) are logged as WARNING lines before the first part,
    into the folder's log.txt too. ``protocol`` (how φ is scored,
    :func:`largemeta.experiments.scoring.protocol_of`) and the
    ``environment`` of this process (:func:`largemeta.provenance.environment`) are recorded beside them; after
    every part the paired comparisons (:func:`comparisons`) are brought up to date. ``jobs`` > 1 runs up to
    that many parts at once in worker processes (:func:`largemeta.experiments.pool.run_parts`)."""
    from largemeta.console import log as console
    from largemeta.experiments.parts import request_config
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

        def finish(part: Part, value: Any) -> None:
            part.keep(value)
            record.result["comparisons"] = comparisons(record.result)
            record.finish(part.label)

        run_parts(parts(record.result), jobs, done=record.done, finish=finish, log=log)
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
