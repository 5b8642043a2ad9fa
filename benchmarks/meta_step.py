"""Milliseconds per meta-step for each execution option against the plain loop, in the same run; JSON on
stdout.

A meta-step = one inner step of every task + (with CTS) one meta-update and shift. Sizes:

* ``--size paper``: the paper's 8 tasks at native sizes (64, 64, 32, 84, 84, 84, 28, 32 px;
  100/100/100/120/100/ 200/10/10 classes), ResNet-20, batch 128, SGD 0.01 / momentum 0.9 / wd 5e-4, CTS on
  Reptile with β = 0.01. Meant for a GPU (seconds per task step on a CPU).
* ``--size cpu``: ConvNet (width 32), 5 tasks at 28 px with 10 classes, batch 32, same optimizers.

Also reported: ``cts_overhead`` (the same inner steps with and without meta-updates; goal ≤ 1 %) and
``memory_vs_k`` (peak memory of a run of K + 1 steps, K ∈ {10, 100, 1000}, each in a fresh process; it should
not grow with K). Timing rules: warm-up first; synchronize the GPU around every timed block; options are timed
round-robin (so drift and neighbours' load hit all of them alike); median over repeats; ratios against the
loop measured in this run. Synthetic tensors: batches are drawn from a random pool already on the device.

Usage (from the repository root, with the package importable: ``pip install -e .`` or ``PYTHONPATH=src``)::

    PYTHONPATH=src python benchmarks/meta_step.py --size cpu
    PYTHONPATH=src python benchmarks/meta_step.py --size paper --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.execution import EXECUTORS, CudaGraphMetaStep
from largemeta.models import ImageTask, create_model, init_head, split_state
from largemeta.testing import RandomImageSampler

SIZES = {
    "paper": dict(
        model="resnet20",
        model_kw={},
        batch=128,
        tasks=[(64, 100), (64, 100), (32, 100), (84, 120), (84, 100), (84, 200), (28, 10), (32, 10)],
    ),
    "cpu": dict(model="convnet", model_kw={"width": 32}, batch=32, tasks=[(28, 10)] * 5),
}
EAGER_OPTIONS = ["loop", "channels_last", "autocast", "channels_last+autocast", "batched"]
GRAPH_OPTIONS = ["cuda_graph", "cuda_graph+channels_last+autocast"]
NO_META = Schedule(k=10**9, meta_every=10**9, shift=False)  # the same inner steps, never a meta-update


def build(size: str, device: str, schedule: Schedule, executor: str = "loop", seed: int = 0) -> MetaLearner:
    cfg = SIZES[size]
    torch.manual_seed(seed)
    body = create_model(cfg["model"], **cfg["model_kw"]).to(device)
    phi = split_state(body)[0]
    tasks, heads = [], []
    for i, (px, classes) in enumerate(cfg["tasks"]):
        sampler = RandomImageSampler(px, classes, pool=2 * cfg["batch"], seed=10 * i, device=device)
        task = ImageTask(body, sampler, classes=classes, batch_size=cfg["batch"], name=f"task{i}")
        tasks.append(task)
        heads.append(init_head(classes, body.num_features, torch.Generator().manual_seed(i)))
    heads = [{k: v.to(device) for k, v in h.items()} for h in heads]
    graph = executor.startswith("cuda_graph")
    inner_executor = executor.removeprefix("cuda_graph").removeprefix("+") or "loop" if graph else executor
    learner = MetaLearner(
        phi,
        tasks,
        SGD(0.01, momentum=0.9, weight_decay=5e-4),
        Reptile(),
        schedule,
        private=heads,
        meta_lr=0.01,
        executor=EXECUTORS.create(inner_executor),
    )
    # One eager warm-up step inside the graph wrapper, so the capture happens during the benchmark's warm-up
    # (main() insists on >= 2 warm-up steps) and is never timed.
    learner.bench_step = CudaGraphMetaStep(learner, warmup=1) if graph else learner.inner_step
    return learner


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_round_robin(
    steps: dict[str, Callable[[], object]], device: str, warmup: int, repeats: int, block: int
) -> dict[str, list[float]]:
    """ms per call of each function: ``repeats`` blocks of ``block`` calls, options interleaved block by
    block."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(block):
                fn()
            synchronize(device)
            times[name].append(1e3 * (time.perf_counter() - start) / block)
    return times


