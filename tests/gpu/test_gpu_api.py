"""The drop-in ContinualTrajectoryShifting over a user's loop on the test device, and φ loaded into a model
there."""

from __future__ import annotations

import copy

import pytest
import torch
from gpu_device import DEVICE, RESOLVED
from gpu_runs import train
from torch import nn
from torch.func import functional_call

from dropin_loop import user_loop
from largemeta import ContinualTrajectoryShifting
from largemeta.core import SGD, MetaLearner, Reptile, Schedule

pytestmark = pytest.mark.gpu


class Net(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.body(x))


def models_and_batches(steps: int):
    models = []
    for t in range(2):
        torch.manual_seed(t)
        models.append(Net(classes=t + 2).to(DEVICE))
    g = torch.Generator().manual_seed(1)
    batches = [
        [
            (
                torch.randn(8, 1, 6, 6, generator=g).to(DEVICE),
                torch.randint(0, t + 2, (8,), generator=g).to(DEVICE),
            )
            for _ in range(steps)
        ]
        for t in range(2)
    ]
    return models, batches


class FunctionalTask:
    def __init__(self, template, batches):
        self.template, self.batches, self.i = template, batches, 0

    def train_loss(self, params):
        x, y = self.batches[self.i]
        self.i += 1
        return nn.functional.cross_entropy(functional_call(self.template, params, (x,)), y)

    query_loss = train_loss


@pytest.mark.parametrize("algorithm", ["cts", "reptile"])
def test_the_drop_in_matches_the_engine_on_the_device(algorithm):
    steps, k, lr, beta = 11, 4, 0.1, 0.3
    models, batches = models_and_batches(steps)
    templates = copy.deepcopy(models)
    phi = {n: v.detach().clone() for n, v in models[0].named_parameters() if not n.startswith("head.")}
    heads = [{f"head.{n}": v.detach().clone() for n, v in m.head.named_parameters()} for m in models]
    schedule = Schedule.cts(k) if algorithm == "cts" else Schedule.plain(k)
    tasks = [FunctionalTask(m, b) for m, b in zip(templates, batches, strict=True)]
    oracle = MetaLearner(phi, tasks, SGD(lr, momentum=0.9), Reptile(), schedule, private=heads, meta_lr=beta)
    oracle.run(steps)
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in models]
    cts = ContinualTrajectoryShifting(models, k=k, meta_lr=beta, algorithm=algorithm)
    user_loop(cts, models, opts, batches, steps)
    assert all(v.device.type == DEVICE for v in cts.phi.values())
    for name in phi:
        torch.testing.assert_close(cts.phi[name], phi[name], rtol=1e-5, atol=1e-5)


def test_the_drop_in_state_dict_resumes_on_the_device():
    """Stopped after 6 steps, saved, restored into fresh models: the same φ after 11 as straight through."""
    steps = 11
    models, batches = models_and_batches(steps)
    straight = copy.deepcopy(models)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in straight]
    cts = ContinualTrajectoryShifting(straight, k=4, meta_lr=0.3)
    user_loop(cts, straight, opts, batches, steps)

    first = copy.deepcopy(models)
    opts1 = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in first]
    cts1 = ContinualTrajectoryShifting(first, k=4, meta_lr=0.3)
    user_loop(cts1, first, opts1, batches, 6)
    saved = copy.deepcopy({"cts": cts1.state_dict(), "opts": [o.state_dict() for o in opts1]})
    second = copy.deepcopy(models)
    opts2 = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in second]
    cts2 = ContinualTrajectoryShifting(second, k=4, meta_lr=0.3)
    cts2.load_state_dict(saved["cts"])
    for o, s in zip(opts2, saved["opts"], strict=True):
        o.load_state_dict(s)
    user_loop(cts2, second, opts2, batches, steps - 6, start=6)
    assert cts2.steps == cts.steps == steps
    for name in cts.phi:
        torch.testing.assert_close(cts2.phi[name], cts.phi[name], rtol=1e-6, atol=1e-6)


def test_phi_of_a_device_run_loads_into_a_model_on_the_device(run_config, tmp_path):
    from largemeta.models import create_model
    from largemeta.phi import load_phi, load_phi_into

    cfg = run_config(steps=4, log_every=4, checkpoint_every=4)
    train(cfg, tmp_path / "run")
    body = create_model("convnet", width=8, in_channels=1).to(DEVICE)
    left = load_phi_into(body, tmp_path / "run")
    phi, meta = load_phi(tmp_path / "run")
    assert meta["config"]["device"] == RESOLVED
    state = dict(body.named_parameters()) | dict(body.named_buffers())
    for name, value in phi.items():
        assert state[name].device.type == DEVICE and torch.equal(state[name].cpu(), value.cpu())
    assert not [n for n in left if n in phi]
