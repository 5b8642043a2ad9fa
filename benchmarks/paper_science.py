"""The paper's question at GPU scale, sized to a short run: CTS against Reptile on 8 paper-shaped tasks at
equal cumulative inner steps, through ``largemeta train`` and ``largemeta evaluate``; JSON on stdout and in
``OUT/science.json`` (rewritten after every part, so a run cut off keeps what finished).

The tasks are synthetic stand-ins of the shapes of the paper's meta-training datasets (64, 64, 32, 84, 84, 84,
28, 32 px; 100/100/100/120/100/200/10/10 classes; 3 channels), written as ``.npz`` files: each class is a
random low-resolution colour pattern, each image that pattern shifted, scaled in contrast and noised, so the
tasks are learnable and differ. The held-out target (84 px, 37 classes, like Pets) is made the same way from
patterns of its own. ResNet-20, batch 128, SGD 0.01 / momentum 0.9 / wd 5e-4, β = 0.01, K = ``--k``.

Parts, in order:

1. ``calibrate``: a short CTS run; its steps per second after warm-up fix the budget ``--steps`` (a multiple
   of K) that fits ``--seconds`` per algorithm (or give ``--steps``);
2. one ``largemeta train`` per algorithm with that budget, each in its own process, which records its wall
   time, peak GPU memory (``torch.cuda.max_memory_allocated``/``reserved``) and peak RSS; from
   ``metrics.jsonl``: steps per second (the median over log windows, the first excluded), meta-updates and the
   loss curve. A run past ``1.5 × --seconds + 30`` is stopped with SIGTERM (it checkpoints; the curve so far
   stays);
3. ``evaluate`` (``--eval-steps`` > 0), if time allows (with ``--budget-s``, the whole run's time, an
   evaluation starts only while 30 s of it are left): φ of each run and a scratch body fine-tuned on the
   held-out target, ``--eval-seeds`` seeds.

What the figures are over: one device, one seed, synthetic data. They measure throughput, memory and how
training proceeds at the paper's shapes — not the paper's accuracies.

Usage (from the repository root, with the package importable)::

    PYTHONPATH=src python benchmarks/paper_science.py --out OUT --device cuda --seconds 100
    PYTHONPATH=src python benchmarks/paper_science.py --out OUT --tiny          # CPU, seconds: the plumbing
    PYTHONPATH=src python benchmarks/paper_science.py --out OUT --write-suite   # only the data and config
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PAPER_TASKS = [(64, 100), (64, 100), (32, 100), (84, 120), (84, 100), (84, 200), (28, 10), (32, 10)]
TARGET = (84, 37)
PER_CLASS = 12  # training images per class (plus a quarter as many held out): 150 MB of 84 px images


def shapes(tiny: bool) -> tuple[list[tuple[int, int]], tuple[int, int], int]:
    """(tasks, target, images per class): the paper's, or at ``--tiny`` a quarter of the side (at least 8 px)
    and at most 4 classes, for a CPU."""
    if not tiny:
        return PAPER_TASKS, TARGET, PER_CLASS
    small = [(max(8, px // 4), min(classes, 4)) for px, classes in PAPER_TASKS]
    return small, (max(8, TARGET[0] // 4), 4), 8


def synthetic(px: int, classes: int, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """A learnable ``(N, px, px, 3)`` uint8 dataset: class c = a random 4x4 colour pattern, upsampled, each
    image shifted by up to px/8, its contrast scaled by 0.6-1.0, plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, (classes, 4, 4, 3))
    cell = -(-px // 4)
    big = patterns.repeat(cell, axis=1).repeat(cell, axis=2)[:, :px, :px]
    out = {}
    for split, n in (("", per_class), ("_test", max(2, per_class // 4))):
        y = np.repeat(np.arange(classes), n)
        shift = rng.integers(-(px // 8), px // 8 + 1, (len(y), 2))
        x = np.empty((len(y), px, px, 3), np.float32)
        for i, c in enumerate(y):
            x[i] = np.roll(big[c], tuple(shift[i]), axis=(0, 1))
        x = 128 + (x - 128) * rng.uniform(0.6, 1.0, (len(y), 1, 1, 1)) + rng.normal(0, 20, x.shape)
        out[f"x{split}"], out[f"y{split}"] = np.clip(x, 0, 255).astype(np.uint8), y
    return out


def write_suite(out: Path, args: argparse.Namespace) -> Path:
    """The 8 tasks and the target as ``.npz`` files, their suite and the run's config (``config.toml``)."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    tasks, target, per_class = shapes(args.tiny)
    lines = ['name = "paper_shaped"', "[defaults]", "channels = 3", "flip = true", "crop_padding = 8"]
    entries = [(f"t{i}_{px}px_{c}", px, c, "meta_train") for i, (px, c) in enumerate(tasks)]
    entries.append((f"target_{target[0]}px_{target[1]}", *target, "meta_test"))
    for i, (name, px, classes, role) in enumerate(entries):
        path = data / f"{name}.npz"
        if not path.exists():
            np.savez(path, **synthetic(px, classes, per_class, seed=1000 + i))
        padding = 4 if px <= 32 else 8
        lines += [f"[[{role}]]", f'name = "{name}"', f'dataset = "{path}"', f"image_size = {px}"]
        lines += [f"crop_padding = {max(1, padding // 4) if args.tiny else padding}"]
    suite = out / "suite.toml"
    suite.write_text("\n".join(lines) + "\n")
    config = {
        "suite": str(suite),
        "model": "resnet20",
        "batch_size": 8 if args.tiny else 128,
        "k": args.k,
        "inner_lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "meta_lr": 0.01,
        "executor": args.executor,
        "device": args.device,
        "data_dir": str(out / "cache"),
        "data_placement": "device",
        "eval_batches": 1,
        "log_every": args.log_every,
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    (out / "config.toml").write_text(text)
    return out / "config.toml"


CHILD = """
import json, resource, sys, time
import torch
from largemeta.cli import main
start = time.perf_counter()
code = main(sys.argv[2:])
out = {"exit": code, "wall_s": round(time.perf_counter() - start, 2),
       "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
if torch.cuda.is_available() and torch.cuda.is_initialized():
    out["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["max_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
open(sys.argv[1], "w").write(json.dumps(out))
sys.exit(code)
"""


def command(argv: list[str], record: Path, cap_s: float) -> dict:
    """``largemeta ARGV`` in a process of its own that records its exit, wall time and peak memory; past
    ``cap_s`` it gets SIGTERM (a training run checkpoints and exits 75), then SIGKILL a minute later."""
    # the command's stdout goes to this one's stderr: stdout is this script's JSON alone
    sys.stderr.flush()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(record), *argv],
        stdout=sys.stderr,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=cap_s)
        capped = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        capped = True
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    done = json.loads(record.read_text()) if record.exists() else {"exit": proc.returncode}
    done.update(capped=capped, returncode=proc.returncode)
    if proc.returncode not in (0, 75):
        done["stderr_tail"] = err[-2000:]
    return done


def curve(run: Path) -> dict:
    lines = (
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        if (run / "metrics.jsonl").exists()
        else []
    )
    rates = [m["steps_per_s"] for m in lines[1:] if m.get("steps_per_s")]
    return {
        "steps_done": lines[-1]["step"] if lines else 0,
        "steps_per_s": round(statistics.median(rates), 3) if rates else None,
        "meta_updates": lines[-1]["meta_updates"] if lines else 0,
        "loss_curve": [[m["step"], m["mean_loss"]] for m in lines],
        "held_out_accuracy_curve": [
            [m["step"], statistics.mean(t["accuracy"] for t in m["tasks"].values() if "accuracy" in t)]
            for m in lines
            if any("accuracy" in t for t in m.get("tasks", {}).values())
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the data, the runs and science.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--algos", default="cts,reptile")
    parser.add_argument("--seconds", type=float, default=100, help="training time per algorithm (100)")
    parser.add_argument("--steps", type=int, default=0, help="budget per algorithm (0: calibrated)")
    parser.add_argument("--k", type=int, default=100, help="inner steps per trajectory (100)")
    parser.add_argument("--executor", default="channels_last+autocast")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument(
        "--eval-steps", type=int, default=200, help="fine-tuning steps on the target (0: none)"
    )
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=0,
        help="whole run's time: evaluations that would not fit are skipped",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CPU-sized shapes, a few steps: the plumbing only"
    )
    parser.add_argument(
        "--write-suite", action="store_true", help="write the data and config.toml, then stop"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps = args.steps or 4
        args.k = min(args.k, 2)
        args.log_every = min(args.log_every, 2)
        args.eval_steps = min(args.eval_steps, 2)
        args.eval_seeds = 1
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = write_suite(out, args)
    if args.write_suite:
        print(json.dumps({"config": str(config), "suite": str(out / "suite.toml")}))
        return 0
    env_src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [env_src, os.environ.get("PYTHONPATH")]))
    report: dict = {
        "what": "CTS vs Reptile at equal cumulative inner steps, 8 paper-shaped synthetic tasks, ResNet-20",
        "device": args.device,
        "tiny": args.tiny,
        "shapes": {"tasks": shapes(args.tiny)[0], "target": shapes(args.tiny)[1]},
        "config": config.read_text(),
        "parts": {},
    }
    if args.device.startswith("cuda"):
        import torch

        report["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    results = out / "science.json"

    def save() -> None:
        results.write_text(json.dumps(report, indent=2) + "\n")

    failed = False
    started = time.perf_counter()
    steps = args.steps
    if not steps:
        calib = out / "runs" / "calibrate"
        n = 3 * args.log_every
        done = command(
            ["train", "-q", "--config", str(config), "--out", str(calib), "--steps", str(n),
             "--k", str(args.k), "--set", f"checkpoint_every={n}"],
            out / "calibrate.json",
            cap_s=max(120.0, args.seconds),
        )  # fmt: skip
        rate = curve(calib)["steps_per_s"]
        report["parts"]["calibrate"] = {**done, "steps": n, "steps_per_s": rate}
        if done["returncode"] != 0 or not rate:
            failed = True
            save()
            print(json.dumps(report, indent=2))
            return 1
        steps = max(args.k, int(args.seconds * rate) // args.k * args.k)
    report["steps_per_algorithm"] = steps
    save()
    for algo in args.algos.split(","):
        run = out / "runs" / algo
        done = command(
            ["train", "-q", "--config", str(config), "--out", str(run), "--algo", algo, "--steps", str(steps),
             "--k", str(args.k), "--set", f"checkpoint_every={steps}"],
            out / f"train_{algo}.json",
            cap_s=1.5 * args.seconds + 30,
        )  # fmt: skip
        report["parts"][algo] = {**done, **curve(run)}
        failed |= done["returncode"] not in (0, 75)
        save()
    if args.eval_steps:
        evals = {}
        for init in [*args.algos.split(","), "scratch"]:
            left = args.budget_s - (time.perf_counter() - started)
            if args.budget_s and left < 30:
                evals[init] = {"skipped": f"{left:.0f} s of --budget-s {args.budget_s:g} left"}
                report["parts"]["evaluate"] = evals
                save()
                continue
            source = str(out / "runs" / init) if init != "scratch" else "scratch"
            argv = [
                "evaluate",
                "-q",
                "--init",
                source,
                "--suite",
                str(out / "suite.toml"),
                "--device",
                args.device,
                "--steps",
                str(args.eval_steps),
                "--seeds",
                str(args.eval_seeds),
                "--batch-size",
                "8" if args.tiny else "128",
                "--data-dir",
                str(out / "cache"),
                "--out",
                str(out / f"eval_{init}"),
            ]
            if init == "scratch":
                argv += ["--model", "resnet20", "--channels", "3"]
            cap = min(max(60.0, args.seconds), left - 5) if args.budget_s else max(60.0, args.seconds)
            done = command(argv, out / f"eval_{init}.json", cap_s=cap)
            if (out / f"eval_{init}" / "results.json").exists():
                scored = json.loads((out / f"eval_{init}" / "results.json").read_text())
                done["mean_accuracy"] = scored["mean_accuracy"]
                done["tasks"] = scored["tasks"]
            failed |= done["returncode"] != 0
            evals[init] = done
            report["parts"]["evaluate"] = evals
            save()
    report["ok"] = not failed
    save()
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
