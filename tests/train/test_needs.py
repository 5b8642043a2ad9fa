"""``train --dry-run`` says what a run needs before its first step: datasets, decoded sizes, parameters,
memory per device and, with ``--measure``, hours per device count from a warm-up timed on this machine."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from largemeta.cli import main
from largemeta.train import needs


def test_paper_plan_without_its_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEMETA_OFFLINE", "1")  # the plan fetches nothing: prove it cannot even try
    cache, run = tmp_path / "cache", tmp_path / "run"
    argv = ["train", "--config", "paper", "--dry-run", "--out", str(run), "--set", f"data_dir={cache}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 2.40 GB of hub and registry files, Cars' 1.98 GB, Tiny ImageNet's 248.1 MB zip, QuickDraw's 39.5 GB
    assert f"# datasets: 12, 0 cached, 12 to fetch (download 44.15 GB + sizes unknown) into {cache}" in out
    assert "#   quickdraw_full (meta-test): not cached, 39534.2 MB; sources url:https://storage.goog" in out
    cars = "#   cars (meta-test): not cached, 1976.0 MB; sources hf:tanganke/stanford_cars@9abf6cf7d6dfa7b"
    assert cars in out
    assert f"# to fetch first: largemeta data fetch --suite paper --data-dir {cache}" in out
    assert "#   cifar100: 60,000 images, 0.18 GB (estimated from the registry's count)" in out
    assert "not the data (not cached); nothing written" in out
    assert not run.exists() and not cache.exists()
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["data_ready"] is False and len(plan["datasets"]) == 12
    assert {r["name"] for r in plan["datasets"] if "meta-test" in r["roles"]} == {
        "cars", "quickdraw_full", "flowers102", "pets", "stl10"
    }  # fmt: skip
    peaks = plan["memory"]["peak_bytes_per_device"]
    assert list(peaks) == ["1", "2", "4", "8"] and peaks["1"] > peaks["2"] > peaks["4"] > peaks["8"] > 0
    # cifar100: 60,000 images x 3 x 32² bytes, the registry's count (all 100 classes)
    cifar = next(t for t in plan["task_images"] if t["task"] == "cifar100")
    assert cifar["decoded_bytes"] == 60_000 * 3 * 32**2 and cifar["exact"] is False


def test_measure_times_a_warm_up_and_scales_it(capsys, tmp_path, tiny_suite, tiny_config):
    from cli_runs import sets

    cfg = tiny_config(tiny_suite, steps=1000)
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--steps", "1000", "--dry-run", "--measure", *sets(cfg)]
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    m = plan["measured"]
    assert m["device"] == "cpu" and (m["warmup_steps"], m["timed_steps"]) == (2, 3)
    (t,) = m["seconds_per_step"].values()  # three tasks of one shape: 1 x 16 px
    assert list(m["seconds_per_step"]) == ["1x16px"] and t > 0
    # one run step = one inner step of each task; ranks get tasks round-robin ([0, 2], [1] on two)
    assert m["hours"]["1"] == pytest.approx(1000 * 3 * t / 3600)
    assert m["hours"]["2"] == pytest.approx(1000 * 2 * t / 3600)
    assert list(m["hours"]) == ["1", "2"]  # 4 ranks cannot serve 3 tasks
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# measured on cpu, fp32 (2 warm-up + 3 timed inner steps per image shape, median): 1x16px:" in out
    assert "# hours for 1000 steps (devices: time; inner steps only): 1: " in out and not run.exists()


def test_measure_needs_dry_run(capsys, tmp_path, tiny_suite, tiny_config):
    from cli_runs import sets

    argv = ["train", "--out", str(tmp_path / "r"), "--measure", *sets(tiny_config(tiny_suite))]
    assert main(argv) == 2
    assert "--measure goes with --dry-run" in capsys.readouterr().err


def test_memory_estimate_is_the_documented_sum(capsys, tmp_path, tiny_suite, tiny_config):
    from cli_runs import sets

    argv = ["train", "--out", str(tmp_path / "r"), "--dry-run", "--json", *sets(tiny_config(tiny_suite))]
    assert main(argv) == 0
    mem = json.loads(capsys.readouterr().out)["plan"]["memory"]
    p, act = mem["body_parameters"], mem["activation_bytes"]["16"]
    from largemeta.models import create_model

    assert p == sum(v.numel() for v in create_model("convnet", in_channels=1, width=8).parameters())
    heads = mem["head_parameters"]  # path datasets: classes unknown before loading, no head counted
    assert heads == [0, 0, 0]
    # φ + meta-gradient + meta-optimizer state, then θ + momentum + gradient per task, then one step's
    # activations (no images counted: the tasks are paths, sized once they are read)
    assert mem["peak_bytes_per_device"]["1"] == 3 * p * 4 + 3 * (3 * p * 4) + act
    assert mem["peak_bytes_per_device"]["2"] == 3 * p * 4 + 2 * (3 * p * 4) + act


def test_activation_bytes_sum_every_module_output():
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.device("meta"):
        body = body.to("meta")
    # conv and relu: 2 x (8 x 4 x 10 x 10); pool: 8 x 4 x 1 x 1; flatten: 8 x 4 — fp32
    assert needs.activation_bytes(body, 3, 10, 8) == (2 * 8 * 4 * 100 + 32 + 32) * 4


def test_world_sizes():
    assert needs.world_sizes(8) == [1, 2, 4, 8]
    assert needs.world_sizes(3) == [1, 2]
    assert needs.world_sizes(2) == [1, 2, 4, 8]
    assert needs._ranks(3, 2) == [[0, 2], [1]] and needs._ranks(2, 4) == [[0], [0], [1], [1]]
