"""Benchmark: minibatch draw + augment time relative to one inner SGD step; offline-suite fetch time.

    python benchmarks/data_sampling.py [--device cpu] [--batch 128] [--rounds 100] [--skip-fetch]

Prints one JSON object:
  * ``sample_ms_*``: ``TaskImages.sample_train(batch)`` at 28 px (MNIST, crop padding 4, flip on) — index
    draw, gather, crop, flip, normalize — on ``--device`` (its ``TaskSampler`` draws on the device);
  * ``v01_ms_*``: the same batch made as version 0.1 made it, inline (no sampler object, no storage object):
    ``sample_over_v01`` is the cost of the sampler/storage split, same run;
  * ``cpu_draw_ms_*``: the alternative of drawing on the CPU (a CPU ``TaskSampler``, its draw copied to the
    device non-blocking from pinned memory when the device is CUDA), then the same gather and augmentation:
    ``cpu_draw_over_sample`` is what moving the draw off the device would cost, same run;
  * ``step_ms_*``: one SGD step (forward + backward + update) of a 4-layer ConvNet (32 channels, 3x3 conv, BN,
    ReLU, 2x2 max-pool; linear head) on the same batch;
  * ``sample_over_step``: ratio of the medians (goal <= 0.10); all are timed in alternation;
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

from largemeta.data.sources.datasets import fetch_dataset, load_dataset
from largemeta.data.tasks.augment import apply_augmentation, crop_at, flip_where, normalize
from largemeta.data.tasks.images import TaskImages
from largemeta.data.tasks.sampler import Draw, TaskSampler
from largemeta.data.tasks.suite import TaskSpec, load_suite


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
    """Per-call seconds of each ``fn``, timed in alternation (the first of each round rotating, so that none
    always follows the model step's cache traffic) so that a noisy machine (shared cores) slows all of them
    alike; medians are robust to the stalls such machines show."""
    for fn in fns.values():  # warm-up: allocator, kernels, autograd graph
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # who goes first rotates
            fn = fns[name]
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in times.items()}


def bench_sampling(device: torch.device, batch: int, rounds: int) -> dict[str, float]:
    spec = TaskSpec("mnist", "mnist", image_size=28, channels=1, crop_padding=4, flip=True)
    task = TaskImages.from_arrays(spec, load_dataset("mnist"), device=device)
    model = convnet(1, task.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = task.sample_train(batch)
    x_train, y_train, n, pad = task.rows.x_train, task.y_train, task.num_train, spec.crop_padding
    g = torch.Generator(device=device).manual_seed(0)
    cpu = TaskSampler(n, padding=pad, flip=True, seed=0, device="cpu")

    def v01() -> None:  # version 0.1's TaskImages.sample_train, inline
        idx = torch.randint(n, (batch,), device=device, generator=g)
        xb = x_train[idx]
        top, left = torch.randint(0, 2 * pad + 1, (2, batch), device=device, generator=g)
        xb = flip_where(crop_at(xb, pad, top, left), torch.rand(batch, device=device, generator=g) < 0.5)
        normalize(xb, 1), y_train[idx]

    def cpu_draw() -> None:
        d = cpu.draw(batch)
        if device.type == "cuda":
            pinned = [t.pin_memory() for t in (d.indices, d.offsets, d.mask)]
            d = Draw(*(t.to(device, non_blocking=True) for t in pinned))
        xb = x_train[d.indices]
        apply_augmentation(xb, padding=pad, offsets=d.offsets, mask=d.mask, channels=1), y_train[d.indices]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    fns = {"sample": lambda: task.sample_train(batch), "v01": v01, "cpu_draw": cpu_draw, "step": step}
    t = interleaved_times(fns, rounds, device)
    out = {}
    for name in fns:
        out[f"{name}_ms_median"] = round(float(np.median(t[name])) * 1e3, 3)
        out[f"{name}_ms_p10_p90"] = [round(float(np.percentile(t[name], q)) * 1e3, 3) for q in (10, 90)]
    out["sample_over_step"] = round(out["sample_ms_median"] / out["step_ms_median"], 4)
    # Per-round ratios too: the calls of a round met the same machine load.
    out["sample_over_step_p90"] = round(float(np.percentile(t["sample"] / t["step"], 90)), 4)
    out["sample_over_v01"] = round(out["sample_ms_median"] / out["v01_ms_median"], 3)
    out["sample_over_v01_per_round_median"] = round(float(np.median(t["sample"] / t["v01"])), 3)
    out["cpu_draw_over_sample"] = round(out["cpu_draw_ms_median"] / out["sample_ms_median"], 3)
    out["cpu_draw_over_sample_per_round_median"] = round(float(np.median(t["cpu_draw"] / t["sample"])), 3)
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
