"""A disk that refuses a write during a sharded save under torchrun: every rank says so in one line (not a
lost peer, no traceback), the temporary folder is removed (a full disk does not stay full of a checkpoint
that will never be used) and the previous checkpoint is intact and resumes.

Real torchrun ranks under a real file-size limit (RLIMIT_FSIZE: a write past it fails as on a full disk, and
works without privileges, unlike mounting a small file system).
"""

import resource
import signal
import subprocess
import sys

import pytest

from checkpoint_edits import read_all
from cli_runs import env, sets

pytestmark = pytest.mark.distributed

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def limited(max_bytes):
    def start():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return start


def test_a_full_disk_during_a_sharded_save_is_one_line_and_leaves_nothing(tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, width=64, checkpoint_every=4, log_every=2)  # shards of about 300 KB
    run = tmp_path / "run"
    first = subprocess.run(
        [*TORCHRUN, "-m", "largemeta", "train", "--out", str(run), "--steps", "4", *sets(cfg)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run / "checkpoint.json").read_bytes()
    out = subprocess.run(
        [*TORCHRUN, "-m", "largemeta", "train", "--resume", str(run), "--steps", "8"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited(100_000),
    )
    lines = [line for line in out.stderr.splitlines() if line.startswith("largemeta: error:")]
    assert len(lines) == 2 and all("cannot write checkpoint" in line for line in lines), out.stderr[-3000:]
    assert "is the disk full?" in lines[0] and "the previous checkpoint is intact" in lines[0]
    assert "another rank died" not in out.stderr and "[rank0]: Traceback" not in out.stderr, out.stderr[
        -3000:
    ]
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == [
        "checkpoint-00000004",
        "checkpoint.json",
    ]
    assert (run / "checkpoint.json").read_bytes() == before
    assert read_all(run)["step"] == 4
