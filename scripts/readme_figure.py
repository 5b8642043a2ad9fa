"""The README's figure and Results table, from a demo's (or any convergence experiment's) results.json.

    python scripts/readme_figure.py runs/demo                       # writes docs/images/demo.png
    python scripts/readme_figure.py runs/demo --markdown            # and prints the README's Results block

Left: meta-test accuracy (%) of each algorithm's φ against cumulative inner steps (linear axes), mean and a
band of the 95 % Student-t interval over the fine-tuning seeds × meta-training runs (each averaged over the
targets); scratch (no meta-training, measured once) dashed, without a band. Right: the paired differences of
the first algorithm against each other at the last milestone, with their 95 % intervals over the
(meta-training run, target, seed) units, as the demo prints them. ``--markdown`` prints the accuracy
table, those verdicts, the steps-to-reach table and the tuned βs. Every number is read from results.json;
the title and caption say what each point is over and what the run was measured with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from largemeta.experiments import (
    EXPERIMENTS,  # noqa: E402
    overall,  # noqa: E402
)
from largemeta.experiments.glance import FOOTNOTE, UNINFORMATIVE  # noqa: E402
from largemeta.experiments.verdicts import comparisons, verdict  # noqa: E402

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
    runs = len((result.get("protocol") or {}).get("train_seeds") or [0])
    targets = f"{n} held-out target{'s' * (n != 1)}"
    over = f"{targets} × {ev['seeds']} fine-tuning seeds" + (
        f" × {runs} meta-training runs" if runs > 1 else ""
    )
    over += f", {ev['steps']} fine-tuning steps"
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
        xs, mean = [m for m, _ in points], [100 * s[0] for _, s in points]
        half = [100 * s[1] for _, s in points]
        style = "--" if algo == "scratch" else "-"
        (line,) = acc.plot(xs, mean, marker="o", linestyle=style, label=algo)
        if algo == "scratch":  # measured once: a band over its fine-tuning seeds alone would not compare
            continue
        acc.fill_between(
            xs,
            [m - h for m, h in zip(mean, half, strict=True)],
            [m + h for m, h in zip(mean, half, strict=True)],
            alpha=0.15,
            color=line.get_color(),
        )
    acc.set_xticks(milestones)
    acc.set_xlim(0, milestones[-1] * 1.04)
    acc.set_xlabel("meta-training: cumulative inner steps per task")
    acc.set_ylabel("meta-test accuracy (%)")
    acc.set_title("accuracy of each φ (bands: 95 % CI; scratch: no band)", fontsize=10)
    acc.legend()
    last = f"{milestones[-1]} steps"
    found = [c for c in (result.get("comparisons") or comparisons(result)) if c["at"] == last]
    lead = found[0]["a"] if found else ""
    found = [c for c in found if c["a"] == lead and c["ci95"] is not None]  # an interval to draw
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
    diff.set_title(f"at {last} (95 % CI over the paired units)", fontsize=10)
    fig.suptitle(f"Meta-test accuracy over {over}", fontsize=11)
    fig.text(0.5, 0.005, f"measured with {machine}", ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _reach_rows(result: dict) -> list[str]:
    """The steps-to-reach records as table rows: baseline, CTS's level, steps needed, ratio, interval."""
    rows = []
    for r in result.get("steps_to_reach") or []:
        low, high = r["ci95"]
        shown = "not reached" if high is None else f"{high:.2f}×"
        interval = "not reached" if low is None else f"[{low:.2f}×, {shown}]"
        bound = "≤ " if r["at_most"] else ""
        if r["steps"] is None:
            steps, ratio = (
                f"not reached within {result['milestones'][-1]}",
                f"> {result['milestones'][-1] / r['milestone']:.2f}×",
            )
        else:
            steps, ratio = f"{bound}{r['steps']:.0f}", f"{bound}{r['ratio']:.2f}×"
        level = f"{100 * r['level']:.1f} % ({r['milestone']})"
        rows.append(
            f"| {r['baseline']} | {level} | {steps} | {ratio} | {interval} | {100 * r['reached']:.0f} % |"
        )
    return rows


def markdown(result: dict) -> str:
    over, machine = what(result)
    text = EXPERIMENTS.get("convergence").table(result)
    note = f"\n{FOOTNOTE}\n" if UNINFORMATIVE in text else ""
    last = result["milestones"][-1]
    found = [c for c in (result.get("comparisons") or comparisons(result)) if c["at"] == f"{last} steps"]
    lead = found[0]["a"] if found else ""
    pairs = found[0]["n"] if found else 0
    verdicts = "; ".join(verdict(c) for c in found if c["a"] == lead)
    out = [f"Meta-test accuracy (%) over {over}; measured with {machine}:", "", text, note]
    if verdicts:
        out += [f"At {last} steps, paired over the {pairs} units: {verdicts}.", ""]
    rows = _reach_rows(result)
    if rows:
        out += [
            f"Steps to reach {lead}'s accuracy (paired bootstrap over the same units; ratio > 1: {lead} gets "
            "there in fewer inner steps):",
            "",
            "| baseline | level (milestone) | steps needed | ratio | 95 % interval | resamples reaching it |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    for algo, tuned in (result.get("tuning") or {}).items():
        scores = ", ".join(f"β = {b}: {100 * v:.1f} %" for b, v in tuned["validation"].items())
        out.append(
            f"{algo}: β = {tuned['best']}, the best on the meta-training tasks' held-out images ({scores})."
        )
    return "\n".join(out).rstrip() + "\n"


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
