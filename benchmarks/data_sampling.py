"""Benchmark: minibatch draw + augment time relative to one inner SGD step; offline-suite fetch time.

    python benchmarks/data_sampling.py [--device cpu] [--batch 128] [--reps 200] [--step-reps 30]
        [--skip-fetch]

Prints one JSON object:
  * ``sample_ms``: ``TaskData.sample_train(batch)`` at 28 px (MNIST, crop padding 4, flip on) — index draw,
    gather, crop, flip, normalize — on ``--device``;
  * ``step_ms``: one SGD step (forward + backward + update) of a 4-layer ConvNet (32 channels, 3x3 conv, BN,
    ReLU, 2x2 max-pool; linear head) on the same batch;
  * ``sample_over_step``: their ratio (goal <= 0.10);
  * ``fetch_s``: seconds to fetch and convert each dataset of the ``offline`` suite into an empty temporary
    cache
    (registry clients keep their own caches, e.g. ~/.npm, so a second run downloads less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch
from torch import nn

from largemeta.data.datasets import fetch_dataset, load_dataset
from largemeta.data.sampler import TaskData
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


def time_per_call(fn, reps: int, device: torch.device) -> float:
    for _ in range(max(3, reps // 10)):  # warm-up
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps


def bench_sampling(device: torch.device, batch: int, reps: int, step_reps: int) -> dict[str, float]:
    spec = TaskSpec("mnist", "mnist", image_size=28, channels=1, crop_padding=4, flip=True)
    task = TaskData.from_spec(spec, device=device, dataset=load_dataset("mnist"))
    model = convnet(1, task.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = task.sample_train(batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    sample_s = time_per_call(lambda: task.sample_train(batch), reps, device)
    step_s = time_per_call(step, step_reps, device)
    return {"sample_ms": sample_s * 1e3, "step_ms": step_s * 1e3, "sample_over_step": sample_s / step_s}


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
    parser.add_argument("--reps", type=int, default=200, help="timed sampling calls")
    parser.add_argument("--step-reps", type=int, default=30, help="timed SGD steps")
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
    result.update(
        {k: round(v, 4) for k, v in bench_sampling(device, args.batch, args.reps, args.step_reps).items()}
    )
    if not args.skip_fetch:
        result["fetch_s"] = bench_fetch()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
