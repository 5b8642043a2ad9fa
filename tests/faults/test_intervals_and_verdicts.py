"""No interval from one value, no verdict from NaN: one fine-tuning seed reports its mean and says it has no
interval (``"ci95": null``), in the command's output, its results and the report; a comparison whose
difference or interval is not a number draws no verdict.

A real evaluation over a real .npz; the report read from a results file as the experiments write it.
"""

import json
import math
import sys
from pathlib import Path

from largemeta.cli import main
from largemeta.experiments.verdicts import comparisons
from largemeta.report import write_report

sys.path.insert(0, str(Path(__file__).parent.parent / "experiments"))
import fake_results  # noqa: E402


def test_one_seed_has_no_interval(tiny_suite, tmp_path, capsys):
    npz = tiny_suite.parent / "task0.npz"
    argv = ["evaluate", "--init", "scratch", "--tasks", str(npz), "--image-size", "16", "--seeds", "1"]
    argv += ["--steps", "1", "--batch-size", "8", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "E")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "(one seed: no interval)" in out and "± 0.00" not in out, out
    result = json.loads((tmp_path / "E" / "results.json").read_text())
    assert result["tasks"]["task0"]["ci95"] is None
    md = write_report(tmp_path / "E")[0].read_text()
    assert "none (one seed)" in md and "± 0.00" not in md, md


def test_the_report_draws_no_verdict_from_nan(tmp_path):
    folder = fake_results.convergence(tmp_path / "c")
    result = json.loads((folder / "results.json").read_text())
    found = comparisons(result)
    found[0] = {**found[0], "mean_diff": math.nan, "ci95": [math.nan, math.nan]}
    found[1] = {**found[1], "ci95": [math.nan, math.nan]}
    (folder / "results.json").write_text(json.dumps({**result, "comparisons": found}))
    md = write_report(folder)[0].read_text()
    assert "nan" not in md.lower().replace("nan_", ""), [ln for ln in md.splitlines() if "nan" in ln.lower()]
    assert "is not a number" in md and "no verdict" in md
