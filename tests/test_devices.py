"""One device rule for every command: ``auto`` (CUDA, then MPS, then CPU) by default, a bad or absent device
refused in one line with exit 2 before any work, and an experiment trains and fine-tunes on its device (its
run folders' config.json records the device).

Where a test needs a machine it is not on (CUDA, MPS, several GPUs), it patches torch's availability checks:
that exercises the resolution and the refusals, nothing that runs on the device."""

import json
import subprocess
import sys

import pytest
import torch

from cli_runs import env, sets
from largemeta import devices
from largemeta.cli import main
from largemeta.errors import UserError
from largemeta.experiments import EXPERIMENTS

VALID = "auto, cpu, cuda, cuda:N, mps"


@pytest.fixture
def machine(monkeypatch):
    """``machine(gpus=0, mps=False)``: what torch reports about this machine, patched."""

    def set_up(gpus: int = 0, mps: bool = False) -> list:
        chosen: list = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        return chosen

    return set_up


@pytest.mark.parametrize(
    ("gpus", "mps", "expected"),
    [(2, True, "cuda:0"), (1, False, "cuda:0"), (0, True, "mps"), (0, False, "cpu")],
)
def test_auto_is_cuda_then_mps_then_cpu(machine, gpus, mps, expected):
    chosen = machine(gpus=gpus, mps=mps)
    assert str(devices.resolve_device("auto")) == expected
    assert chosen == ([torch.device(expected)] if gpus else [])  # CUDA's current device is the one chosen


def test_cuda_is_this_processs_gpu_and_cuda_n_is_checked_against_the_count(machine, monkeypatch):
    machine(gpus=2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert str(devices.resolve_device("cuda")) == "cuda:1"  # torchrun's local rank, modulo the GPUs
    assert str(devices.resolve_device("cuda:1")) == "cuda:1"
    with pytest.raises(UserError) as err:
        devices.resolve_device("cuda:7", what="--device")
    assert str(err.value) == (
        "--device is 'cuda:7', but this machine has 2 CUDA devices "
        "(valid here: auto, cpu, cuda, cuda:0..cuda:1)"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", f"--device must be one of {VALID} (auto: CUDA, then MPS, then CPU), got 'gpu'"),
        ("tpu", f"--device must be one of {VALID} (auto: CUDA, then MPS, then CPU), got 'tpu'"),
        ("cuda:", "got 'cuda:'"),
        ("CPU", "got 'CPU'"),
        ("cuda", "--device is 'cuda', but CUDA is not available here (valid here: auto, cpu)"),
        ("cuda:0", "--device is 'cuda:0', but CUDA is not available here (valid here: auto, cpu)"),
        ("mps", "--device is 'mps', but MPS is not available here (valid here: auto, cpu)"),
    ],
)
def test_a_bad_or_absent_device_is_one_line_naming_it_and_what_is_valid(machine, name, message):
    machine(gpus=0, mps=False)
    with pytest.raises(UserError) as err:
        devices.resolve_device(name, what="--device")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_config_key_follows_the_same_rule(tiny_suite, tiny_config):
    from largemeta.train.config import from_mapping

    assert from_mapping(tiny_config(tiny_suite, device="mps")).device == "mps"  # a name: valid anywhere
    with pytest.raises(UserError, match=r"config key 'device' must be one of auto, cpu, cuda, cuda:N, mps"):
        from_mapping(tiny_config(tiny_suite, device="gpu"))


def commands(tmp_path, suite, cfg: dict) -> dict[str, list[str]]:
    """Every command that runs on a device, with arguments that would otherwise work (no device key in the
    config: --device decides)."""
    flags = sets({k: v for k, v in cfg.items() if k != "device"})
    config = tmp_path / "c.toml"
    config.write_text("")
    out = {
        "train": ["train", "--out", str(tmp_path / "train"), "--steps", "2", *flags],
        "evaluate": ["evaluate", "--init", "scratch", "--suite", str(suite), "--steps", "2", "--seeds", "1"],
        "demo": ["demo", "--out", str(tmp_path / "demo"), "--steps", "2"],
    }
    for kind in EXPERIMENTS:
        extra = ["--init", "scratch"] if kind == "pretrained" else []
        out[f"experiment {kind}"] = [
            "experiment",
            kind,
            "--config",
            str(config),
            "--out",
            str(tmp_path / kind),
        ]
        out[f"experiment {kind}"] += [*extra, "--steps", "2", "--eval-steps", "2", "--seeds", "1", *flags]
    out["evaluate"] += ["--out", str(tmp_path / "evaluate")]
    return out


