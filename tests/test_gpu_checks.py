"""``benchmarks/gpu_checks.sh --dry-run`` on the CPU: every section of the GPU run planned and each of its
steps run at tiny size, so a moved gpu test, a renamed flag or a broken benchmark fails here, not on the GPU
(which comes for minutes, maybe once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runs import env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"
SECTIONS = ["suite", "meta_step", "stream", "science"]


@pytest.mark.slow
def test_the_dry_run_plans_every_section_and_at_least_25_gpu_tests(tmp_path):
    out = tmp_path / "checks"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), "--dry-run"],
        env=env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    assert [s["section"] for s in summary["sections"]] == SECTIONS
    assert all(s["status"] == "ok" for s in summary["sections"]), summary
    counts = json.loads((out / "suite" / "counts.json").read_text())
    assert counts["collected"] >= 25, counts
    assert {f"tests/gpu/test_gpu_{a}.py" for a in ("train", "commands", "data", "api", "execution")} <= set(
        counts["files"]
    )
    meta = json.loads((out / "meta_step" / "meta_step.json").read_text())
    assert {"meta_step", "cts_overhead", "memory_vs_k"} <= set(meta)
    assert meta["meta_step"]["loop"]["ratio_vs_loop"] == 1.0
    stream = json.loads((out / "stream" / "stream_vs_device.json").read_text())
    assert set(stream["stream_over_device"]) == {"stream_1_workers"}
    assert stream["same_phi_as_device"] == {"stream_1_workers": True}  # a CPU draws the same batches
    science = json.loads((out / "science" / "science.json").read_text())
    assert science["ok"] and science["tiny"]
    for algo in ("cts", "reptile"):
        part = science["parts"][algo]
        assert part["returncode"] == 0 and part["steps_done"] == science["steps_per_algorithm"] == 4
        assert part["loss_curve"] and all(isinstance(loss, float) for _, loss in part["loss_curve"])
    assert set(science["parts"]["evaluate"]) == {"cts", "reptile", "scratch"}
    assert all(0 <= e["mean_accuracy"] <= 1 for e in science["parts"]["evaluate"].values())
    assert science["parts"]["cts"]["meta_updates"] == 4 and science["parts"]["reptile"]["meta_updates"] == 2


def test_the_script_runs_the_gpu_suite_it_is_given_and_that_suite_holds_25_tests():
    """The default tier's share of the dry run (which is slow): the script's suite section selects the gpu
    marker over tests/, and tests/gpu alone holds at least 25 gpu tests."""
    text = SCRIPT.read_text()
    assert text.count("-m pytest tests -m gpu ") == 2  # the dry run collects what the GPU run runs
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/gpu",
            "-m",
            "gpu",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert len([line for line in done.stdout.splitlines() if "::" in line]) >= 25


def test_a_section_cut_off_does_not_stop_the_next_and_the_exit_code_says_so(tmp_path):
    """Every section capped at 1 s: each is cut off, each still gets its line in the summary, in order, and
    the script exits 1."""
    caps = {f"CAP_{name.upper()}": "1" for name in SECTIONS}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out"), "--dry-run"],
        env=env(PYTHON=sys.executable, **caps),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["section"], s["status"]) for s in summary["sections"]] == [
        (n, "timeout(1s)") for n in SECTIONS
    ]
    assert all((tmp_path / "out" / name / "log.txt").exists() for name in SECTIONS)


def test_the_script_refuses_bad_arguments_in_one_line(tmp_path):
    for argv, message in (
        ([], "usage: bash benchmarks/gpu_checks.sh OUTDIR [--dry-run]"),
        ([str(tmp_path / "a"), "--dryrun"], "unknown option '--dryrun' (valid: --dry-run)"),
        ([str(tmp_path / "a"), str(tmp_path / "b")], "one OUTDIR"),
    ):
        done = subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "a").exists()
