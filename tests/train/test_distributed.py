"""Real torchrun processes (gloo): 2 ranks give the φ of 1 process; a 2-rank run resumes on 1 rank."""

import subprocess
import sys

import pytest
import torch

from checkpoint_edits import phi, read_all
from cli_runs import command, env, sets, spawn_ranks

pytestmark = pytest.mark.distributed


def assert_close(a, b, tol=1e-5):
    for k in a:
        diff = (a[k] - b[k]).abs().max().item()
        assert diff <= tol, f"{k}: {diff}"


@pytest.mark.parametrize("algo", ["cts", "multitask"])
def test_two_ranks_equal_one_process(tiny_suite, tiny_config, tmp_path, algo):
    cfg = tiny_config(tiny_suite, algo=algo)  # 3 tasks: uneven shards (2 + 1)
    command(["train", "--out", str(tmp_path / "one"), "--steps", "12", *sets(cfg)], timeout=240)
    command(["train", "--out", str(tmp_path / "two"), "--steps", "12", *sets(cfg)], nproc=2, timeout=240)
    assert_close(phi(tmp_path / "one"), phi(tmp_path / "two"))
    one = read_all(tmp_path / "one")["tasks"]
    two = read_all(tmp_path / "two")["tasks"]
    for a, b in zip(one, two, strict=True):
        assert_close(a["params"], b["params"])


def test_two_rank_run_resumes_on_one_rank(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", "12", *sets(cfg)], timeout=240)
    command(["train", "--out", str(tmp_path / "split"), "--steps", "6", *sets(cfg)], nproc=2, timeout=240)
    command(["train", "--resume", str(tmp_path / "split"), "--steps", "12"], timeout=240)
    assert_close(phi(tmp_path / "straight"), phi(tmp_path / "split"))
    assert torch.equal(
        read_all(tmp_path / "straight")["tasks"][1]["task"]["sampler"]["train"]["generator"],
        read_all(tmp_path / "split")["tasks"][1]["task"]["sampler"]["train"]["generator"],
    )


def test_survivor_exits_with_a_clear_message_when_a_rank_dies(tiny_suite, tiny_config, tmp_path):
    import signal
    import time

    cfg = tiny_config(tiny_suite, log_every=2, checkpoint_every=1000)
    procs = spawn_ranks(
        [
            sys.executable,
            "-m",
            "largemeta",
            "train",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "100000",
            *sets(cfg),
        ]
    )
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            if time.time() > deadline or procs[0].poll() is not None:
                pytest.fail(f"training did not start: {procs[0].communicate(timeout=30)[1][-2000:]}")
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        _, err = procs[0].communicate(timeout=90)
        assert time.time() - killed < 60
        assert procs[0].returncode == 3, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert "another rank died or stopped responding" in last and "Traceback" not in err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_run_with_a_killed_rank_resumes_on_two_ranks_and_on_one(tiny_suite, tiny_config, tmp_path):
    """kill -9 one of 2 ranks mid-run; the survivor leaves; the last checkpoint resumes on 2 ranks or 1
    and ends with the φ of an uninterrupted run."""
    import shutil
    import signal
    import time

    cfg = tiny_config(tiny_suite, log_every=2, checkpoint_every=4)
    command(["train", "--out", str(tmp_path / "straight"), "--steps", "40", *sets(cfg)], timeout=240)
    procs = spawn_ranks(
        [
            sys.executable,
            "-m",
            "largemeta",
            "train",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "40",
            *sets(cfg),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        ckpt = tmp_path / "run" / "checkpoint.json"
        deadline = time.time() + 120
        while not ckpt.exists():
            if time.time() > deadline or procs[0].poll() is not None:
                pytest.fail("no checkpoint appeared")
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        procs[0].communicate(timeout=90)
        assert procs[0].returncode != 0 or read_all(tmp_path / "run")["step"] == 40
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    step = read_all(tmp_path / "run")["step"]
    assert step % 4 == 0 and step >= 4
    shutil.copytree(tmp_path / "run", tmp_path / "run1")
    command(["train", "--resume", str(tmp_path / "run"), "--steps", "40"], nproc=2, timeout=240)
    command(["train", "--resume", str(tmp_path / "run1"), "--steps", "40"], timeout=240)
    assert_close(phi(tmp_path / "straight"), phi(tmp_path / "run"))
    assert_close(phi(tmp_path / "straight"), phi(tmp_path / "run1"))


def test_leave_flushes_output_and_exits_with_the_code():
    code = (
        "import sys; from largemeta.train.distributed import leave; "
        "print('out', end=''); print('err', end='', file=sys.stderr); leave(7)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (7, "out", "err")


def test_a_two_rank_command_ends_through_leave(tiny_suite, tiny_config, tmp_path):
    """A torchrun process of the CLI joins a group, so it skips interpreter finalization: an atexit hook set
    by the command's process would run on a normal exit and does not here (what stops Gloo's threads from
    aborting a finished run)."""
    cfg = tiny_config(tiny_suite, steps=2)
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import atexit, os, runpy, sys\n"
        "mark = os.path.join(os.environ['HOOK_DIR'], 'atexit-' + os.environ['RANK'])\n"
        "atexit.register(lambda: open(mark, 'w'))\n"
        "sys.argv = ['largemeta', *sys.argv[1:]]\n"
        "runpy.run_module('largemeta', run_name='__main__')\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(hook)]
    cmd += ["train", "--out", str(tmp_path / "run"), "--steps", "2", *sets(cfg)]
    out = subprocess.run(cmd, env=env(HOOK_DIR=str(tmp_path)), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint.json").exists()
    assert not list(tmp_path.glob("atexit-*"))
