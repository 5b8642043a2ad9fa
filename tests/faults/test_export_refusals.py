"""φ that travels is checked as it is read and written: an export whose φ tensors are integers, or whose
step is not a number, is refused in one line; exporting a run whose recorded body file is gone says so
and what still works; exporting into a folder that does not exist says so (and writes nothing).

Real runs and real exports, rewritten with safetensors' own writer.
"""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cli_runs import sets
from largemeta import load_phi
from largemeta.cli import main
from largemeta.errors import UserError

BODY = """import torch.nn as nn


def body(in_channels=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
"""


@pytest.fixture
def export(tiny_suite, tiny_config, tmp_path, capsys):
    run = tmp_path / "R"
    assert main(["train", "--out", str(run), "--steps", "2", *sets(tiny_config(tiny_suite))]) == 0
    out = tmp_path / "phi.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out


def _rewrite(path, change_tensors=None, change_meta=None):
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if change_tensors:
        tensors = change_tensors(tensors)
    if change_meta:
        meta = {**meta, **change_meta}
    save_file(tensors, str(path), metadata=meta)


def test_an_export_with_integer_phi_is_refused(export):
    first = next(k for k in load_phi(export)[0] if k.endswith("weight"))
    _rewrite(export, lambda t: {**t, first: t[first].to(torch.int8)})
    with pytest.raises(UserError, match=f"tensor '{first}' is int8, φ's tensors are floating point"):
        load_phi(export)


def test_an_export_whose_step_is_not_a_number_is_refused(export):
    _rewrite(export, change_meta={"step": "twelve"})
    with pytest.raises(UserError, match="'step' metadata 'twelve' is not a whole number"):
        load_phi(export)


def test_export_after_the_body_file_was_deleted_says_what_is_gone(tiny_suite, tiny_config, tmp_path, capsys):
    body = tmp_path / "body.py"
    body.write_text(BODY)
    run = tmp_path / "R"
    cfg = tiny_config(tiny_suite, model=f"{body}:body")
    assert main(["train", "--out", str(run), "--steps", "2", *sets(cfg)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    body.unlink()
    code = main(["export", str(run), "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{str(body)!r}, is gone" in err, err
    assert "load_phi reads it without the code" in err
    assert load_phi(run)[0]  # what still works


def test_export_into_a_missing_folder_says_so(export, tmp_path, capsys):
    target = tmp_path / "missing" / "x.safetensors"
    code = main(["export", str(tmp_path / "R"), "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist; create it first" in err, err
    assert "previous file" not in err and not target.parent.exists()
