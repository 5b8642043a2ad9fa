"""No non-finite state leaves the process: parameters and BatchNorm buffers are checked before every save,
φ before every evaluation, export or start from it."""

import hashlib
import json

import pytest
import torch

from checkpoint_edits import read_all, rewrite_checkpoint
from cli_runs import train_here
from largemeta.cli import main
from largemeta.train.trainer import NonFiniteLoss


def finite(state):
    tensors = [*state["shared"]["phi"].values()]
    for t in state["tasks"]:
        tensors += [*t["params"].values(), *t["task"]["buffers"].values()]
    return all(bool(torch.isfinite(v).all()) for v in tensors if v.is_floating_point())


def test_imaml_at_a_large_inner_lr_stops_on_infinite_batchnorm_statistics(tiny_suite, tiny_config, tmp_path):
    # found by a scan: at inner_lr = 4 the parameters stay finite while a running variance overflows (step 26)
    cfg = tiny_config(tiny_suite, algo="imaml", inner_lr=4.0, steps=40, checkpoint_every=1, log_every=1)
    with pytest.raises(
        NonFiniteLoss, match=r"non-finite BatchNorm buffer '.*running_var' in task 't\d' at step"
    ):
        train_here(cfg, tmp_path / "run")
    state = read_all(tmp_path / "run")
    assert finite(state) and state["step"] < 40


def test_a_nan_before_the_first_checkpoint_says_none_exists(tiny_suite, tiny_config, tmp_path, monkeypatch):
    from largemeta.models.task import ImageTask

    original = ImageTask.train_loss
    calls = {"n": 0}

    def poisoned(self, params):
        calls["n"] += 1
        loss = original(self, params)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(ImageTask, "train_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="at step 2; stopped — no checkpoint was written yet") as info:
        train_here(tiny_config(tiny_suite, steps=12, checkpoint_every=6), tmp_path / "run")
    assert "checkpoint.json" not in str(info.value) and not (tmp_path / "run" / "checkpoint.json").exists()


@pytest.fixture
def nan_run(tiny_suite, tiny_config, tmp_path):
    """A run folder whose checkpoint (a valid checksum) holds a NaN φ, and an export-like file of it."""
    train_here(tiny_config(tiny_suite, steps=2), tmp_path / "run")

    def poison(entries, info):
        phi = entries["shared"]["phi"]
        phi[next(iter(phi))][0] = float("nan")

    rewrite_checkpoint(tmp_path / "run", poison)
    state = read_all(tmp_path / "run")
    from safetensors.torch import save_file

    meta = {"format": "largemeta-phi", "config": json.dumps(state["config"])}
    save_file(
        {k: v.contiguous() for k, v in state["shared"]["phi"].items()},
        tmp_path / "nan.safetensors",
        metadata=meta,
    )
    return tmp_path / "run", tmp_path / "nan.safetensors"


@pytest.mark.parametrize("which", ["run folder", "safetensors"])
def test_evaluate_refuses_a_non_finite_init(nan_run, tiny_suite, capsys, which):
    init = nan_run[0] if which == "run folder" else nan_run[1]
    code = main(["evaluate", "--init", str(init), "--suite", str(tiny_suite), "--steps", "2", "--seeds", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "holds NaN or inf; refusing to use it" in err


def test_export_and_train_init_refuse_a_non_finite_phi(nan_run, tiny_suite, tiny_config, tmp_path, capsys):
    out = tmp_path / "phi.safetensors"
    code = main(["export", str(nan_run[0]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds NaN or inf" in err and not out.exists()
    sets = [
        a for k, v in tiny_config(tiny_suite, init=str(nan_run[1])).items() for a in ("--set", f"{k}={v}")
    ]
    code = main(["train", "--out", str(tmp_path / "second"), *sets])
    err = capsys.readouterr().err
    assert code == 2 and "holds NaN or inf" in err and not (tmp_path / "second").exists()


def test_an_export_over_a_file_it_did_not_write_is_refused(tiny_suite, tiny_config, tmp_path, capsys):
    train_here(tiny_config(tiny_suite, steps=2), tmp_path / "run")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my own weights")
    code = main(["export", str(tmp_path / "run"), "--out", str(mine)])
    assert code == 2 and "is not a largemeta export" in capsys.readouterr().err
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == hashlib.sha256(b"my own weights").hexdigest()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "phi.safetensors")]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "phi.safetensors")]) == 0  # ours
