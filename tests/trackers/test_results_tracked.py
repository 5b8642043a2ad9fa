"""evaluate and the experiments: a header, progress off a terminal, log.txt in the results folder, and their
results in the trackers (MLflow's sqlite store, read back)."""

import json
import re

import numpy as np
import pytest

from cli_runs import sets
from largemeta.cli import main

mlflow = pytest.importorskip("mlflow")


def runs_of(store):
    client = mlflow.tracking.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("largemeta")
    return client, client.search_runs([experiment.experiment_id])


def test_evaluate_prints_a_header_and_progress_keeps_log_txt_and_logs_its_results(
    tmp_path, capsys, monkeypatch
):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "t.npz",
        x=rng.integers(0, 255, (24, 16, 16), dtype=np.uint8),
        y=np.arange(24) % 3,
        x_test=rng.integers(0, 255, (9, 16, 16), dtype=np.uint8),
        y_test=np.arange(9) % 3,
    )
    out = tmp_path / "ev"
    argv = ["evaluate", "--init", "scratch", "--tasks", str(tmp_path / "t.npz"), "--image-size", "16"]
    argv += ["--steps", "3", "--seeds", "2", "--batch-size", "8", "--out", str(out), "--trackers", "mlflow"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout: the JSON alone
    ours = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # MLflow prints lines of its own too
    lines = [line for line in captured.err.splitlines() if ours.match(line)]
    assert re.search(r"evaluate scratch -> .*ev \| device cpu", lines[0])
    assert "targets 1 (t)" in lines[0] and "fine-tuning 3 steps x 2 seeds" in lines[0]
    progress = [line for line in lines if "fine-tuning step" in line]
    assert [re.search(r"step (\d+)/6", p)[1] for p in progress] == ["3", "6"]  # a line per target and seed
    assert (out / "log.txt").read_text().splitlines() == lines
    client, found = runs_of(store)
    assert len(found) == 1 and found[0].data.params["command"] == "evaluate"
    assert found[0].data.metrics["mean_accuracy"] == pytest.approx(result["mean_accuracy"])
    assert found[0].data.metrics["tasks/t/ci95"] == pytest.approx(result["tasks"]["t"]["ci95"])


def test_an_experiment_logs_each_run_and_its_results_and_keeps_log_txt(
    tiny_suite, tiny_config, tmp_path, capsys, monkeypatch
):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    cfg = tiny_config(tiny_suite, checkpoint_every=1000, log_every=4, trackers="mlflow")
    out = tmp_path / "E"
    argv = ["experiment", "convergence", "--algos", "scratch,cts", "--steps", "8", "--milestones", "0.5,1"]
    argv += ["--eval-steps", "2", "--seeds", "1", "--eval-batch-size", "8", "--out", str(out), *sets(cfg)]
    (tmp_path / "c.toml").write_text("")
    assert main([*argv, "--config", str(tmp_path / "c.toml")]) == 0
    err = capsys.readouterr().err
    assert f"experiment convergence -> {out}" in err.splitlines()[0] and "algos scratch,cts" in err
    assert "step 8/8" in err and "fine-tuning step" in err
    assert "experiment convergence" in (out / "log.txt").read_text()
    assert "step 8/8" in (out / "cts" / "log.txt").read_text()
    client, found = runs_of(store)
    by_name = {r.info.run_name: r for r in found}
    assert set(by_name) == {"cts", "E"}  # the trained run and the experiment's results
    results = json.loads((out / "results.json").read_text())
    key = "algorithms/cts/accuracy/8/mean_accuracy"
    assert by_name["E"].data.metrics[key] == pytest.approx(
        results["algorithms"]["cts"]["accuracy"]["8"]["mean_accuracy"]
    )
    history = client.get_metric_history(by_name["cts"].info.run_id, "mean_loss")
    assert [m.step for m in history] == [4, 8]  # trained to 4, then resumed to 8: once each