def summary(ms: list[float], reference: list[float] | None = None) -> dict[str, float]:
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    out = {"median_ms": round(statistics.median(ms), 3), "q1_ms": round(q[0], 3), "q3_ms": round(q[2], 3)}
    if reference is not None:
        out["ratio_vs_loop"] = round(statistics.median(ms) / statistics.median(reference), 3)
    return out


def meta_step_times(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    options = list(EAGER_OPTIONS) + (GRAPH_OPTIONS if args.device.startswith("cuda") else [])
    if args.options:
        options = ["loop"] + [o for o in args.options.split(",") if o != "loop"]
    learners = {o: build(args.size, args.device, Schedule.cts(k=1000), o) for o in options}
    times = time_round_robin(
        {o: lr.bench_step for o, lr in learners.items()}, args.device, args.warmup, args.repeats, args.block
    )
    return {o: summary(times[o], times["loop"]) for o in options}


def cts_overhead(args: argparse.Namespace) -> dict[str, float]:
    """Inner steps with a CTS meta-update + shift after each vs the same inner steps alone; and the
    meta-update timed on its own (a sharper estimate when the machine is noisy)."""
    cts = build(args.size, args.device, Schedule.cts(k=1000))
    plain = build(args.size, args.device, NO_META)

    def meta_update() -> None:
        cts.controller.meta_update(cts.params, cts.tasks)

    steps = {"cts": cts.inner_step, "no_meta": plain.inner_step, "meta_update": meta_update}
    times = time_round_robin(steps, args.device, args.warmup, args.repeats, args.block)
    step, base, update = (statistics.median(times[k]) for k in ("cts", "no_meta", "meta_update"))
    return {
        "cts_step_ms": round(step, 3),
        "no_meta_step_ms": round(base, 3),
        "overhead": round(step / base - 1, 4),
        "meta_update_ms": round(update, 3),
        "meta_update_fraction": round(update / base, 4),
    }


def live_tensor_bytes() -> int:
    """Bytes of all distinct tensor storages reachable from Python (CPU view of "what the run keeps")."""
    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def memory_probe(args: argparse.Namespace) -> dict[str, float]:
    """K + 1 CTS steps with horizon K (one full trajectory and a restart), in this (fresh) process."""
    k = args.memory_probe
    learner = build(args.size, args.device, Schedule.cts(k=k))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(k + 1):
        learner.inner_step()
    synchronize(args.device)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    out = {
        "k": k,
        "steps": k + 1,
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "live_tensor_mib": round(live_tensor_bytes() / 2**20, 2),
    }
    if args.device.startswith("cuda"):
        out["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def memory_vs_k(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for k in args.memory_ks:
        cmd = [
            sys.executable,
            __file__,
            "--size",
            args.size,
            "--device",
            args.device,
            "--memory-probe",
            str(k),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[str(k)] = json.loads(done.stdout)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--options", default="", help="comma-separated subset of execution options")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per option first")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per option (median reported)")
    parser.add_argument("--block", type=int, default=3, help="meta-steps per timed block")
    parser.add_argument(
        "--memory-ks", type=lambda s: [int(k) for k in s.split(",") if k], default=[10, 100, 1000]
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: meta_step, cts_overhead, memory"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine",
    )
    parser.add_argument("--memory-probe", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup < 2:
        parser.error("--warmup must be >= 2 (graph capture and autotuning happen during warm-up)")
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # autotuned during warm-up, for every option alike
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return
    skip = set(args.skip.split(","))
    report: dict[str, object] = {
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "size": args.size,
        "device": (
            torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "block": args.block,
    }
    if "meta_step" not in skip:
        report["meta_step"] = meta_step_times(args)
    if "cts_overhead" not in skip:
        report["cts_overhead"] = cts_overhead(args)
    if "memory" not in skip:
        report["memory_vs_k"] = memory_vs_k(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