@pytest.mark.parametrize("device", ["gpu", "tpu", "cuda", "mps", "cuda:7"])
def test_every_command_refuses_a_bad_device_in_one_line_before_any_work(
    tiny_suite, tiny_config, tmp_path, capsys, machine, device
):
    machine(gpus=0, mps=False)
    for name, argv in commands(tmp_path, tiny_suite, tiny_config(tiny_suite)).items():
        assert main([*argv, "--device", device]) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("largemeta: error: --device "), (name, captured.err)
        assert repr(device) in lines[0] and "auto" in lines[0], (name, lines[0])
        assert captured.out == ""
    suite_files = {p.name for p in tmp_path.glob("task*.npz")} | {"tiny.toml"}
    assert {p.name for p in tmp_path.iterdir()} == suite_files | {"c.toml"}  # nothing written, not a folder


def test_a_bad_device_is_one_line_in_a_real_process(tmp_path):
    """``evaluate --device gpu`` printed a traceback and an experiment trained before failing: now both are
    refused at once, one line, exit 2."""
    for argv in (
        ["evaluate", "--init", "scratch", "--tasks", "mnist", "--device", "gpu"],
        ["experiment", "convergence", "--out", str(tmp_path / "E"), "--device", "gpu"],
        ["demo", "--out", str(tmp_path / "demo"), "--device", "tpu"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "largemeta", *argv], env=env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr and "must be one of auto" in done.stderr
    assert not any(tmp_path.iterdir())


def test_the_defaults_are_auto_everywhere():
    from largemeta.cli import build_parser
    from largemeta.train.config import TrainConfig

    parser = build_parser()
    assert parser.parse_args(["evaluate", "--init", "scratch"]).device == "auto"
    assert TrainConfig().device == "auto"
    # train, the experiments and the demo take the config's device (auto) unless --device is given
    assert parser.parse_args(["train", "--out", "x"]).device is None
    assert parser.parse_args(["demo"]).device is None
    for kind in EXPERIMENTS:
        extra = ["--init", "y"] if kind == "pretrained" else []
        assert parser.parse_args(["experiment", kind, "--out", "x", *extra]).device is None


def test_an_experiment_trains_and_fine_tunes_on_its_device_and_records_it(
    tiny_suite, tiny_config, tmp_path, capsys
):
    """The config says auto; --device cpu decides where both the training and the meta-test run, and the run
    folder's config.json and the results record the device as resolved. Without --device the config's
    auto is resolved on this machine and recorded the same way."""
    cfg = {k: v for k, v in tiny_config(tiny_suite, checkpoint_every=100).items() if k != "device"}
    (tmp_path / "c.toml").write_text('device = "auto"\n')
    argv = ["experiment", "convergence", "--config", str(tmp_path / "c.toml"), "--algos", "reptile"]
    argv += ["--steps", "4", "--milestones", "1", "--eval-steps", "2", "--seeds", "1", *sets(cfg)]
    assert main([*argv, "--out", str(tmp_path / "E"), "--device", "cpu"]) == 0
    header = next(
        line for line in capsys.readouterr().err.splitlines() if "experiment convergence -> " in line
    )
    assert "| device cpu |" in header  # where it runs
    assert json.loads((tmp_path / "E" / "reptile" / "config.json").read_text())["device"] == "cpu"
    assert json.loads((tmp_path / "E" / "results.json").read_text())["config"]["device"] == "cpu"

    assert main([*argv, "--out", str(tmp_path / "A")]) == 0
    here = str(devices.resolve_device("auto"))
    assert json.loads((tmp_path / "A" / "reptile" / "config.json").read_text())["device"] == here
    assert json.loads((tmp_path / "A" / "results.json").read_text())["config"]["device"] == here


def test_the_library_experiments_take_the_same_device_for_both_halves(
    tiny_suite, tiny_config, tmp_path, monkeypatch
):
    """convergence with Common(device=...) moves the training too (it used to move only the meta-test)."""
    from largemeta.experiments import Common, EvalSettings, convergence
    from largemeta.train.config import from_mapping

    seen = []
    real = EvalSettings.score
    monkeypatch.setattr(
        EvalSettings,
        "score",
        lambda self, *a, device, **k: seen.append(device) or real(self, *a, device=device),
    )
    cfg = from_mapping(tiny_config(tiny_suite, device="auto", steps=2, checkpoint_every=100))
    settings = EvalSettings(steps=2, seeds=1, batch_size=8)
    convergence(cfg, Common(["cts"], tmp_path / "E", settings, device="cpu"), fractions=(1.0,))
    assert seen == ["cpu"]
    assert json.loads((tmp_path / "E" / "cts" / "config.json").read_text())["device"] == "cpu"
    with pytest.raises(UserError, match="must be one of auto"):
        convergence(cfg, Common(["cts"], tmp_path / "F", settings, device="gpu"), fractions=(1.0,))
    assert not (tmp_path / "F").exists()
