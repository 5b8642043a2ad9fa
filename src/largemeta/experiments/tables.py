"""The Markdown of experiment results: a results file's table with its verdicts (:func:`table`), a result's
``mean ± half-width`` cell and the grid every kind's table is drawn in."""

from __future__ import annotations

from typing import Any

from largemeta.experiments.spec import EXPERIMENTS
from largemeta.experiments.verdicts import verdicts
from largemeta.stats import ci95, plus_minus


def table(result: dict[str, Any]) -> str:
    """The Markdown table of any experiment's results, with the paired verdicts below it."""
    text = EXPERIMENTS.get(result["experiment"]).table(result)
    footer = verdicts(result)
    return text + ("\n\n" + "\n".join(footer) if footer else "")


def overall(r: dict[str, Any]) -> tuple[float, float | None]:
    """Target-averaged accuracy and its 95 % interval over seeds (each seed's accuracy averaged over
    targets; None for one seed)."""
    per_seed = [
        sum(vals) / len(vals) for vals in zip(*(t["per_seed"] for t in r["tasks"].values()), strict=True)
    ]
    return r["mean_accuracy"], ci95(per_seed)


def cell(r: dict[str, Any] | None) -> str:
    """``mean ± half-width`` in percent (``—``: not measured yet), marked † when the interval is over two
    values (:mod:`largemeta.experiments.glance`)."""
    from largemeta.experiments.glance import flag

    if r is None:
        return "—"
    mean, width = overall(r)
    if width is None:
        return plus_minus(mean, None)
    n = len(next(iter(r["tasks"].values()))["per_seed"]) if r["tasks"] else 0
    return f"{100 * mean:.1f} ± {100 * width:.1f}{flag(n)}"


def grid(first: str, columns: list[str], rows: dict[str, list[str]]) -> str:
    """A Markdown table: a header of ``first`` and ``columns``, then one row per name."""
    lines = ["| " + " | ".join([first, *columns]) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)
