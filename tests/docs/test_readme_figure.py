"""``scripts/readme_figure.py``: the README's figure and Results block are read from a results.json."""

from __future__ import annotations

import json
import subprocess
import sys

from doc_blocks import REPO
from PIL import Image


def _results(folder, done=True):
    """A finished (or not) convergence results folder: 3 algorithms, 2 milestones, 2 targets x 2 seeds."""

    def accuracy(per_seed):
        task = {"mean_accuracy": sum(per_seed) / 2, "ci95": 0.0, "per_seed": per_seed, "curve": {}}
        return {
            "steps": 20,
            "seeds": 2,
            "tasks": {"t1": task, "t2": task},
            "mean_accuracy": task["mean_accuracy"],
        }

    result = {
        "experiment": "convergence",  # the demo's, too
        "milestones": [10, 20],
        "complete": done,
        "eval": {"steps": 20, "seeds": 2},
        "environment": {"largemeta": "9.9", "torch": "2.x", "device": "cpu"},
        "algorithms": {
            a: {
                "accuracy": {"10": accuracy([0.2 + d, 0.3 + d]), "20": accuracy([0.3 + d, 0.4 + d])},
                "loss": [],
            }
            for a, d in (("cts", 0.1), ("reptile", 0.0), ("scratch", -0.05))
        },
    }
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(result))
    return folder


def _run(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_figure.py"), *map(str, args)],
        capture_output=True,
        text=True,
    )


def test_figure_and_markdown_come_from_the_results(tmp_path):
    out = tmp_path / "demo.png"
    done = _run(_results(tmp_path / "demo"), "--out", out, "--markdown")
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert image.size[0] > 500
    assert "2 held-out targets × 2 fine-tuning seeds, 20 fine-tuning steps" in done.stdout
    assert "largemeta 9.9, torch 2.x, cpu" in done.stdout
    assert "| cts | **35.0 ± 63.5†** | **45.0 ± 63.5†** |" in done.stdout  # the best bold; 2 seeds flagged
    assert "† an interval over 2 values" in done.stdout
    lead = "At 20 steps, paired over the 4 units: cts − reptile at 20 steps: +10.0 points, 95 % CI ["
    assert lead in done.stdout
    assert "reptile − scratch" not in done.stdout  # the README leads with the first algorithm's verdicts


def test_an_unfinished_demo_is_refused(tmp_path):
    done = _run(_results(tmp_path / "demo", done=False), "--out", tmp_path / "x.png")
    assert done.returncode != 0 and "not a finished demo" in done.stderr
    assert not (tmp_path / "x.png").exists()
