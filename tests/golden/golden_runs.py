"""Short CPU runs whose φ hashes pin the results of version 0.1 (run by ``test_golden.py`` in a subprocess).

``python tests/golden/golden_runs.py [FIXTURE_RUN_DIR]`` prints ``{case: sha256}`` as JSON. Each case trains
through the command line on the shipped ``offline`` config (width 4, 6 steps, K = 3: restarts and the plain
algorithms' meta-updates both happen), exports φ and hashes every exported tensor. With FIXTURE_RUN_DIR (a
copy of the committed ``run_v0_1`` folder, written by version 0.1 at step 6), it is resumed to step 12 and
evaluated.

The caller pins what decides float rounding on a CPU: one thread, and AVX2 kernels (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA), so the hashes are the same on any x86-64 machine with AVX2, AVX-512 or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

import largemeta
from largemeta.cli import main

BASE = [
    "--config",
    "offline",
    "--k",
    "3",
    "--device",
    "cpu",
    "--set",
    "width=4",
    "--set",
    "batch_size=4",
    "--set",
    "eval_batches=0",
    "--set",
    "log_every=3",
    "--set",
    "checkpoint_every=6",
]
FIXTURE = ["--set", "tasks=mnist,quickdraw_a"]  # how run_v0_1 was trained (to 6 of 12 steps)

CASES: dict[str, list[str]] = {
    **{
        algo: ["--algo", algo]
        for algo in (
            "cts",
            "cts-reptile",
            "reptile",
            "cts-fomaml",
            "fomaml",
            "cts-leap",
            "leap",
            "imaml",
            "multitask",
        )
    },
    "single": ["--algo", "single", "--set", "tasks=mnist"],
    **{
        f"cts/{ex}": ["--set", f"executor={ex}"]
        for ex in ("channels_last", "autocast", "channels_last+autocast", "batched")
    },
    "cts/reset_inner_state": ["--set", "reset_inner_state=true"],
    "cts/meta_every=2": ["--set", "meta_every=2"],
    "cts/adam-inside-and-outside": [
        "--set",
        "inner_optimizer=adam",
        "--set",
        "meta_optimizer=adam",
        "--set",
        "inner_lr=0.001",
    ],
    "cts/shift-error-probe": ["--set", "shift_error_every=1"],
    "reptile/resnet20": ["--algo", "reptile", "--set", "model=resnet20"],
}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_cli(*argv: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    if code != 0:
        raise SystemExit(f"largemeta {' '.join(argv)} exited with {code}")


def exported_sha256(run: Path) -> str:
    out = run.parent / f"{run.name}.safetensors"
    run_cli("export", str(run), "--out", str(out))
    return tensors_sha256(load_file(str(out)))


def trained(args: list[str], steps: int = 6) -> str:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        run_cli("train", *BASE, "--steps", str(steps), *args, "--out", str(run))
        return exported_sha256(run)


def drop_in() -> str:
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, c)) for c in (3, 4)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4) for m in models]
    gen = torch.Generator().manual_seed(1)
    cts = largemeta.ContinualTrajectoryShifting(models, k=3, meta_lr=0.1)
    for _ in range(7):
        for model, opt, c in zip(models, opts, (3, 4), strict=True):
            x, y = torch.randn(16, 5, generator=gen), torch.randint(0, c, (16,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        cts.step()
    return tensors_sha256(cts.phi)


def resumed_fixture(run: Path) -> str:
    """The committed v0.1 run folder resumed from step 6 to 12 (φ hash), then evaluated once."""
    run_cli("train", "--resume", str(run), "--steps", "12")
    run_cli(
        "evaluate",
        "--init",
        str(run),
        "--suite",
        "offline",
        "--steps",
        "2",
        "--seeds",
        "1",
        "--batch-size",
        "8",
        "--train-size",
        "70",
        "--device",
        "cpu",
    )
    return exported_sha256(run)


if __name__ == "__main__":
    hashes = {case: trained(args) for case, args in CASES.items()}
    hashes["drop-in"] = drop_in()
    hashes["fixture/straight-12"] = trained(FIXTURE, steps=12)
    if len(sys.argv) > 1:
        hashes["fixture/resumed-6-to-12"] = resumed_fixture(Path(sys.argv[1]))
    print(json.dumps(hashes, indent=4))
