"""Benchmark: the meta-test protocol with every (target, seed) of one shape fine-tuned in one batched run
against the one-at-a-time loop, on targets shaped like the demo's.

    python benchmarks/metatest_batched.py [--targets 3] [--classes 35] [--seeds 3] [--steps 200]
        [--train-size 700] [--batch 64] [--width 16] [--threads 2] [--repeats 1]

The targets are synthetic .npz datasets written to a temporary folder, shaped like the offline suite's
QuickDraw targets (28 px grey, 80 training and 20 test images per class); φ is a random ConvNet of
``--width``. Both protocols run on the same φ, targets and seeds, alternately, ``--repeats`` times (after
one short warm-up of each, which pays for vmap's first trace). Prints one JSON object: the seconds of each
(``loop_s``, ``together_s``: medians), ``speedup`` (loop / together, the ratio of those medians, measured in
this one run) and ``max_abs_accuracy_diff`` between the two results (the batched run equals the loop to
float tolerance; a rounding difference may flip a test image's prediction).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from largemeta.data.tasks.suite import TaskSpec
from largemeta.metatest import Init, meta_test
from largemeta.models import create_model, split_state


def targets(folder: Path, n: int, classes: int, train: int, test: int) -> list[TaskSpec]:
    """``n`` synthetic targets of ``classes`` classes: a class-specific bright square plus noise."""
    rng = np.random.default_rng(0)
    specs = []
    for t in range(n):
        parts = {}
        for split, per_class in (("", train), ("_test", test)):
            y = np.repeat(np.arange(classes), per_class)
            x = rng.integers(0, 80, size=(len(y), 28, 28), dtype=np.uint8)
            for i, c in enumerate(y):
                r, col = divmod((c * 7 + t) % 36, 6)
                x[i, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] = 230
            parts["x" + split], parts["y" + split] = x, y
        path = folder / f"target{t}.npz"
        np.savez(path, **parts)
        specs.append(TaskSpec(f"target{t}", str(path), image_size=28, channels=1, crop_padding=4))
    return specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--classes", type=int, default=35)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--train-size", type=int, default=700)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    phi, _ = split_state(create_model("convnet", in_channels=1, width=args.width))
    init = Init("phi", "convnet", {"in_channels": 1, "width": args.width}, phi)
    with tempfile.TemporaryDirectory() as tmp:
        specs = targets(Path(tmp), args.targets, args.classes, 80, 20)
        kw = dict(seeds=args.seeds, batch_size=args.batch, train_size=args.train_size, data_dir=tmp)
        for together in (True, False):  # warm-up: vmap's first trace, the dataset cache
            meta_test(init, specs, steps=2, together=together, **kw)
        seconds: dict[bool, list[float]] = {True: [], False: []}
        results = {}
        for _ in range(args.repeats):
            for together in (False, True):
                started = time.perf_counter()
                results[together] = meta_test(init, specs, steps=args.steps, together=together, **kw)
                seconds[together].append(time.perf_counter() - started)
    diff = max(
        abs(a - b)
        for name in results[False]["tasks"]
        for a, b in zip(
            results[False]["tasks"][name]["per_seed"], results[True]["tasks"][name]["per_seed"], strict=True
        )
    )
    loop, together = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(
        json.dumps(
            {
                "setting": {k: v for k, v in vars(args).items()},
                "members": args.targets * args.seeds,
                "loop_s": round(loop, 2),
                "together_s": round(together, 2),
                "speedup": round(loop / together, 2),
                "max_abs_accuracy_diff": diff,
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
