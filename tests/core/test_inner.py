"""The hand-written inner optimizers equal torch.optim step for step."""

import pytest
import torch

from largemeta.core.inner import INNER_OPTIMIZERS, SGD, Adam
from largemeta.errors import UserError

CASES = [
    (SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (SGD(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (
        SGD(0.05, momentum=0.9, dampening=0.1, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=5e-4),
    ),
    (
        SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    (Adam(1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    (
        Adam(3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=5e-4),
        lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=5e-4),
    ),
]


def _loss(params):
    w, b = params
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).view(4, 3)
    return ((x @ w + b).tanh() - 0.3).pow(2).sum() + 0.05 * w.pow(4).sum()


@pytest.mark.parametrize("ours, theirs", CASES, ids=lambda c: repr(c) if not callable(c) else "")
def test_matches_torch_optim(ours, theirs):
    init = [torch.randn(3, 2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    mine = [p.clone().requires_grad_(True) for p in init]
    ref = [p.clone().requires_grad_(True) for p in init]
    state = ours.init(mine)
    opt = theirs(ref)
    for _ in range(25):
        grads = torch.autograd.grad(_loss(mine), mine)
        ours.step(mine, list(grads), state)
        opt.zero_grad()
        _loss(ref).backward()
        opt.step()
        for a, b in zip(mine, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert state["step"] == 25


def test_state_is_per_task_and_resettable():
    opt = SGD(0.1, momentum=0.9)
    p = [torch.zeros(2)]
    s1, s2 = opt.init(p), opt.init(p)
    opt.step(p, [torch.ones(2)], s1)
    assert s2["momentum_buffer"] is None and s1["momentum_buffer"] is not None


@pytest.mark.parametrize(
    "bad",
    [
        lambda: SGD(0.0),
        lambda: SGD(-1.0),
        lambda: SGD(0.1, momentum=1.5),
        lambda: Adam(float("nan")),
        lambda: SGD(0.1, nesterov=True),
        lambda: INNER_OPTIMIZERS.create("rmsprop", lr=0.1),
    ],
)
def test_bad_hyperparameters(bad):
    with pytest.raises(UserError) as err:
        bad()
    assert "\n" not in str(err.value)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(
        UserError, match=r"unknown inner optimizer 'rmsprop' \(valid: adam, nesterov, sgd, sgdm\)"
    ):
        INNER_OPTIMIZERS.create("rmsprop", lr=0.1)
