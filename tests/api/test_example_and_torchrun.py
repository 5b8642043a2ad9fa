"""The documented example runs, and under torchrun (one task per process) gives the one-process φ."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "drop_in_cts.py"


def run_ok(args, timeout=120):
    # One thread per process: the test machines have few cores, and oversubscribed threads are slow.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_example_runs_and_prints_phi(tmp_path):
    phi_file = tmp_path / "phi.pt"
    out = run_ok([sys.executable, str(EXAMPLE), "--steps", "20", "--k", "5", "--save-phi", str(phi_file)])
    # 4 tasks with different heads; φ = the body: two Linear(·, 32) layers = 8·32 + 32 + 32·32 + 32 parameters
    assert re.search(r"^phi: 4 tensors, 1344 parameters, norm \d+\.\d+$", out, re.M), out
    exported = torch.load(phi_file)
    assert set(exported) == {f"{m}.{p}" for m in ("body.0", "body.2", "head") for p in ("weight", "bias")}


def test_import_largemeta_does_not_import_torch():
    out = run_ok([sys.executable, "-c", "import sys, largemeta; print('torch' in sys.modules)"])
    assert out.strip() == "False"


@pytest.mark.distributed
def test_torchrun_one_task_per_process_matches_one_process(tmp_path):
    args = ["--tasks", "2", "--steps", "30", "--k", "10", "--meta-lr", "0.1"]
    run_ok([sys.executable, str(EXAMPLE), *args, "--save-phi", str(tmp_path / "one.pt")])
    run_ok(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(EXAMPLE),
            *args,
            "--save-phi",
            str(tmp_path / "two.pt"),
        ]
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert list(one) == list(two)
    for name in one:
        assert (one[name] - two[name]).abs().max() <= 1e-5, name


@pytest.mark.distributed
def test_torchrun_ranks_with_different_shared_shapes_fail_on_every_rank():
    out = run_ok(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).with_name("torchrun_mismatch_worker.py")),
        ]
    )
    for rank in (0, 1):
        assert (
            f"rank {rank}: shared parameter '0.weight' has shape (4, 3) in rank 0 but (5, 3) in rank 1" in out
        ), out
