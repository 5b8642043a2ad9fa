"""Benchmark: peak memory of a streamed training run over image folders of 4 and 8 GB decoded.

    python benchmarks/stream_memory.py [--sizes-gb 4,8] [--image-size 224] [--steps 40] [--workers 1]
                                       [--dir DIR] [--keep]

For each size, writes a folder of 224 x 224 RGB JPEG files (100 classes) holding that many bytes once decoded
at the task's size (N x 3 x 224 x 224 — what ``data_placement = "device"`` would hold), then trains on it with
``largemeta train`` in a subprocess (one task over the whole folder, a width-8 ConvNet, batch 16, crop padding
8 and flips, no held-out evaluation, ``data_placement = "auto"`` with a 1 GB budget, so auto streams).
While it runs, every 20 ms the memory of the training process and of its worker processes is read from
``/proc/<pid>/smaps_rollup``:

* ``peak_rss_mb``: the peak of the summed resident sets (pages shared between the processes — the forked
  workers share most of the parent's — counted once per process: an over-count);
* ``peak_pss_mb``: the peak of the summed proportional sets (shared pages divided among their sharers: what
  the run really takes);
* ``main_peak_rss_mb``: the training process alone.

The files repeat 64 distinct images (decoding cost is per file, not per distinct image); the folder listing
(index) is part of the run, so its memory counts. Prints one JSON object. Needs Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def distinct_jpegs(side: int, count: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    yy, xx = np.mgrid[0:side, 0:side] / side
    for _ in range(count):
        a, b, c = rng.uniform(1, 6, 3)
        img = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx * yy * c), np.sin(c * (xx - yy))], -1)
        img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_folder(root: Path, files: int, classes: int, jpegs: list[bytes]) -> float:
    t0 = time.perf_counter()
    for c in range(classes):
        (root / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"class{i % classes:03d}" / f"{i:07d}.jpg").write_bytes(jpegs[i % len(jpegs)])
    return time.perf_counter() - t0


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in kB; (0, 0) once the process is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.peak_rss = self.peak_pss = self.main_rss = self.most_processes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = tree(self.pid)
            values = [rollup(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in values))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in values))
            self.main_rss = max(self.main_rss, values[0][0])
            self.most_processes = max(self.most_processes, len(pids))
            time.sleep(0.02)


def train(root: Path, work: Path, args: argparse.Namespace) -> dict:
    suite = work / f"{root.name}.toml"
    suite.write_text(
        f'name = "{root.name}"\n[[meta_train]]\nname = "photos"\ndataset = "{root}"\n'
        f"image_size = {args.image_size}\nchannels = 3\ncrop_padding = 8\nflip = true\n"
    )
    run = work / f"run-{root.name}"
    sets = {
        "suite": suite,
        "width": 8,
        "batch_size": 16,
        "k": 10,
        "log_every": 10,
        "checkpoint_every": 1000,
        "eval_batches": 0,  # the trainer's held-out batch of 256 at 224 px would dwarf the rest
        "data_placement": "auto",
        "memory_budget_gb": args.budget_gb,
        "stream_workers": args.workers,
        "data_dir": work / "cache",
    }
    argv = [sys.executable, "-m", "largemeta", "train", "--out", str(run), "--steps", str(args.steps)]
    argv += ["--device", "cpu"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"training failed: {err[-2000:]}")
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "ms_per_step_last_window": round(1e3 / lines[-1]["steps_per_s"], 1),
        "placement_notice": err.strip(),
        "peak_rss_mb": round(sampler.peak_rss / 1024, 1),
        "peak_pss_mb": round(sampler.peak_pss / 1024, 1),
        "main_peak_rss_mb": round(sampler.main_rss / 1024, 1),
        "processes": sampler.most_processes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-gb", default="4,8", help="decoded sizes of the folders, GB (2**30 bytes)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--budget-gb", type=float, default=1.0, help="auto's memory budget (below the sizes)")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="largemeta-stream-mem-"))
    per_image = 3 * args.image_size**2
    jpegs = distinct_jpegs(args.image_size)
    results = []
    try:
        for gb in (float(g) for g in args.sizes_gb.split(",")):
            files = math.ceil(gb * 2**30 / per_image)
            root = work / f"photos_{gb:g}gb"
            written = write_folder(root, files, args.classes, jpegs)
            disk = sum(len(jpegs[i % len(jpegs)]) for i in range(files))
            result = {
                "files": files,
                "decoded_gb": round(files * per_image / 2**30, 2),
                "on_disk_gb": round(disk / 2**30, 2),
                "write_s": round(written, 1),
                **train(root, work, args),
            }
            result["peak_pss_over_decoded"] = round(result["peak_pss_mb"] / (files * per_image / 2**20), 4)
            results.append(result)
            shutil.rmtree(root, ignore_errors=True)  # one folder on disk at a time
        print(
            json.dumps(
                {
                    "machine": f"{os.cpu_count()} cores (shared)",
                    "image_size": args.image_size,
                    "steps": args.steps,
                    "stream_workers": args.workers,
                    "runs": results,
                },
                indent=2,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
