"""The drop-in ContinualTrajectoryShifting against the engine's loop, torch.optim and hand-worked steps."""

import copy
import functools

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropin_loop import user_loop
from largemeta import ContinualTrajectoryShifting
from largemeta.api import head_names
from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.errors import UserError


class Net(nn.Module):
    def __init__(self, classes=3, width=4, in_dim=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.body(x))


def make_models(n=2, seed=0):
    """Task t has t + 2 classes (heads of different shapes) and its own random init."""
    models = []
    for t in range(n):
        torch.manual_seed(seed + t)
        models.append(Net(classes=t + 2))
    return models


def make_batches(n_tasks, steps, seed=1):
    g = torch.Generator().manual_seed(seed)

    def batch(t):
        return torch.randn(8, 3, generator=g), torch.randint(0, t + 2, (8,), generator=g)

    return [[batch(t) for _ in range(steps)] for t in range(n_tasks)]


class FunctionalTask:
    """The same task for the engine's loop: the same batches through functional_call on a template."""

    def __init__(self, template, batches):
        self.template, self.batches, self.i = template, batches, 0

    def train_loss(self, params):
        x, y = self.batches[self.i]
        self.i += 1
        return nn.functional.cross_entropy(functional_call(self.template, params, (x,)), y)

    query_loss = train_loss


def body(model):
    return {k: v for k, v in model.named_parameters() if not k.startswith("head.")}


@pytest.mark.parametrize("algorithm", ["cts", "reptile"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("meta", ["sgd", "adam"])
def test_matches_engine_loop(algorithm, momentum, meta):
    steps, k, lr, beta = 13, 5, 0.1, 0.3
    models, batches = make_models(), make_batches(2, steps)
    templates = copy.deepcopy(models)
    factory = functools.partial(torch.optim.Adam, lr=0.01) if meta == "adam" else None

    # oracle: the engine takes the inner steps itself with its own SGD
    phi = {k_: v.detach().clone() for k_, v in body(models[0]).items()}
    heads = [{f"head.{k_}": v.detach().clone() for k_, v in m.head.named_parameters()} for m in models]
    schedule = Schedule.cts(k) if algorithm == "cts" else Schedule.plain(k)
    tasks = [FunctionalTask(m, b) for m, b in zip(templates, batches, strict=True)]
    outer = factory(list(phi.values())) if factory else None
    oracle = MetaLearner(
        phi, tasks, SGD(lr, momentum=momentum), Reptile(), schedule, private=heads, meta_lr=beta, outer=outer
    )
    oracle.run(steps)

    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum) for m in models]
    cts = ContinualTrajectoryShifting(models, k=k, meta_lr=beta, algorithm=algorithm, meta_optimizer=factory)
    user_loop(cts, models, opts, batches, steps)

    assert cts.steps == steps
    for name in phi:
        torch.testing.assert_close(cts.phi[name], phi[name], rtol=0, atol=1e-6)
    for model, oracle_params in zip(models, oracle.params, strict=True):
        for name, value in model.named_parameters():
            torch.testing.assert_close(value, oracle_params[name], rtol=0, atol=1e-6)


def test_construction_resets_shared_to_first_model_and_keeps_heads():
    models = make_models(3)
    body0 = {k: v.detach().clone() for k, v in body(models[0]).items()}
    heads = [m.head.weight.detach().clone() for m in models]
    cts = ContinualTrajectoryShifting(models)
    assert list(cts.phi) == list(body0)
    for m, head in zip(models, heads, strict=True):
        for name, value in body(m).items():
            assert torch.equal(value, body0[name]) and torch.equal(cts.phi[name], body0[name])
        assert torch.equal(m.head.weight, head)


def test_heads_never_shifted_reset_or_meta_updated():
    # The user's optimizers move the bodies only, so any change to a head would come from the wrapper.
    steps = 12
    models, batches = make_models(), make_batches(2, steps)
    heads = [{k: v.detach().clone() for k, v in m.head.named_parameters()} for m in models]
    opts = [torch.optim.SGD(m.body.parameters(), lr=0.1) for m in models]
    cts = ContinualTrajectoryShifting(models, k=4, meta_lr=0.5)
    user_loop(cts, models, opts, batches, steps)
    for m, head in zip(models, heads, strict=True):
        for name, value in m.head.named_parameters():
            assert torch.equal(value, head[name])
    assert not any(name.startswith("head.") for name in cts.phi)


