"""A side channel that cannot be written does not stop a run: a ``log.txt`` that is a full device, a folder
or a dangling link is one warning line, and the run trains, checkpoints and exits 0 (never a logging traceback
or an undocumented exit code).

Real runs of the command line; ``/dev/full`` is the kernel's always-full device.
"""

import json
import os
from pathlib import Path

import pytest

from cli_runs import sets
from largemeta.cli import main


@pytest.fixture
def run4(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "R"
    cfg = tiny_config(tiny_suite, checkpoint_every=4, log_every=2)
    assert main(["train", "--out", str(run), "--steps", "4", *sets(cfg)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return run


def _break(log: Path, how: str) -> None:
    log.unlink()
    if how == "full":
        log.symlink_to("/dev/full")
    elif how == "folder":
        log.mkdir()
    else:
        log.symlink_to(log.parent / "missing" / "log.txt")


@pytest.mark.parametrize("how", ["full", "folder", "dangling"])
def test_an_unwritable_log_txt_is_one_warning_and_the_run_goes_on(run4, capsys, how):
    if how == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    _break(run4 / "log.txt", how)
    code = main(["train", "--resume", str(run4), "--steps", "8"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert len([line for line in err.splitlines() if "log.txt" in line]) == 1, err
    assert "going on without a log file" in err
    assert json.loads((run4 / "checkpoint.json").read_text())["step"] == 8


def test_a_metrics_jsonl_that_cannot_be_written_is_one_refusal(run4, capsys):
    (run4 / "metrics.jsonl").unlink()
    (run4 / "metrics.jsonl").mkdir()
    code = main(["train", "--resume", str(run4), "--steps", "8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "cannot write" in err and "metrics.jsonl" in err and "nothing was trained" in err
    assert json.loads((run4 / "checkpoint.json").read_text())["step"] == 4
