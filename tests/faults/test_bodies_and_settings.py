"""Clumsy bodies and settings are one line before anything is written: a factory that calls sys.exit, a body
with a frozen, unused, integer or complex parameter or none at all; a factory's prints keep ``train --json``
parseable; a bad ``LARGEMETA_COLLECTIVE_TIMEOUT``; a hint never names a flag the command lacks.

Real bodies in real files, run through the command line.
"""

import json
import subprocess
import sys

import pytest
from PIL import Image

from cli_runs import env, one_line, sets
from largemeta.cli import main

BODIES = """import sys
import torch
import torch.nn as nn


def layers(c):
    return [nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def exits(in_channels=1):
    sys.exit(0)


def frozen(in_channels=1):
    body = nn.Sequential(*layers(in_channels))
    body[0].bias.requires_grad_(False)
    return body


class Spare(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(*layers(c))
        self.spare = nn.Linear(3, 3)

    def forward(self, x):
        return self.body(x)


def unused(in_channels=1):
    return Spare(in_channels)


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def no_parameters(in_channels=1):
    return Mean()


def only_buffers(in_channels=1):
    body = Mean()
    body.register_buffer("scale", torch.ones(1))
    return body


def integer(in_channels=1):
    body = nn.Sequential(*layers(in_channels))
    body.count = nn.Parameter(torch.zeros(1, dtype=torch.int64), requires_grad=False)
    return body


def complex_valued(in_channels=1):
    body = nn.Sequential(*layers(in_channels))
    body.z = nn.Parameter(torch.zeros(4, dtype=torch.complex64))
    return body


def chatty(in_channels=1):
    print("building my body")
    return nn.Sequential(*layers(in_channels))
"""


@pytest.fixture
def bodies(tmp_path):
    path = tmp_path / "bodies.py"
    path.write_text(BODIES)
    return path


@pytest.mark.parametrize(
    "factory, needle",
    [
        ("exits", "its code called sys.exit(0)"),
        ("frozen", "parameter '0.bias' has requires_grad=False"),
        ("unused", "parameter 'spare.weight' (and 1 more) is not used by the body's forward"),
        ("no_parameters", "has no parameters (none)"),
        ("only_buffers", "has no parameters (only buffers)"),
        ("integer", "parameter 'count' is int64"),
        ("complex_valued", "parameter 'z' is complex64"),
    ],
)
def test_a_body_that_cannot_be_meta_trained_is_one_line_and_no_folder(
    bodies, factory, needle, tiny_suite, tiny_config, tmp_path, capsys
):
    cfg = tiny_config(tiny_suite, model=f"{bodies}:{factory}")
    code = main(["train", "--out", str(tmp_path / "run"), "--steps", "4", *sets(cfg)])
    one_line(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "run").exists()  # nothing half made


def test_a_factory_that_prints_keeps_train_json_parseable(bodies, tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite, model=f"{bodies}:chatty")
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(tmp_path / "run"), "--steps", "4", "--json"]
        + sets(cfg),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["step"] == 4
    assert "building my body" in out.stderr


# one value in the fast tier; each is a process of its own
@pytest.mark.parametrize(
    "value", ["abc", *(pytest.param(v, marks=pytest.mark.slow) for v in ("0", "-5", "1.5"))]
)
def test_a_bad_collective_timeout_is_one_line(value, tiny_suite, tiny_config, tmp_path):
    cfg = tiny_config(tiny_suite)
    out = subprocess.run(
        [sys.executable, "-m", "largemeta", "train", "--out", str(tmp_path / "run"), "--steps", "2"]
        + sets(cfg),
        env=env(LARGEMETA_COLLECTIVE_TIMEOUT=value),
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_line(out.returncode, out.stderr, "LARGEMETA_COLLECTIVE_TIMEOUT must be a whole number", repr(value))
    assert not (tmp_path / "run").exists()


def test_a_bad_image_hint_names_a_command_that_has_the_flag(tmp_path, capsys):
    root = tmp_path / "pictures"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("L", (16, 16), color=40 * c + i).save(root / f"c{c}" / f"{i}.png")
    (root / "c0" / "broken.png").write_bytes(b"\x89PNG not really")
    suite = tmp_path / "suite.toml"
    suite.write_text(
        f'name = "s"\n[defaults]\nimage_size = 16\nchannels = 1\n'
        f'[[meta_train]]\nname = "a"\ndataset = "{root}"\n'
    )
    cfg = {"suite": str(suite), "width": 4, "batch_size": 4, "k": 2, "device": "cpu", "eval_batches": 0}
    cfg["data_dir"] = str(tmp_path / "cache")
    code = main(["train", "--out", str(tmp_path / "run"), "--steps", "2", *sets(cfg)])
    err = capsys.readouterr().err
    one_line(code, err, "broken.png", "largemeta data info FOLDER --skip-bad-images")
    assert "pass --skip-bad-images" not in err  # train has no such flag
    # the command it names does have it
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert main(["data", "info", str(root), "--skip-bad-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
