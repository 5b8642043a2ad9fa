"""Benchmark: a task pool of 23 tasks, 4 per trajectory, against all 23 in every meta-step.

    python benchmarks/pool_step.py [--config pool] [--k 10] [--trajectories 6] [--threads 1]

Builds the run of ``--config`` (the ``pool`` suite: MNIST, Fashion-MNIST, digits and 20 QuickDraw groups)
twice in this process, with ``tasks_per_trajectory`` = 4 and = 0 (every task, every step), and runs
``--trajectories`` trajectories of ``--k`` steps each, timing every meta-step (``take_step``). Prints one
JSON object:

* ``ms_per_meta_step``: the median step of each (a step that ends with a restart included in the mean below);
* ``ms_per_step_with_redraws``: total time / steps — with a pool, each restart's redraw loads the drawn tasks'
  images (device placement) and releases the others';
* ``redraw_ms``: with the pool, the median extra time of a restart step over the median step;
* ``draws``: which tasks each trajectory drew (slot order), and how many distinct tasks ran.

Same machine, same process, the two runs interleaved trajectory by trajectory so that a shared machine's noise
hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from largemeta.train.build import Processes, build_run
from largemeta.train.config import load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="pool")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--trajectories", type=int, default=6)
    parser.add_argument("--per-trajectory", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    place = Processes(torch.device("cpu"), 0, 1, None)
    common = {"device": "cpu", "k": args.k, "eval_batches": 0, "data_placement": "device"}
    per = {"pool": args.per_trajectory, "all": 0}
    runs = {
        name: build_run(load_config(args.config, {**common, "tasks_per_trajectory": m}), place)
        for name, m in per.items()
    }
    for run in runs.values():  # warm-up: one step (then steps count from 1 again for both)
        run.take_step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    restart: list[float] = []
    for _ in range(args.trajectories):
        for name, run in runs.items():
            for _ in range(args.k):
                t0 = time.perf_counter()
                run.take_step()
                dt = (time.perf_counter() - t0) * 1e3
                times[name].append(dt)
                if name == "pool" and run.learner.step % args.k == 0:
                    restart.append(dt)
    names = [s.name for s in runs["pool"].specs]
    draws = [[names[p] for p in drawn] for _, drawn in runs["pool"].assignment.take_draws()]
    median = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "config": args.config,
        "machine": f"{os.cpu_count()} cores (shared), {args.threads} torch thread(s)",
        "pool_size": len(names),
        "per_trajectory": args.per_trajectory,
        "k": args.k,
        "steps_timed": len(times["pool"]),
        "ms_per_meta_step": {k: round(v, 1) for k, v in median.items()},
        "ms_per_step_with_redraws": {k: round(sum(t) / len(t), 1) for k, t in times.items()},
        "pool_over_all": round(median["pool"] / median["all"], 3),
        "redraw_ms": round(statistics.median(restart) - median["pool"], 1),
        "draws": draws,
        "distinct_tasks_drawn": len({t for d in draws for t in d}),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
