"""The README's figure and Results table, from a demo's (or any convergence experiment's) results.json.

    python scripts/readme_figure.py runs/demo                       # writes docs/images/demo.png
    python scripts/readme_figure.py runs/demo --markdown            # and prints the README's Results block

Left: meta-test accuracy (%) of each algorithm's φ at each milestone, mean ± 95 % Student-t interval over
the fine-tuning seeds (each seed averaged over the targets); scratch (no meta-training) dashed. Right: the
paired differences of the first algorithm against each other at the last milestone, with their 95 %
intervals over (target, seed) pairs, as the demo prints them. Every number is read from results.json; the
title and caption say what each point is over and what the run was measured with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from largemeta.experiments import overall  # noqa: E402
from largemeta.experiments.glance import FOOTNOTE, UNINFORMATIVE  # noqa: E402
from largemeta.experiments.tables import table  # noqa: E402
from largemeta.experiments.verdicts import comparisons  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load(folder: Path) -> dict:
    path = folder / "results.json" if folder.is_dir() else folder
    result = json.loads(path.read_text())
    if result.get("experiment") != "convergence" or not result.get("complete"):
        sys.exit(f"{path}: not a finished demo or convergence experiment (run 'largemeta demo' to the end)")
    return result


def what(result: dict) -> tuple[str, str]:
    """What each interval is over, and what the run was measured with."""
    ev = result["eval"]
    first = next(iter(result["algorithms"].values()))["accuracy"]
    tasks = next(iter(first.values()))["tasks"]
    n = len(tasks)
    targets = f"{n} held-out target{'s' * (n != 1)}"
    over = f"{targets} × {ev['seeds']} fine-tuning seeds, {ev['steps']} fine-tuning steps"
    env = result.get("environment", {})
    machine = (
        f"largemeta {env.get('largemeta', '?')}, torch {env.get('torch', '?')}, {env.get('device', '?')}"
    )
    return over, machine


def figure(result: dict, out: Path) -> Path:
    over, machine = what(result)
    milestones = result["milestones"]
    fig, (acc, diff) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    for algo, entry in result["algorithms"].items():
        points = [(m, overall(entry["accuracy"][str(m)])) for m in milestones if str(m) in entry["accuracy"]]
        acc.errorbar(
            [m for m, _ in points],
            [100 * s[0] for _, s in points],
            yerr=[100 * s[1] for _, s in points],
            marker="o",
            capsize=3,
            label=algo,
            linestyle="--" if algo == "scratch" else "-",
        )
    acc.set_xticks(milestones)
    acc.set_xlabel("meta-training: inner steps per task")
    acc.set_ylabel("meta-test accuracy (%)")
    acc.set_title("accuracy of each φ (mean ± 95 % CI over seeds)", fontsize=10)
    acc.legend()
    last = f"{milestones[-1]} steps"
    found = [c for c in (result.get("comparisons") or comparisons(result)) if c["at"] == last]
    lead = found[0]["a"] if found else ""
    found = [c for c in found if c["a"] == lead]
    ys = range(len(found))
    diff.errorbar(
        [100 * c["mean_diff"] for c in found],
        list(ys),
        xerr=[
            [100 * (c["mean_diff"] - c["ci95"][0]) for c in found],
            [100 * (c["ci95"][1] - c["mean_diff"]) for c in found],
        ],
        fmt="o",
        capsize=3,
    )
    diff.axvline(0, color="grey", linewidth=0.8)
    diff.set_yticks(list(ys), [f"{c['a']} − {c['b']}" for c in found])
    diff.set_xlabel("paired difference (accuracy points)")
    diff.set_title(f"at {last} (95 % CI over (target, seed) pairs)", fontsize=10)
    fig.suptitle(f"Meta-test accuracy over {over}", fontsize=11)
    fig.text(0.5, 0.005, f"measured with {machine}", ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def markdown(result: dict) -> str:
    over, machine = what(result)
    text = table(result)
    note = f"\n{FOOTNOTE}\n" if UNINFORMATIVE in text else ""
    return f"Meta-test accuracy (%) over {over}; measured with {machine}:\n\n{text}\n{note}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a demo's results folder (runs/demo) or its results.json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "demo.png")
    ap.add_argument("--markdown", action="store_true", help="print the README's Results table and verdicts")
    args = ap.parse_args(argv)
    result = load(args.results)
    print(f"wrote {figure(result, args.out)}", file=sys.stderr)
    if args.markdown:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
