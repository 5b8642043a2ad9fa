"""Benchmark: minibatch draw + augment time relative to one inner SGD step; offline-suite fetch time.

    python benchmarks/data_sampling.py [--device cpu] [--batch 128] [--rounds 100] [--skip-fetch]

Prints one JSON object:
  * ``sample_ms_*``: ``TaskImages.sample_train(batch)`` at 28 px (MNIST, crop padding 4, flip on) — index
    draw, gather, crop, flip, normalize — on ``--device``;
  * ``step_ms_*``: one SGD step (forward + backward + update) of a 4-layer ConvNet (32 channels, 3x3 conv, BN,
    ReLU, 2x2 max-pool; linear head) on the same batch;
  * ``sample_over_step``: ratio of the medians (goal <= 0.10); the two are timed in alternation;
  * ``fetch_s``: seconds to fetch and convert each dataset of the ``offline`` suite into an empty temporary
    cache (registry clients keep their own caches, e.g. ~/.npm, so a second run downloads less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from largemeta.data.datasets import fetch_dataset, load_dataset
from largemeta.data.images import TaskImages
from largemeta.data.tasks import TaskSpec, load_suite


def convnet(in_ch: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [
            nn.Conv2d(in_ch if i == 0 else 32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32, classes))  # 28 px -> 14 -> 7 -> 3 -> 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict:
    """Per-call seconds of each ``fn``, timed in alternation so that a noisy machine (shared cores) slows
    all of them alike; medians are robust to the stalls such machines show."""
    for fn in fns.values():  # warm-up: allocator, kernels, autograd graph
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in times.items()}


def bench_sampling(device: torch.device, batch: int, rounds: int) -> dict[str, float]:
    spec = TaskSpec("mnist", "mnist", image_size=28, channels=1, crop_padding=4, flip=True)
    task = TaskImages.from_spec(spec, device=device, dataset=load_dataset("mnist"))
    model = convnet(1, task.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = task.sample_train(batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    t = interleaved_times({"sample": lambda: task.sample_train(batch), "step": step}, rounds, device)
    out = {}
    for name in ("sample", "step"):
        out[f"{name}_ms_median"] = round(float(np.median(t[name])) * 1e3, 3)
        out[f"{name}_ms_p10_p90"] = [round(float(np.percentile(t[name], q)) * 1e3, 3) for q in (10, 90)]
    out["sample_over_step"] = round(out["sample_ms_median"] / out["step_ms_median"], 4)
    # Per-round ratio too: both calls of a round met the same machine load.
    out["sample_over_step_p90"] = round(float(np.percentile(t["sample"] / t["step"], 90)), 4)
    return out


def bench_fetch() -> dict[str, float]:
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in load_suite("offline").datasets():
            t0 = time.perf_counter()
            fetch_dataset(name, tmp)
            times[name] = round(time.perf_counter() - t0, 2)
    times["total"] = round(sum(times.values()), 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=100, help="timed (sample, step) pairs")
    parser.add_argument("--skip-fetch", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    result: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "batch": args.batch,
    }
    result.update(bench_sampling(device, args.batch, args.rounds))
    if not args.skip_fetch:
        result["fetch_s"] = bench_fetch()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
