"""What a stopped or partial command leaves: ``evaluate`` stopped by SIGTERM exits 128 + 15 as its help says
(it cannot resume; nothing is written), and ``report`` over an experiment stopped before its first result
draws an empty plot that says so, with no warning from the plotting library.

A real evaluation stopped by a real signal; a real report in a subprocess.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from cli_runs import env
from largemeta.cli import main
from largemeta.files import is_temporary


def test_evaluate_stopped_by_sigterm_exits_143_as_its_help_says(tiny_suite, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "143 by SIGTERM" in capsys.readouterr().out
    out = tmp_path / "ev"
    proc = subprocess.Popen(
        [sys.executable, "-m", "largemeta", "evaluate", "--init", "scratch", "--suite", str(tiny_suite)]
        + ["--steps", "100000", "--seeds", "1", "--batch-size", "8", "--out", str(out)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not out.is_dir():  # claimed: the evaluation is under way
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "largemeta: stopped by SIGTERM", err[-2000:]  # after the header
    assert "Traceback" not in err
    assert not (out / "results.json").exists()
    if out.exists():  # an emptied folder may be left: nothing half written in it
        assert not [p.name for p in out.iterdir() if is_temporary(p.name)]


def test_a_report_over_an_experiment_stopped_before_its_first_result_warns_nothing(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text(
        json.dumps(
            {"experiment": "convergence", "milestones": [10, 20], "algorithms": {"cts": {"accuracy": {}}}}
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "largemeta", "report", str(tmp_path)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "exp" / "convergence_accuracy.png").stat().st_size > 0
