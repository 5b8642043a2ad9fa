"""The sweep that sized the demo, on validation data only: CTS meta-trained on the offline suite's
meta-training tasks at a few (width, K) settings, then its φ and a random initialization fine-tuned on each
meta-training task's training images and scored on that task's held-out test images, at several
fine-tuning lengths. The meta-test targets are never read.

    python scripts/demo_sweep.py --out runs/demo_sweep [--jobs 2] [--steps 1000]

Prints a Markdown table (validation accuracy of CTS and scratch, their difference, and the seconds each
setting took) and writes OUT/sweep.json. What it chose and why: docs/results.md, "How the demo was sized".
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

# (width, K, fine-tuning lengths): the width and the fine-tuning length at the demo's K, then K at the demo's
# width and length
GRID = (
    (16, 100, (100, 200, 400)),
    (32, 100, (100, 200, 400)),
    (16, 50, (200,)),
    (16, 200, (200,)),
)
TRAIN_SIZE = 2800
"""Training images per validation task: as many as a demo target holds (35 classes × 80)."""


def point(width: int, k: int, lengths: tuple[int, ...], steps: int, folder: str) -> dict:
    """Meta-train CTS at (width, K) for ``steps`` and score it and scratch on the meta-training tasks."""
    from largemeta.data.tasks.suite import load_suite
    from largemeta.experiments import EvalSettings
    from largemeta.experiments.parts import train_to
    from largemeta.metatest import load_init, scratch
    from largemeta.train.build import select_tasks
    from largemeta.train.config import load_config

    overrides = {"steps": steps, "width": width, "k": k, "batch_size": 16, "log_every": 100}
    cfg = load_config("offline", {**overrides, "checkpoint_every": steps, "device": "cpu"})
    specs = select_tasks(load_suite(cfg.suite).meta_train, cfg.tasks)
    run_dir = Path(folder) / f"cts_w{width}_k{k}"
    started = time.perf_counter()
    train_to(cfg, run_dir, steps)
    trained_s = time.perf_counter() - started
    inits = {
        "cts": load_init(str(run_dir), model=cfg.model),
        "scratch": scratch(cfg.model, specs[0].channels, width),
    }
    scores = {}
    for length in lengths:
        settings = EvalSettings(steps=length, seeds=1, batch_size=64, train_size=TRAIN_SIZE)
        scores[str(length)] = {}
        for name, init in inits.items():
            began = time.perf_counter()
            r = settings.score(init, specs, cfg, device="cpu")
            scores[str(length)][name] = {
                "mean_accuracy": r["mean_accuracy"],
                "tasks": {t: v["mean_accuracy"] for t, v in r["tasks"].items()},
                "seconds": time.perf_counter() - began,
            }
    return {"width": width, "k": k, "steps": steps, "train_seconds": trained_s, "scores": scores}


def main(argv: list[str] | None = None) -> int:
    from largemeta.experiments.pool import run_parts
    from largemeta.experiments.spec import Part

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the runs and sweep.json")
    p.add_argument("--jobs", type=int, default=2, help="settings run at once (2)")
    p.add_argument("--steps", type=int, default=1000, help="inner steps per task of each CTS run (1000)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found: list[dict] = []
    parts = (
        Part(f"width {w}, K {k}", functools.partial(point, w, k, lengths, args.steps, str(out)), found.append)
        for w, k, lengths in GRID
    )
    started = time.perf_counter()
    run_parts(parts, args.jobs, done=lambda label: False, finish=lambda part, v: part.keep(v), log=print)
    wall = time.perf_counter() - started
    record = {
        "what": "validation accuracy (fraction) on the offline suite's meta-training tasks' test images, "
        f"fine-tuned on {TRAIN_SIZE} of each task's training images, 1 seed, batch 64; mean over the 5 tasks",
        "points": found,
        "wall_seconds": wall,
        "jobs": args.jobs,
    }
    (out / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        "| width | K | fine-tuning steps | CTS | scratch | CTS − scratch (points) | seconds (train + score) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in found:
        for length, s in r["scores"].items():
            cts, base = 100 * s["cts"]["mean_accuracy"], 100 * s["scratch"]["mean_accuracy"]
            seconds = r["train_seconds"] + s["cts"]["seconds"] + s["scratch"]["seconds"]
            row = f"| {r['width']} | {r['k']} | {length} | {cts:.1f} | {base:.1f} | {cts - base:+.1f} |"
            print(f"{row} {seconds:.0f} |")
    print(f"wall clock: {wall:.0f} s with {args.jobs} jobs; {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
