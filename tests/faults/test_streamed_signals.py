"""Signals stop streamed runs as cleanly as device-resident ones. Ctrl-C in a terminal, SLURM's ``scancel``,
``timeout`` and torchrun send the signal to the whole process group, DataLoader workers included: the
workers ignore it (the training process owns shutdown), so the run finishes its step, writes the checkpoint
of the step it stopped at and exits 75 — in one process and under torchrun.

Real processes in a session of their own, a real signal to the whole group.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from checkpoint_edits import read_all
from cli_runs import env, sets
from largemeta.errors import PREEMPTED_EXIT


@pytest.fixture
def streamed(tmp_path):
    """The config of a run streaming two tasks from a folder of 4 x 24 grey PNG files (16 px), two workers."""
    root = tmp_path / "pictures"
    rng = random.Random(0)
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(24):
            img = Image.new("L", (16, 16), color=rng.randrange(40))
            img.paste(220, (4 * c, 4 * c, 4 * c + 5, 4 * c + 5))
            img.save(root / f"c{c}" / f"{i:03d}.png")
    suite = tmp_path / "folder.toml"
    suite.write_text(
        f'name = "pictures"\n[defaults]\nimage_size = 16\nchannels = 1\ncrop_padding = 2\nflip = true\n'
        f'[[meta_train]]\nname = "low"\ndataset = "{root}"\nclasses = "0-1"\n'
        f'[[meta_train]]\nname = "high"\ndataset = "{root}"\nclasses = "2-3"\n'
    )
    return {
        "suite": str(suite),
        "model": "convnet",
        "width": 4,
        "batch_size": 8,
        "k": 3,
        "log_every": 1,
        "checkpoint_every": 100000,  # nothing is saved but what the signal saves
        "device": "cpu",
        "eval_batches": 0,
        "data_dir": str(tmp_path / "cache"),
        "data_placement": "stream",
        "stream_workers": 2,
    }


def start(cmd, run: Path, lines: int = 3) -> subprocess.Popen:
    """``cmd`` in a session (process group) of its own, once its run has logged ``lines`` steps."""
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 180
    while not (metrics.exists() and metrics.read_text().count("\n") >= lines):
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run never got going: {proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    return proc


CONSOLE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
"""What the console prints off a terminal: a timestamped header and progress lines."""


def signal_group_and_wait(proc: subprocess.Popen, signum: int) -> str:
    os.killpg(proc.pid, signum)
    try:
        return proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_group_stops_a_streamed_run_at_a_checkpoint(streamed, tmp_path, signum):
    # the workers' death used to win this race most of the time
    run = tmp_path / "run"
    proc = start(
        [sys.executable, "-m", "largemeta", "train", "--out", str(run), "--steps", "100000"] + sets(streamed),
        run,
    )
    err = signal_group_and_wait(proc, signum)
    assert proc.returncode == PREEMPTED_EXIT, err[-3000:]
    stop = re.search(rf"stopped by {signal.Signals(signum).name} after step (\d+) of", err)
    said = [line for line in err.splitlines() if not CONSOLE_LINE.match(line)]  # beside the progress lines
    assert stop is not None and "Traceback" not in err and len(said) == 1, err[-3000:]
    assert read_all(run)["step"] == int(stop.group(1)) >= 3  # the checkpoint of the step it stopped at


@pytest.mark.distributed
def test_a_signal_to_torchrun_s_group_stops_every_streamed_rank_at_a_checkpoint(streamed, tmp_path):
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [*torchrun, "-m", "largemeta", "train", "--out", str(run), "--steps", "100000", *sets(streamed)]
    proc = start(cmd, run)
    err = signal_group_and_wait(proc, signal.SIGTERM)
    stops = re.findall(r"stopped by SIGTERM after step (\d+)", err)
    assert len(stops) == 2 and "worker process died" not in err, err[-3000:]
    assert {int(s) for s in stops} == {read_all(run)["step"]}
    # torchrun itself exits 1 (signalled, it raises its own SignalException once the ranks are done), whatever
    # the ranks' 75: a requeue script reads the ranks' "stopped by" lines or the checkpoint's step (README)
    assert proc.returncode == 1, err[-3000:]


def test_the_same_signal_twice_at_once_is_one_stop_a_later_one_stops_at_once(monkeypatch):
    # a group signal reaches a torchrun rank twice (itself, then forwarded by the launcher): still one stop
    from largemeta import signals
    from largemeta.errors import Stopped

    with signals.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # both delivered (handlers run between bytecodes)
        assert signals.pending() == signal.SIGTERM
        monkeypatch.setattr(signals, "SAME_STOP_S", 0.0)  # later on, a second signal means "stop now"
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
