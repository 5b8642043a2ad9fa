"""torchrun on this machine (gloo, CPU): meta-step time and bytes communicated per meta-step against the
number of ranks, rank 0's memory at a checkpoint against the number of tasks on other ranks, and checkpoint
write / load time against the world size. JSON on stdout.

Every figure comes from the real trainer (``largemeta.train.trainer.Trainer``: data sampling, task groups,
synchronised BatchNorm, the meta-update's all-reduce, the sharded checkpoint) on a synthetic suite of 28 px,
10-class tasks written to a temporary folder; each world size is one ``torchrun --standalone`` launch.

* ``meta_step``: T = 2 tasks (CTS, a meta-update every step) on W = 1, 2, 4 ranks — W = 1: both tasks in one
  process; W = 2: one task per rank; W = 4: each task served by 2 ranks (its batch split). The same total
  work at every W (strong scaling). ``ms`` is the median over timed steps of the slowest rank's step time;
  ``bytes_per_meta_step`` counts, per rank, the payload of every all-reduce by purpose — ``meta_gradient``
  (world, |φ| + 1 floats), ``task_gradients`` (the task group: loss + all of θ), ``batchnorm`` (the task
  group: 2·C floats per BatchNorm layer, forward and backward) — ``ring_wire_bytes`` what a ring all-reduce
  moves per rank for them, 2(n − 1)/n × payload, and ``ms_in_all_reduce`` rank 0's time inside them,
  measured in a second pass where a barrier precedes each all-reduce (so it is the collective's own time,
  not the wait for a slower rank).
* ``checkpoint_memory``: rank 0's peak RSS increase while writing one checkpoint (VmHWM reset through
  /proc/self/clear_refs) — the sharded format against version 0.1's (every task's state gathered on rank 0,
  one file) — with one task per rank, T = W = 2 vs 8 (rank 0 always owns one task: what other ranks hold
  changes), and on 2 ranks, T = 2 vs 8 (rank 0 owns 1 vs 4 tasks).
* ``checkpoint_time``: T = 4 tasks on W = 1, 2, 4 ranks and T = 2 on W = 4 (task groups); median seconds to
  write a checkpoint and to load this rank's part of it (slowest rank), both formats.
* ``allreduce``: gloo's all-reduce of 4 KB … 16 MB on 2 and 4 ranks (median ms), and the latency α and bus
  bandwidth of ``t = α + 2(n − 1)/n · bytes / busbw`` fitted to them — the constants the scaling model in
  ``docs/scaling.md`` uses for this machine.

RSS figures are taken with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` (large blocks go back to the system when
freed), so a peak is what was live, not what the allocator kept from earlier.

This machine has 2 CPU cores: 4 ranks oversubscribe them, so 4-rank *times* measure contention as much as
scaling — the bytes and the memory are exact whatever the core count.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/distributed.py [--width 32] [--steps 30] [--skip checkpoint_time]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"


def write_suite(root: Path, tasks: int, size: int = 28, classes: int = 10, per_class: int = 60) -> Path:
    rng = np.random.default_rng(0)
    lines = ['name = "bench"', "[defaults]", f"image_size = {size}", "channels = 1", "crop_padding = 4"]
    for t in range(tasks):
        x = rng.integers(0, 255, size=(classes * per_class, size, size), dtype=np.uint8)
        y = np.repeat(np.arange(classes), per_class)
        np.savez(root / f"task{t}.npz", x=x, y=y)
        lines += ["[[meta_train]]", f'name = "t{t}"', f'dataset = "{root / f"task{t}.npz"}"']
    suite = root / f"suite{tasks}.toml"
    suite.write_text("\n".join(lines) + "\n")
    return suite


def launch(world: int, args: list[str], out: Path, timeout: float = 900) -> dict:
    """Run this file's worker on ``world`` ranks; returns rank 0's JSON."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    if "memory" in args:  # RSS follows live memory (it slows allocation down: never for timings)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    done = subprocess.run(
        [*cmd, str(HERE), "--worker", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise SystemExit(f"worker on {world} ranks failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------ worker
def _config(suite: Path, width: int, batch: int, **extra):
    from largemeta.train.config import from_mapping

    values = {
        "suite": str(suite),
        "model": "convnet",
        "width": width,
        "batch_size": batch,
        "k": 100,
        "steps": 10**6,
        "log_every": 10**6,
        "checkpoint_every": 10**6,
        "eval_batches": 0,
        "device": "cpu",
        "inner_lr": 0.01,
        "meta_lr": 0.01,
        **extra,
    }
    return from_mapping(values)


class Counter:
    """Bytes of every all-reduce, by purpose (read off the caller): meta_gradient, task_gradients,
    batchnorm."""

    PURPOSE = {"mean_over_all_tasks": "meta_gradient", "group_mean": "task_gradients"}

    def __init__(self) -> None:
        import torch.distributed as dist

        self.bytes: dict[str, int] = defaultdict(int)
        self.wire: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.original = dist.all_reduce
        self.isolate = False  # time each all-reduce alone: a barrier first, so no rank waits for a slower one

        def counted(tensor, *a, group=None, **kw):
            caller = sys._getframe(1).f_code.co_name
            purpose = self.PURPOSE.get(caller, "batchnorm" if caller in ("forward", "backward") else caller)
            n = dist.get_world_size(group) if group is not None else dist.get_world_size()
            size = tensor.numel() * tensor.element_size()
            self.bytes[purpose] += size
            self.wire[purpose] += 2 * (n - 1) / n * size
            self.calls[purpose] += 1
            if self.isolate:
                dist.barrier(group=group)
            start = time.perf_counter()
            try:
                return self.original(tensor, *a, group=group, **kw)
            finally:
                self.seconds[purpose] += time.perf_counter() - start

        dist.all_reduce = counted

    def reset(self) -> None:
        self.bytes.clear()
        self.wire.clear()
        self.calls.clear()
        self.seconds.clear()


def worker_step(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from largemeta.train.trainer import Trainer

    cfg = _config(Path(args.suite), args.width, args.batch)
    trainer = Trainer(cfg, Path(args.folder), progress=False)
    world = trainer.processes.world
    counter = Counter() if world > 1 else None
    step = trainer.run_state.take_step
    for _ in range(args.warmup):
        step()
    if counter:
        counter.reset()
    times = []
    for _ in range(args.steps):
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        step()
        elapsed = torch.tensor([time.perf_counter() - start])
        if counter is not None:  # the slowest rank's time, not counted as training traffic
            counter.original(elapsed, op=dist.ReduceOp.MAX)
        times.append(float(elapsed))
    if counter:  # a second pass for the time inside the all-reduces alone
        counts = (dict(counter.bytes), dict(counter.wire), dict(counter.calls))
        counter.reset()
        counter.isolate = True
        for _ in range(args.steps):
            step()
    phi_bytes = sum(v.numel() * v.element_size() for v in trainer.learner.phi.values())
    theta_bytes = sum(v.numel() * v.element_size() for v in trainer.learner.params[0].values())
    out = {
        "world": world,
        "tasks": len(trainer.run_state.specs),
        "ranks_per_task": trainer.run_state.layout.group_size,
        "ms": round(1e3 * statistics.median(times), 2),
        "ms_q1_q3": [round(1e3 * q, 2) for q in statistics.quantiles(times, n=4)[::2]],
        "phi_bytes": phi_bytes,
        "theta_bytes": theta_bytes,
    }
    if counter:
        per_step = lambda d: {k: round(v / args.steps) for k, v in d.items()}  # noqa: E731
        out["bytes_per_meta_step"] = per_step(counts[0])
        out["ring_wire_bytes_per_meta_step"] = per_step(counts[1])
        out["all_reduces_per_meta_step"] = per_step(counts[2])
        out["ms_in_all_reduce_per_meta_step"] = {
            k: round(1e3 * v / args.steps, 2) for k, v in counter.seconds.items()
        }
    trainer.close()
    return out


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _peak_during(fn) -> float:
    """MiB by which this process's peak RSS exceeds its RSS before ``fn()``."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    fn()
    return round((_rss_kib("VmHWM") - before) / 1024, 1)


def _legacy_save(trainer) -> None:
    """Version 0.1's save, as it was: every rank sends its whole learner state (its tasks, and its copy of φ
    and the outer optimizer) to rank 0, which assembles and writes one file."""
    from largemeta.checkpoint import legacy
    from largemeta.train import distributed, state

    run = trainer.run_state
    piece = {
        "shared": state.on_cpu(state.Shared(run).state_dict()),
        "tasks": {
            gi: state.on_cpu(state.Trajectory(run, local, with_task=True).state_dict())
            for local, gi in enumerate(run.mine)
        },
    }
    pieces = distributed.gather(piece, run.processes.group)
    del piece
    if pieces is not None:
        tasks = {gi: t for piece in pieces for gi, t in piece["tasks"].items()}
        whole = {
            "step": run.learner.step,
            "config": run.cfg.to_dict(),
            "task_names": [s.name for s in run.specs],
            "shared": pieces[0]["shared"],
            "tasks": [tasks[gi] for gi in range(len(run.specs))],
        }
        legacy.save(trainer.run_dir / "legacy.pt", whole)
        del tasks, whole
    del pieces
    if trainer.processes.group is not None:
        import torch.distributed as dist

        dist.barrier()


def _legacy_load(trainer) -> None:
    from largemeta.checkpoint import legacy
    from largemeta.runs.checkpoint import CheckpointOnDisk
    from largemeta.train import state

    path = trainer.run_dir / "legacy.pt"
    step, info, entries = legacy.read(path)
    on_disk = CheckpointOnDisk(path, legacy.FORMAT, step, info, tuple(entries), lambda keys: entries)
    state.restore(trainer.run_state, on_disk)


def worker_checkpoint(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from largemeta.runs import checkpoint as run_checkpoint
    from largemeta.train import state
    from largemeta.train.trainer import Trainer

    cfg = _config(Path(args.suite), args.width, args.batch)
    trainer = Trainer(cfg, Path(args.folder), progress=False)
    trainer.run_state.take_step()  # momentum buffers exist from here on
    world, rank = trainer.processes.world, trainer.processes.rank

    def slowest(seconds: float) -> float:
        t = torch.tensor([seconds])
        if world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def timed(fn) -> float:
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        fn()
        return slowest(time.perf_counter() - start)

    out: dict = {"world": world, "tasks": len(trainer.run_state.specs), "tasks_on_rank_0": len(trainer.tasks)}
    if args.part == "memory":
        trainer.save()  # warm-up: imports, first-use allocations
        _legacy_save(trainer)
        out["rank0_peak_rss_increase_mib"] = {
            "sharded": _peak_during(trainer.save),
            "version_0_1_gathered": _peak_during(lambda: _legacy_save(trainer)),
        }
        state_bytes = sum(
            v.numel() * v.element_size() for params in trainer.learner.params for v in params.values()
        )
        out["rank0_own_task_parameter_mib"] = round(state_bytes / 2**20, 1)
    else:
        saved = run_checkpoint.read  # the manifest is read once per resume
        writes, loads, legacy_writes, legacy_loads = [], [], [], []
        for _ in range(args.repeats):
            writes.append(timed(trainer.save))
            manifest = saved(trainer.run_dir)
            loads.append(timed(lambda m=manifest: state.restore(trainer.run_state, m)))
            legacy_writes.append(timed(lambda: _legacy_save(trainer)))
            legacy_loads.append(timed(lambda: _legacy_load(trainer)))
        folder = next(p for p in trainer.run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint-"))
        out.update(
            {
                "sharded_write_s": round(statistics.median(writes), 4),
                "sharded_load_s": round(statistics.median(loads), 4),
                "sharded_bytes": sum(p.stat().st_size for p in folder.iterdir()),
                "version_0_1_write_s": round(statistics.median(legacy_writes), 4),
                "version_0_1_load_s": round(statistics.median(legacy_loads), 4),
                "version_0_1_bytes": (trainer.run_dir / "legacy.pt").stat().st_size,
            }
        )
    if rank == 0:
        Path(args.out).write_text(json.dumps(out))
    trainer.close()
    return out


def worker_allreduce(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    n = dist.get_world_size()
    times = {}
    for size in (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20):
        x = torch.ones(size // 4)
        for _ in range(3):
            dist.all_reduce(x)
        samples = []
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            t = torch.tensor([time.perf_counter() - start])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            samples.append(float(t))
        times[size] = statistics.median(samples)
    # least squares of t = α + c · bytes, c = 2(n − 1)/n / busbw
    xs, ys = np.array(list(times), dtype=float), np.array(list(times.values()))
    c, alpha = np.polyfit(xs, ys, 1)
    out = {
        "world": n,
        "median_ms": {f"{k >> 10} KiB": round(1e3 * v, 3) for k, v in times.items()},
        "fit_alpha_ms": round(1e3 * float(alpha), 3),
        "fit_busbw_gb_s": round(2 * (n - 1) / n / float(c) / 1e9, 3),
    }
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(out))
    dist.destroy_process_group()


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    if args.part == "allreduce":
        worker_allreduce(args)
    elif args.part == "step":
        out = worker_step(args)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.out).write_text(json.dumps(out))
    else:
        worker_checkpoint(args)


# ------------------------------------------------------------------------------------------------ parent
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=32, help="ConvNet width of the meta-step figures")
    parser.add_argument("--memory-width", type=int, default=256, help="ConvNet width of the memory figure")
    parser.add_argument(
        "--checkpoint-width", type=int, default=128, help="ConvNet width of the checkpoint-time figure"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed meta-steps per world size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed checkpoint writes/loads")
    parser.add_argument(
        "--skip", default="", help="comma-separated: meta_step, checkpoint_memory, checkpoint_time, allreduce"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="step", help=argparse.SUPPRESS)
    parser.add_argument("--suite", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from largemeta.train.distributed import leave

        worker(args)
        leave(0)  # no interpreter finalization after Gloo (see largemeta.train.distributed.leave)
    import torch

    skip = set(args.skip.split(","))
    report: dict = {
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "backend": "gloo over localhost TCP, one thread per rank",
        "gpu": "none on this machine",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def run(world: int, tasks: int, part: str, width: int) -> dict:
            name = f"{part}-{world}-{tasks}-{width}"
            common = ["--suite", str(write_suite(root, tasks)), "--folder", str(root / name), "--part", part]
            common += ["--width", str(width), "--batch", str(args.batch), "--steps", str(args.steps)]
            common += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            return launch(world, common, root / f"{name}.json")

        if "meta_step" not in skip:
            report["meta_step"] = {str(w): run(w, 2, "step", args.width) for w in (1, 2, 4)}
        if "checkpoint_memory" not in skip:
            report["checkpoint_memory"] = {
                f"{w}_ranks_{t}_tasks": run(w, t, "memory", args.memory_width)
                for w, t in ((2, 2), (8, 8), (2, 8))
            }
        if "checkpoint_time" not in skip:
            report["checkpoint_time"] = {
                f"{w}_ranks_{t}_tasks": run(w, t, "time", args.checkpoint_width)
                for w, t in ((1, 4), (2, 4), (4, 4), (4, 2))
            }
        if "allreduce" not in skip:
            report["allreduce"] = {}
            for w in (2, 4):
                common = ["--part", "allreduce", "--repeats", str(max(args.repeats, 15))]
                report["allreduce"][str(w)] = launch(w, common, root / f"allreduce-{w}.json")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
