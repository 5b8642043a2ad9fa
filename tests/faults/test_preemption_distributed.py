"""torchrun: SIGTERM reaches every rank (torchrun forwards it); the ranks agree, with one all-reduce after
every step, to stop after the same step, write one consistent checkpoint and exit 75. Only rank 0 locks and
writes the run folder: the other ranks learn its verdict (refused, locked) at once, not by a timeout."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from checkpoint_edits import read_all
from cli_runs import env, sets
from largemeta.files import lock_folder

pytestmark = pytest.mark.distributed


def torchrun():
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "largemeta",
    ]


def train_in_process(cfg, out, resume=False):
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer = Trainer(from_mapping(cfg), out, resume=resume, progress=False)
    try:
        trainer.run()
    finally:
        trainer.close()
        torch.set_num_threads(threads)


def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, steps=120, checkpoint_every=1000, log_every=2)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [*torchrun(), "train", "--out", str(run), "--steps", "120", *sets(cfg)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 180
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(proc.communicate()[1][-3000:])
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    stops = re.findall(r"stopped by SIGTERM after step (\d+)", err)
    assert len(stops) == 2, err[-3000:]  # both ranks said so: the same step
    step = read_all(run)["step"]
    assert {int(s) for s in stops} == {step} and step < 120, err[-3000:]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no lock, no temporary left
    # the checkpoint is whole: resumed on one process, the run ends where an uninterrupted one does
    train_in_process(cfg, tmp_path / "straight")
    train_in_process(cfg, run, resume=True)
    a = read_all(tmp_path / "straight")["shared"]["phi"]
    b = read_all(run)["shared"]["phi"]
    for k in a:
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k


def test_every_rank_learns_at_once_that_the_folder_is_locked(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, steps=2)
    train_in_process(cfg, tmp_path / "run")
    with lock_folder(tmp_path / "run"):  # this process holds it, as a running trainer would
        started = time.time()
        out = subprocess.run(
            [*torchrun(), "train", "--resume", str(tmp_path / "run"), "--steps", "4"],
            env=env(LARGEMETA_COLLECTIVE_TIMEOUT="120"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        took = time.time() - started
    assert out.returncode != 0
    assert out.stderr.count(f"is in use by process {os.getpid()}") == 2, out.stderr[
        -3000:
    ]  # rank 0 and rank 1
    assert took < 100  # not by the collective timeout
    assert read_all(tmp_path / "run")["step"] == 2


def test_a_rank_that_never_connects_is_one_line_and_exit_3(tiny_suite, tiny_config, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rank0 = env(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        LARGEMETA_COLLECTIVE_TIMEOUT="4",
    )
    cfg = tiny_config(tiny_suite, steps=2)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "largemeta",
            "train",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            *sets(cfg),
        ],
        env=rank0,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr[-3000:]
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "joining the other ranks failed — another rank died or stopped responding" in out.stderr
    assert not (tmp_path / "run").exists()
