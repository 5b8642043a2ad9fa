"""Resume notices code it did not train with: the checkpoint records the body's source (a file's sha256, a
module's file and version); a resume whose body code changed is refused in one line, or continued with
--allow-model-change, which the run records.

A real file edited between two real runs of the command line.
"""

import json

import pytest

from cli_runs import sets, tree
from largemeta.cli import main

BODY = """import torch.nn as nn


def body(in_channels=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.{act}(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
"""


@pytest.fixture
def file_body_run(tiny_suite, tiny_config, tmp_path, capsys):
    body = tmp_path / "body.py"
    body.write_text(BODY.format(act="ReLU"))
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, model=f"{body}:body", checkpoint_every=6)
    assert main(["train", "--out", str(run), "--steps", "6", *sets(cfg)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return body, run


def test_a_changed_body_file_is_refused_on_resume(file_body_run, capsys):
    body, run = file_body_run
    recorded = json.loads((run / "checkpoint.json").read_text())["info"]["identity"]["model_source"]
    assert recorded["file"] == str(body.resolve()) and len(recorded["sha256"]) == 64
    body.write_text(BODY.format(act="Tanh"))  # same shapes, other ops
    before = tree(run, locks=False)
    code = main(["train", "--resume", str(run), "--steps", "12"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "is not the code this run was trained with" in err and "--allow-model-change" in err, err
    assert str(body.resolve()) in err
    assert tree(run, locks=False) == before


def test_an_allowed_body_change_is_recorded(file_body_run, capsys):
    body, run = file_body_run
    body.write_text(BODY.format(act="Tanh"))
    assert main(["train", "--resume", str(run), "--steps", "12", "--allow-model-change"]) == 0
    for identity in (
        json.loads((run / "run.json").read_text()),
        json.loads((run / "checkpoint.json").read_text())["info"]["identity"],
    ):
        (change,) = identity["model_changes"]
        assert change["step"] == 6 and change["from"]["sha256"] != change["to"]["sha256"]
        assert identity["model_source"] == change["to"]
    # the new code is now the run's: a plain resume continues
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "18"]) == 0, capsys.readouterr().err


def test_allow_model_change_without_resume_is_refused(tiny_suite, tiny_config, tmp_path, capsys):
    cfg = tiny_config(tiny_suite)
    code = main(["train", "--out", str(tmp_path / "new"), "--allow-model-change", *sets(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-model-change goes with --resume" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_a_changed_module_is_refused_on_resume(tiny_suite, tiny_config, tmp_path, capsys, monkeypatch):
    import sys

    (tmp_path / "lib").mkdir()
    module = tmp_path / "lib" / "edited_body_module.py"
    module.write_text(BODY.format(act="ReLU"))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.delitem(sys.modules, "edited_body_module", raising=False)
    run = tmp_path / "run"
    cfg = tiny_config(tiny_suite, model="edited_body_module:body", checkpoint_every=6)
    try:
        assert main(["train", "--out", str(run), "--steps", "6", *sets(cfg)]) == 0
        source = json.loads((run / "run.json").read_text())["model_source"]
        assert source["module"] == "edited_body_module" and len(source["sha256"]) == 64
        module.write_text(BODY.format(act="Tanh"))
        capsys.readouterr()
        code = main(["train", "--resume", str(run), "--steps", "12"])
        err = capsys.readouterr().err
        assert code == 2 and "is not the code this run was trained with" in err, err
    finally:
        sys.modules.pop("edited_body_module", None)