def test_default_shared_rule_excludes_the_last_linear_only():
    assert head_names(Net()) == {"head.weight", "head.bias"}
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert head_names(mlp) == {"2.weight", "2.bias"}
    nested = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Sequential(nn.Dropout(), nn.Linear(8, 5)))
    assert head_names(nested) == {"2.1.weight", "2.1.bias"}
    assert head_names(nn.Linear(3, 2)) == {"weight", "bias"}
    cts = ContinualTrajectoryShifting(mlp)
    assert list(cts.phi) == ["0.weight", "0.bias"]


def test_custom_shared_rule():
    models = make_models()
    cts = ContinualTrajectoryShifting(models, shared=lambda name, p: name.startswith("body.0."))
    assert list(cts.phi) == ["body.0.weight", "body.0.bias"]
    # body.2 is private now: model 1 keeps its own
    assert not torch.equal(models[0].body[2].weight, models[1].body[2].weight)


def test_restart_every_k_resets_shared_parameters_to_phi():
    steps, k = 7, 3
    models, batches = make_models(), make_batches(2, steps)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    cts = ContinualTrajectoryShifting(models, k=k, meta_lr=0.5)
    seen = {}

    def check(step):
        seen[step] = all(torch.equal(v, cts.phi[n]) for m in models for n, v in body(m).items())

    user_loop(cts, models, opts, batches, steps, between=check)
    assert seen == {1: False, 2: False, 3: True, 4: False, 5: False, 6: True, 7: False}


def test_reptile_meta_updates_once_per_k_by_hand():
    # Plain Reptile: φ stays put until step K, then φ' = φ − β (φ − mean_t θ_t).
    steps, k, beta = 4, 4, 0.5
    models, batches = make_models(), make_batches(2, steps)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    cts = ContinualTrajectoryShifting(models, k=k, meta_lr=beta, algorithm="reptile")
    phi0 = {n: v.clone() for n, v in cts.phi.items()}
    user_loop(cts, models, opts, batches, k - 1)
    assert all(torch.equal(cts.phi[n], phi0[n]) for n in phi0)
    # the last inner step by hand, then the meta-update
    for model, opt, b in zip(models, opts, batches, strict=True):
        opt.zero_grad()
        nn.functional.cross_entropy(model(b[k - 1][0]), b[k - 1][1]).backward()
        opt.step()
    mean_theta = {n: (body(models[0])[n] + body(models[1])[n]).detach() / 2 for n in phi0}
    cts.step()
    for n in phi0:
        torch.testing.assert_close(cts.phi[n], phi0[n] - beta * (phi0[n] - mean_theta[n]), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "make_opt",
    [
        functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        functools.partial(torch.optim.Adam, lr=0.01),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_reset_inner_state_matches_fresh_torch_optimizers(make_opt):
    steps, k = 11, 4
    batches = make_batches(2, steps)

    models_a = make_models()
    opts_a = [make_opt(m.parameters()) for m in models_a]
    cts_a = ContinualTrajectoryShifting(
        models_a, k=k, meta_lr=0.3, inner_optimizers=opts_a, reset_inner_state=True
    )

    def is_cleared(step):
        if step % k == 0:
            assert all(not opt.state for opt in opts_a)

    user_loop(cts_a, models_a, opts_a, batches, steps, between=is_cleared)

    # oracle: the user re-creates torch.optim optimizers at every restart
    models_b = make_models()
    opts_b = [make_opt(m.parameters()) for m in models_b]
    cts_b = ContinualTrajectoryShifting(models_b, k=k, meta_lr=0.3)

    def recreate(step):
        if step % k == 0:
            opts_b[:] = [make_opt(m.parameters()) for m in models_b]

    user_loop(cts_b, models_b, opts_b, batches, steps, between=recreate)
    for n in cts_a.phi:
        assert torch.equal(cts_a.phi[n], cts_b.phi[n])
    for ma, mb in zip(models_a, models_b, strict=True):
        for (n, va), vb in zip(ma.named_parameters(), mb.parameters(), strict=True):
            assert torch.equal(va, vb), n


def test_inner_state_kept_by_default():
    models, batches = make_models(), make_batches(2, 4)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
    cts = ContinualTrajectoryShifting(models, k=2, inner_optimizers=opts)
    user_loop(cts, models, opts, batches, 4)
    assert all(opt.state for opt in opts)


def test_state_dict_round_trip_resumes_exactly():
    steps, split = 13, 6
    batches = make_batches(2, steps)

    def setup():
        models = make_models()
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
        meta = functools.partial(torch.optim.SGD, lr=0.2, momentum=0.5)
        return models, opts, ContinualTrajectoryShifting(models, k=5, meta_optimizer=meta)

    models, opts, cts = setup()
    user_loop(cts, models, opts, batches, split)
    saved = copy.deepcopy({"cts": cts.state_dict(), "opts": [o.state_dict() for o in opts]})
    user_loop(cts, models, opts, batches, steps - split, start=split)

    models2, opts2, cts2 = setup()
    cts2.load_state_dict(saved["cts"])
    for o, s in zip(opts2, saved["opts"], strict=True):
        o.load_state_dict(s)
    assert cts2.steps == split
    user_loop(cts2, models2, opts2, batches, steps - split, start=split)
    for n in cts.phi:
        assert torch.equal(cts.phi[n], cts2.phi[n])
    for m, m2 in zip(models, models2, strict=True):
        for a, b in zip(m.parameters(), m2.parameters(), strict=True):
            assert torch.equal(a, b)


def test_export_state_dict_is_model_shaped_with_phi():
    torch.manual_seed(0)
    # (a ReLU before the BatchNorm: a bias right before BatchNorm gets a zero gradient up to rounding, so
    # whether it moves at all would depend on the CPU's kernels)
    models = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, c)) for c in (2, 5)]
    batches = [[(torch.randn(8, 3), torch.randint(0, c, (8,))) for _ in range(3)] for c in (2, 5)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    cts = ContinualTrajectoryShifting(models, k=10, meta_lr=0.5)
    user_loop(cts, models, opts, batches, 3)
    exported = cts.export_state_dict(1)
    assert list(exported) == list(models[1].state_dict())  # BatchNorm buffers included
    for n, v in cts.phi.items():
        assert torch.equal(exported[n], v) and not torch.equal(exported[n], models[1].state_dict()[n])
    assert torch.equal(exported["3.weight"], models[1][3].weight)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 5))
    fresh.load_state_dict(exported)
    exported["0.weight"].add_(1.0)  # a copy, not φ itself
    assert not torch.equal(exported["0.weight"], cts.phi["0.weight"])


