"""A body that draws random numbers (Dropout) resumes bit for bit and trains the same on 1 and 2 ranks: its
masks come from each task's own seed and count of forwards (kept in the checkpoint), not from a global
generator that is neither saved nor shared between ranks.

Real runs of a real Dropout body: one straight, one stopped and resumed, one under torchrun.
"""

import subprocess
import sys

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import env, sets
from largemeta.cli import main

BODY = """import torch.nn as nn


def body(in_channels=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
    )
"""


@pytest.fixture
def dropout_cfg(tiny_suite, tiny_config, tmp_path):
    path = tmp_path / "dropout_body.py"
    path.write_text(BODY)
    return tiny_config(tiny_suite, model=f"{path}:body", checkpoint_every=6)


def test_a_dropout_body_resumes_bit_for_bit(dropout_cfg, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "straight"), "--steps", "12", *sets(dropout_cfg)]) == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "6", *sets(dropout_cfg)]) == 0
    torch.rand(1000)  # whatever else used the global generator in between: no matter
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "12"]) == 0, capsys.readouterr().err
    a, b = phi(tmp_path / "straight"), phi(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the masks did differ from step to step: dropout is on (not a run that draws nothing)
    assert read_all(tmp_path / "run")["tasks"][0]["task"]["rng_draws"] >= 12


@pytest.mark.distributed
def test_a_dropout_body_trains_the_same_on_one_and_two_ranks(dropout_cfg, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(dropout_cfg)]) == 0
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "largemeta",
        ]
        + ["train", "--out", str(tmp_path / "two"), "--steps", "12", *sets(dropout_cfg)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = phi(tmp_path / "one"), phi(tmp_path / "two")
    for k in a:  # the all-reduce sums in another order: equal to rounding
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k
