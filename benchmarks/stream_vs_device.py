"""Benchmark: ms per meta-step with streamed task images against device-resident ones, same run.

    python benchmarks/stream_vs_device.py [--config offline] [--steps 40] [--workers 1,2]

Builds the run of ``--config`` (its 5 tasks at 28 px) once per placement in this process — ``device`` and
``stream`` with each ``--workers`` count — and times ``take_step`` (every task's inner step and the CTS
meta-update) in alternating blocks of 10 steps (the first of each round rotating), after 10 warm-up steps
each, so that a shared machine's noise hits all of them alike. Prints one JSON object: the median ms per
meta-step of each, the ratio of each streamed variant to device, the cores, and the batches' identity (on a
CPU both placements draw the same batches, so their φ after the same steps must be equal).

What the ratio means: on a GPU the decoding workers use CPU cores the training does not; on a 2-core CPU they
compete with the training process itself for the same two cores, so the ratio here is an upper bound of the
cost of streaming, not its cost beside a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from largemeta.train.build import Processes, build_run
from largemeta.train.config import load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="offline")
    parser.add_argument("--steps", type=int, default=40, help="timed meta-steps per variant")
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--workers", default="1,2", help="stream_workers values to time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of training (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    place = Processes(device, 0, 1, None)
    variants = {"device": {"data_placement": "device"}}
    for w in (int(x) for x in args.workers.split(",")):
        variants[f"stream_{w}_workers"] = {"data_placement": "stream", "stream_workers": w}
    runs = {
        name: build_run(load_config(args.config, {"device": args.device, "eval_batches": 0, **over}), place)
        for name, over in variants.items()
    }
    for run in runs.values():  # warm-up: workers started, allocator and kernels warm
        for _ in range(args.block):
            run.take_step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for round_ in range(max(1, args.steps // args.block)):
        for name in order[round_ % len(order) :] + order[: round_ % len(order)]:  # rotate who goes first
            run = runs[name]
            t0 = time.perf_counter()
            for _ in range(args.block):
                run.take_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - t0) / args.block * 1e3)
    ms = {name: statistics.median(t) for name, t in times.items()}
    phi = {name: run.learner.phi for name, run in runs.items()}
    report = {
        "config": args.config,
        "device": str(device),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "torch_threads": torch.get_num_threads(),
        "tasks": len(runs["device"].tasks),
        "meta_steps_timed": len(times["device"]) * args.block,
        "ms_per_meta_step": {k: round(v, 2) for k, v in ms.items()},
        "stream_over_device": {k: round(v / ms["device"], 3) for k, v in ms.items() if k != "device"},
        "same_phi_as_device": {
            k: all(torch.equal(phi["device"][n], p[n]) for n in p) for k, p in phi.items() if k != "device"
        },
    }
    for run in runs.values():
        run.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
