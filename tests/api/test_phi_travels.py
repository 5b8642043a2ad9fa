"""φ that travels: the drop-in API writes φ in the export format, evaluate takes it through the command
line, load_phi reads it back (and a run folder's), load_phi_into puts it into a model."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import largemeta
from largemeta import ContinualTrajectoryShifting
from largemeta.cli import main
from largemeta.errors import UserError
from largemeta.models import create_model


def make_model(classes: int = 4) -> nn.Module:
    body = create_model("convnet", in_channels=1, width=8)
    features = body(torch.zeros(1, 1, 16, 16)).shape[1]
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(features, classes)))


def trained_cts(steps: int = 6) -> ContinualTrajectoryShifting:
    torch.manual_seed(0)
    models = [make_model() for _ in range(2)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    cts = ContinualTrajectoryShifting(models, k=3, meta_lr=0.1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))
    for _ in range(steps):
        for m, o in zip(models, opts, strict=True):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        cts.step()
    return cts


def test_a_phi_saved_by_the_drop_in_api_evaluates_through_the_cli(tmp_path, capsys):
    cts = trained_cts()
    path = cts.save(tmp_path / "phi.safetensors", prefix="body.", body="convnet", width=8)
    phi, meta = largemeta.load_phi(path)
    assert meta["model"] == "convnet" and meta["in_channels"] == 1 and meta["step"] == 6
    assert meta["config"]["width"] == 8 and meta["config"]["algo"] == "cts"
    assert all(torch.equal(phi[k[len("body.") :]], v) for k, v in cts.phi.items())
    assert not any(k.startswith("head") for k in phi)  # the head is a task's own, not φ
    # a target as a BYO .npz: 16 px, 1 channel, 4 classes
    rng = np.random.default_rng(0)
    target = tmp_path / "target.npz"
    np.savez(
        target,
        x=rng.integers(0, 255, (40, 16, 16), dtype=np.uint8),
        y=np.arange(40) % 4,
        x_test=rng.integers(0, 255, (16, 16, 16), dtype=np.uint8),
        y_test=np.arange(16) % 4,
    )
    args = ["evaluate", "--init", str(path), "--tasks", str(target), "--image-size", "16"]
    assert main([*args, "--steps", "4", "--seeds", "1", "--batch-size", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["init"] == str(path) and 0 <= result["mean_accuracy"] <= 1


def test_load_phi_into_a_model_and_from_a_run_folder(tmp_path, tiny_suite, tiny_config):
    from cli_runs import sets

    cts = trained_cts()
    path = cts.save(tmp_path / "phi.safetensors", prefix="body.", body="convnet", width=8)
    fresh = make_model()
    untouched = fresh.head.weight.clone()
    left = largemeta.load_phi_into(fresh, path, prefix="body.")
    assert left == ["head.weight", "head.bias"] and torch.equal(fresh.head.weight, untouched)
    assert all(torch.equal(dict(fresh.named_parameters())[k], v) for k, v in cts.phi.items())
    with pytest.raises(
        UserError, match=r"Sequential has no 'features\..*'; is the body a submodule\? pass prefix="
    ):
        largemeta.load_phi_into(make_model(), path)
    # a run folder's φ, as evaluate reads it
    run = tmp_path / "run"
    assert main(["-q", "train", "--out", str(run), "--steps", "4", *sets(tiny_config(tiny_suite))]) == 0
    phi, meta = largemeta.load_phi(run)
    assert meta["step"] == 4 and meta["model"] == "convnet" and "features.0.weight" in phi
    body = create_model("convnet", in_channels=1, width=8)
    assert largemeta.load_phi_into(body, run) == []
    with pytest.raises(UserError, match="is not a run folder or an existing .safetensors file"):
        largemeta.load_phi(tmp_path / "nothing")


def test_a_model_with_no_shared_parameter_gets_a_shared_hint():
    with pytest.raises(UserError) as err:
        ContinualTrajectoryShifting(nn.Linear(4, 2))
    message = str(err.value)
    assert "selected no parameter of Linear" in message and "the last nn.Linear, the head" in message
    assert "pass shared=" in message and "shared=lambda name, param: True" in message
    cts = ContinualTrajectoryShifting(nn.Linear(4, 2), shared=lambda name, param: True)
    assert set(cts.phi) == {"weight", "bias"}


def test_saving_needs_a_safetensors_name_and_evaluate_asks_for_a_body(tmp_path):
    cts = trained_cts(steps=1)
    with pytest.raises(UserError, match="must end in .safetensors"):
        cts.save(tmp_path / "phi.pt", prefix="body.")
    path = cts.save(tmp_path / "phi.safetensors", prefix="body.")
    with pytest.raises(UserError, match="does not name its body .* pass --model"):
        from largemeta.metatest import load_init

        load_init(str(path))
    assert load_init(str(path), model="convnet", width=8).in_channels == 1
