"""The other commands on the test device: evaluate (a run folder and its export), an experiment, the demo,
and SIGTERM → checkpoint → exit 75 → ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from gpu_device import DEVICE, ON_CUDA, RESOLVED, assert_resume_matches, needs_cuda
from gpu_runs import assert_trained, phi, train

from checkpoint_edits import read_all
from cli_runs import env, sets
from largemeta.cli import main
from largemeta.errors import PREEMPTED_EXIT

pytestmark = pytest.mark.gpu


def evaluate_checked(init, suite, out, capsys) -> dict:
    argv = ["evaluate", "-q", "--init", str(init), "--suite", str(suite), "--steps", "4", "--seeds", "2"]
    capsys.readouterr()
    assert main([*argv, "--batch-size", "8", "--device", DEVICE, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "results.json").read_text())
    assert (
        saved["environment"]["device"].endswith(f"({RESOLVED})") or saved["environment"]["device"] == RESOLVED
    )
    assert saved["mean_accuracy"] == printed["mean_accuracy"]
    assert 0.0 <= printed["mean_accuracy"] <= 1.0
    return printed


def test_evaluate_a_run_and_its_export_on_the_device(run_config, tiny_suite, tmp_path, capsys):
    """φ fine-tuned on the device from the run folder and from its export: the same φ, the same seeds."""
    cfg = run_config(steps=8, checkpoint_every=8, log_every=4)
    train(cfg, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "phi.safetensors")]) == 0
    a = evaluate_checked(tmp_path / "run", tiny_suite, tmp_path / "E1", capsys)
    b = evaluate_checked(tmp_path / "phi.safetensors", tiny_suite, tmp_path / "E2", capsys)
    assert set(a["tasks"]) == {"target"}
    for name in a["tasks"]:
        # cuDNN may not repeat itself bit for bit; 2 seeds x 4 steps of 8 images leave accuracy steps of 1/n
        assert abs(a["tasks"][name]["mean_accuracy"] - b["tasks"][name]["mean_accuracy"]) <= 0.1


def test_an_experiment_trains_and_fine_tunes_on_the_device(run_config, tmp_path, capsys):
    cfg = {k: v for k, v in run_config(checkpoint_every=100).items() if k != "device"}
    (tmp_path / "c.toml").write_text('device = "auto"\n')
    argv = ["experiment", "convergence", "-q", "--config", str(tmp_path / "c.toml"), "--algos", "cts,reptile"]
    argv += ["--steps", "8", "--milestones", "0.5,1", "--eval-steps", "2", "--seeds", "1", *sets(cfg)]
    assert main([*argv, "--out", str(tmp_path / "E"), "--device", DEVICE]) == 0
    results = json.loads((tmp_path / "E" / "results.json").read_text())
    assert results["config"]["device"] == RESOLVED
    assert RESOLVED in results["environment"]["device"]
    for algo in ("cts", "reptile"):
        assert json.loads((tmp_path / "E" / algo / "config.json").read_text())["device"] == RESOLVED
        accuracy = results["algorithms"][algo]["accuracy"]
        assert len(accuracy) == 2, accuracy  # both milestones scored


def _offline_cached() -> bool:
    from largemeta.data.sources.datasets import is_cached
    from largemeta.data.store.cache import data_dir

    return all(is_cached(name, data_dir()) for name in ("mnist", "fashion_mnist", "quickdraw"))


def test_the_demo_on_the_device(tmp_path, capsys):
    """``demo --steps`` small: training and fine-tuning on the device, recorded as such. Needs the offline
    datasets in the cache (LARGEMETA_DATA_DIR): a GPU machine without network cannot fetch them."""
    if not ON_CUDA and os.environ.get("LARGEMETA_TEST_DEMO") != "1":
        pytest.skip(
            "the demo's fixed meta-test (21,600 fine-tuning steps) takes about an hour on a CPU; "
            "LARGEMETA_TEST_DEMO=1 runs it"
        )
    if not _offline_cached():
        pytest.skip(
            "the offline suite's datasets are not cached: largemeta data fetch mnist fashion_mnist quickdraw"
        )
    assert (
        main(["demo", "-q", "--out", str(tmp_path / "demo"), "--steps", "100", "--device", DEVICE, "--json"])
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["config"]["device"] == RESOLVED and RESOLVED in results["environment"]["device"]
    assert set(shown["algorithms"]) == {"cts", "reptile", "leap", "scratch"}
    assert all(0 <= acc <= 100 for a in shown["algorithms"].values() for acc in a.values())


def sigterm_then_resume(cfg: dict, tmp_path, name: str) -> None:
    """A real run in its own process, SIGTERM once it has logged twice: exit 75 with a checkpoint at the
    step it stopped; ``--resume`` finishes it; φ against straight runs (assert_resume_matches)."""
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "largemeta", "train", "-q", "--out", str(run), "--steps", str(cfg["steps"])]
    proc = subprocess.Popen(
        [*cmd, *sets(cfg)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"the run never logged twice: {proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT, err
    step = read_all(run)["step"]
    assert 2 <= step < cfg["steps"], step
    assert f"checkpoint written to '{run}/checkpoint.json'" in err and "Traceback" not in err
    train(cfg, run, resume=True)
    assert_trained(run, cfg, RESOLVED)
    assert_resume_matches(phi(tmp_path / "a"), phi(tmp_path / "b"), phi(run), name)


# long enough that the signal lands mid-run (a tiny step takes milliseconds on a GPU); no checkpoint is due
# before the end: all that survives the signal is what the signal itself saves
SIGTERM_STEPS = 600 if ON_CUDA else 300


def test_sigterm_checkpoints_exits_75_and_resumes_on_the_device(run_config, tmp_path):
    cfg = run_config(steps=SIGTERM_STEPS, checkpoint_every=10**6, log_every=2, k=4, eval_batches=0)
    sigterm_then_resume(cfg, tmp_path, "sigterm_loop")


@needs_cuda
def test_sigterm_under_the_cuda_graph(run_config, tmp_path):
    cfg = run_config(
        steps=SIGTERM_STEPS, checkpoint_every=10**6, log_every=2, k=4, eval_batches=0, executor="cuda_graph"
    )
    sigterm_then_resume(cfg, tmp_path, "sigterm_cuda_graph")
