"""The experiments' figures (matplotlib, Agg backend): pure functions of ``results.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from largemeta.experiments.tables import overall  # noqa: E402


def accuracy_plot(
    series: dict[str, tuple[list[int], list[dict[str, Any] | None]]],
    xlabel: str,
    title: str,
    path: Path,
    *,
    log_x: bool = True,
) -> Path:
    """Accuracy (%) with 95 % intervals over seeds against x (log-scaled unless ``log_x`` is False, when the
    intervals are drawn as bands), one line per series."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, (all_xs, all_results) in series.items():
        done = [(x, r) for x, r in zip(all_xs, all_results, strict=True) if r is not None]
        if not done:
            continue
        xs = [x for x, _ in done]
        stats = [overall(r) for _, r in done]
        means = [100 * s[0] for s in stats]
        widths = [100 * s[1] if s[1] is not None else 0.0 for s in stats]  # one seed: no bar
        style = "--" if name == "scratch" else "-"
        if log_x:
            ax.errorbar(xs, means, yerr=widths, marker="o", capsize=3, label=name, linestyle=style)
            continue
        (line,) = ax.plot(xs, means, marker="o", label=name, linestyle=style)
        lows = [m - w for m, w in zip(means, widths, strict=True)]
        highs = [m + w for m, w in zip(means, widths, strict=True)]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
    if log_x:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("meta-test accuracy (%)")
    ax.set_title(title)
    _legend(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reach_plot(records: list[dict[str, Any]], budget: int, path: Path) -> Path:
    """Steps-to-reach ratios (baseline's steps over the reference's) with their 95 % bootstrap intervals,
    per baseline, against the milestone whose reference accuracy is to be reached (linear axes). A ratio not
    reached within the budget is drawn as an open marker at budget / milestone with an arrow up (it is more);
    an interval end not reached runs to the top of the plot."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    baselines = list(dict.fromkeys(r["baseline"] for r in records))
    reference = records[0]["reference"] if records else "reference"
    top = max([budget / r["milestone"] for r in records] + [1.0]) * 1.1
    for k, name in enumerate(baselines):
        mine = [r for r in records if r["baseline"] == name]
        color = f"C{k + 1}"
        for r in mine:
            x = r["milestone"] * (1 + 0.02 * (k - (len(baselines) - 1) / 2))
            low, high = r["ci95"]
            if low is not None:
                ax.vlines(x, low, high if high is not None else top, color=color, alpha=0.6)
            if r["ratio"] is None:
                ax.scatter([x], [budget / r["milestone"]], marker="^", facecolors="none", edgecolors=color)
            else:
                ax.scatter([x], [r["ratio"]], color=color, marker="v" if r["at_most"] else "o")
        ax.plot([], [], color=color, marker="o", label=name)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(left=0)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"milestone whose {reference} accuracy is to be reached (cumulative inner steps)")
    ax.set_ylabel(f"steps needed / {reference}'s steps")
    ax.set_title(f"Steps to reach {reference}'s accuracy (95 % paired bootstrap interval)")
    _legend(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_plot(curves: dict[str, list[tuple[int, float]]], title: str, path: Path) -> Path:
    """Mean meta-training loss against cumulative inner steps (log-scaled), one line per algorithm."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for algo, pts in curves.items():
        if pts:
            ax.plot(*zip(*pts, strict=True), label=algo)
    ax.set_yscale("log")
    ax.set_xlabel("cumulative inner steps per task")
    ax.set_ylabel("meta-training loss (mean over tasks)")
    ax.set_title(title)
    _legend(ax)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _legend(ax) -> None:
    """The legend of what was drawn; an empty plot (an experiment stopped before its first result) says so
    instead of leaving the plotting library to warn about a legend with nothing in it."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finished point yet", transform=ax.transAxes, ha="center", va="center")