def is_one_line(err):
    return "\n" not in str(err.value)


def test_no_shared_parameters_is_a_user_error():
    with pytest.raises(UserError, match="the shared rule selected no parameter of Net") as err:
        ContinualTrajectoryShifting(Net(), shared=lambda n, p: False)
    assert is_one_line(err)
    with pytest.raises(UserError, match="no nn.Linear"):
        ContinualTrajectoryShifting(nn.Conv2d(1, 2, 3))


def test_shared_shapes_that_differ_name_the_parameter_and_both_shapes():
    with pytest.raises(UserError) as err:
        ContinualTrajectoryShifting([Net(width=4), Net(width=5)])
    expected = "shared parameter 'body.0.weight' has shape (4, 3) in model 0 but (5, 3) in model 1"
    assert str(err.value) == expected
    with pytest.raises(UserError, match=r"'body.2.weight' of model 0 is missing from model 1"):
        short = nn.ModuleDict({"body": nn.Sequential(nn.Linear(3, 4))})
        ContinualTrajectoryShifting([Net(), short], shared=lambda n, p: n.startswith("body"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k .* must be an integer > 0, got 0"),
        ({"k": 2.5}, "must be an integer > 0"),
        ({"k": 2, "meta_every": 3}, "meta_every must be <= K=2"),
        (
            {"algorithm": "fomaml"},
            "unknown drop-in algorithm 'fomaml' \\(valid: cts, cts-reptile, reptile\\)",
        ),
        (
            {"algorithm": "reptile", "meta_every": 5},
            "meta_every applies to CTS algorithms; reptile meta-updates every k steps",
        ),
        ({"meta_lr": -1.0}, "meta learning rate must be a number > 0"),
        ({"reset_inner_state": True}, "needs inner_optimizers="),
        ({"meta_optimizer": torch.optim.SGD([torch.zeros(1)], lr=0.1)}, "must be a factory"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        ContinualTrajectoryShifting(make_models(1), **kwargs)
    assert is_one_line(err)
    with pytest.raises(UserError, match="at least one model"):
        ContinualTrajectoryShifting([])


@pytest.mark.gpu
def test_cuda_models_match_cpu():
    steps = 9
    batches = make_batches(2, steps)
    phis = []
    for device in ("cpu", "cuda"):
        models = [m.to(device) for m in make_models()]
        on_device = [[(x.to(device), y.to(device)) for x, y in b] for b in batches]
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
        cts = ContinualTrajectoryShifting(models, k=4, meta_lr=0.3)
        user_loop(cts, models, opts, on_device, steps)
        assert all(v.device.type == device for v in cts.phi.values())
        phis.append({n: v.cpu() for n, v in cts.phi.items()})
    for n in phis[0]:
        torch.testing.assert_close(phis[1][n], phis[0][n], rtol=0, atol=1e-5)
