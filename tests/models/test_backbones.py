"""Any backbone: ``module:factory``, ``file.py:factory``, entry points, ``timm:NAME``; feature sizes by one
forward pass; per-task BatchNorm statistics for user bodies; one-line errors for every way a factory fails."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import user_bodies

from cli_runs import sets
from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.errors import UserError
from largemeta.models import (
    ENTRY_POINT_GROUP,
    ImageTask,
    create_model,
    feature_size,
    init_head,
    is_code_reference,
    list_models,
    split_state,
)
from largemeta.testing import RandomImageSampler

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my_body.py"


# Spellings ----------------------------------------------------------------------------------------
def test_module_factory_gets_only_the_options_it_names():
    user_bodies.CALLS.clear()
    body = create_model("user_bodies:recording", in_channels=1, width=16, weights=None)
    assert user_bodies.CALLS == [{"in_channels": 1}]
    assert feature_size(body, 1, 28) == 2 * 4  # bn_body's default width: the offered 16 never reached it


def test_a_class_is_a_factory_and_its_declared_num_features_is_used():
    body = create_model("user_bodies:TinyNet", in_channels=1)
    assert isinstance(body, user_bodies.TinyNet) and body.conv.in_channels == 1
    assert feature_size(body, 1, 28) == 6


def test_file_path_spelling_absolute_and_relative(monkeypatch):
    body = create_model(f"{EXAMPLE}:small_cnn", in_channels=1, width=8)
    assert feature_size(body, 1, 28) == 8 and body(torch.randn(2, 1, 28, 28)).shape == (2, 8)
    monkeypatch.chdir(ROOT)  # a relative path is relative to the current folder
    again = create_model("examples/my_body.py:small_cnn", in_channels=3)
    assert feature_size(again, 3, 32) == 32  # the factory's default width
    assert type(again[0]) is type(body[0])
    assert str(EXAMPLE.parent) not in sys.path  # the file's folder was not put on sys.path


def test_a_file_is_run_once_per_version(tmp_path):
    path = tmp_path / "body.py"
    path.write_text("from torch import nn\nRUNS = []\nRUNS.append(1)\ndef f():\n    return nn.Flatten()\n")
    first = create_model(f"{path}:f")
    create_model(f"{path}:f")
    assert isinstance(first, torch.nn.Flatten)
    from largemeta.models import factory

    assert factory._FILES[path.resolve()][1].RUNS == [1]  # the second create_model reused the module
    path.write_text("from torch import nn\ndef f():\n    return nn.Identity()\n# edited, longer\n")
    assert isinstance(create_model(f"{path}:f"), torch.nn.Identity)  # an edited file is run again


def test_is_code_reference():
    assert is_code_reference("pkg.mod:f") and is_code_reference("a/b.py:f")
    assert not is_code_reference("convnet") and not is_code_reference("timm:resnet18")
    assert not is_code_reference("some_plugin_name")


# Feature size -------------------------------------------------------------------------------------
def test_feature_size_by_one_forward_pass_depends_on_the_image_size_when_the_body_does():
    body = create_model("user_bodies:flat_body", in_channels=1)
    assert not hasattr(body, "num_features")
    assert feature_size(body, 1, 28) == 4 * 28 * 28
    assert feature_size(body, 1, (12, 20)) == 4 * 12 * 20
    assert body(torch.randn(3, 1, 12, 20)).shape == (3, 4 * 12 * 20)


def test_feature_size_touches_nothing():
    """No gradients, no buffer update, no random numbers, the body's mode restored."""
    body = create_model("user_bodies:bn_body", in_channels=3).train()
    state = {k: v.clone() for k, v in body.state_dict().items()}
    rng = torch.get_rng_state()
    assert feature_size(body, 3, 32) == 8
    assert body.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in body.state_dict().items())
    assert all(p.grad is None for p in body.parameters())


def test_feature_size_runs_for_real_when_the_meta_device_cannot():
    body = create_model("user_bodies:HostSync", in_channels=2)
    with pytest.raises(RuntimeError, match="meta"):  # the meta path really is unavailable for this body
        from torch.func import functional_call

        meta = {k: torch.empty_like(v, device="meta") for k, v in body.named_parameters()}
        functional_call(body, meta, (torch.zeros(2, 2, 8, 8, device="meta"),))
    assert feature_size(body, 2, 8) == 5


def test_builtin_bodies_declare_num_features_equal_to_their_output():
    for name, width in (("convnet", 8), ("resnet20", 4)):
        body = create_model(name, in_channels=1, width=width)
        out = body.eval()(torch.zeros(2, 1, 28, 28))
        assert feature_size(body, 1, 28) == body.num_features == out.shape[1]


# Bad input: one line each -------------------------------------------------------------------------
BROKEN = {
    "raises.py": "import torch\nraise RuntimeError('boom while importing\\nsecond line')\n",
    "syntax.py": "def f(:\n    pass\n",
    "notpy.txt": "",
}


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "no_such_pkg.bodies:f",
            {},
            r"model 'no_such_pkg.bodies:f': cannot import module 'no_such_pkg.bodies': "
            r"ModuleNotFoundError: No module named 'no_such_pkg' \(is its folder on PYTHONPATH",
        ),
        ("{tmp}/raises.py:f", {}, r"cannot import file '.*raises.py': RuntimeError: boom while importing$"),
        ("{tmp}/syntax.py:f", {}, r"cannot import file '.*syntax.py': SyntaxError: "),
        ("{tmp}/missing.py:f", {}, r"model '.*missing.py:f': no such file '.*missing.py'$"),
        ("{tmp}/notpy.txt:f", {}, r"is not a \.py file"),
        ("user_bodies:nope", {}, r"model 'user_bodies:nope': 'user_bodies' has no attribute 'nope'$"),
        ("user_bodies:NOT_CALLABLE", {}, r"int object is not callable \(a factory is a function or class"),
        (
            "user_bodies:raising",
            {"in_channels": 1},
            r"model 'user_bodies:raising': the factory raised ValueError: width must be even, got 1$",
        ),
        ("user_bodies:returns_tensor", {}, r"the factory returned a Tensor, not a torch.nn.Module$"),
        ("user_bodies:", {}, r"expected package.module:factory or path/to/file.py:factory$"),
        ("my-bodies:f", {}, r"'my-bodies' is neither a module name nor a path to a .py file$"),
        (
            "resnet21",
            {},
            r"unknown model 'resnet21' \(valid: convnet, resnet18, resnet20, "
            r"package.module:factory, path/to/file.py:factory, timm:NAME\)$",
        ),
        ("", {}, r"model must be a registered name or one of package.module:factory"),
    ],
)
def test_bad_factories_are_one_line_user_errors(tmp_path, name, options, message):
    for file, text in BROKEN.items():
        (tmp_path / file).write_text(text)
    with pytest.raises(UserError, match=message) as err:
        create_model(name.format(tmp=tmp_path), **options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "factory, channels, message",
    [
        (
            "no_pool",
            1,
            r"body Conv2d must map images \(B, C, H, W\) to features \(B, F\): a batch of shape "
            r"\(2, 1, 28, 28\) gave \(2, 4, 28, 28\) \(pool and flatten its output\)$",
        ),
        ("returns_tuple", 1, r"a batch of shape \(2, 1, 28, 28\) gave tuple$"),
        (
            "fixed_three_channels",
            1,
            r"body Sequential failed on a batch of shape \(2, 1, 28, 28\): RuntimeError: "
            r".* \(does its factory take in_channels\?\)$",
        ),
    ],
)
def test_bodies_that_do_not_give_a_feature_batch_are_one_line_user_errors(factory, channels, message):
    body = create_model(f"user_bodies:{factory}", in_channels=channels)
    with pytest.raises(UserError, match=message) as err:
        feature_size(body, channels, 28)
    assert "\n" not in str(err.value)


def test_bad_declared_num_features_and_sizes():
    body = create_model("user_bodies:flat_body")
    body.num_features = "64"
    with pytest.raises(UserError, match=r"num_features must be an int >= 1, got '64'"):
        feature_size(body, 1, 28)
    with pytest.raises(UserError, match=r"image size must be an integer > 0, got 0"):
        feature_size(create_model("user_bodies:flat_body"), 1, 0)


# Entry points -------------------------------------------------------------------------------------
@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    """Two real (if minimal) installed distributions on a temporary ``sys.path`` entry: ``importlib.metadata``
    reads their ``*.dist-info/entry_points.txt`` exactly as it reads pip-installed ones."""
    (tmp_path / "lm_plugin_bodies.py").write_text(
        textwrap.dedent("""
        from torch import nn

        def plugin_pool(in_channels=3):
            return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * in_channels, 7))
    """)
    )
    for dist, entries in {
        "lm_plugin-0.1": [
            "plugin_pool = lm_plugin_bodies:plugin_pool",
            "broken_plugin = lm_plugin_gone:f",
            "convnet = lm_plugin_bodies:plugin_pool",
            "twice = lm_plugin_bodies:plugin_pool",
        ],
        "lm_other-2.0": ["twice = lm_other_bodies:other"],
    }.items():
        info = tmp_path / f"{dist}.dist-info"
        info.mkdir()
        name, version = dist.split("-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(entries) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("lm_plugin_bodies", None)


def test_entry_point_bodies_are_found_by_name(installed_plugins):
    assert {"plugin_pool", "broken_plugin", "twice"} <= set(list_models())
    assert list_models("plugin_*") == ["plugin_pool"]
    assert "lm_plugin_bodies" not in sys.modules  # listed, not imported
    body = create_model("plugin_pool", in_channels=1, width=99)
    assert feature_size(body, 1, 16) == 7 and body[2].in_features == 4


def test_a_plugin_cannot_replace_a_builtin_body(installed_plugins):
    body = create_model("convnet", in_channels=1, width=8)
    assert type(body).__name__ == "ConvNet" and body.num_features == 8


def test_broken_and_ambiguous_entry_points_are_one_line_user_errors(installed_plugins):
    with pytest.raises(
        UserError,
        match=r"model 'broken_plugin' \(entry point 'lm_plugin_gone:f' of group "
        r"'largemeta.models'\): cannot load it: ModuleNotFoundError",
    ):
        create_model("broken_plugin")
    with pytest.raises(
        UserError,
        match=r"model 'twice' is registered by several installed packages "
        r"\(lm_other_bodies:other, lm_plugin_bodies:plugin_pool\)",
    ):
        create_model("twice")


# timm ---------------------------------------------------------------------------------------------
def _timm():
    try:
        import timm
    except Exception as err:  # absent, or present without a working torchvision beside this torch build
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return timm, ""


def test_timm_spelling_without_timm_says_how_to_get_it():
    timm, why = _timm()
    if timm is not None:
        pytest.skip("timm imports here; test_timm_body_gives_pooled_features covers it")
    with pytest.raises(
        UserError,
        match=r"model 'timm:resnet18' needs timm, which does not import here .*"
        r"pip install largemeta\[timm\]$",
    ):
        create_model("timm:resnet18", in_channels=1)


def test_timm_body_gives_pooled_features():
    timm, why = _timm()
    if timm is None:
        pytest.skip(
            f"timm does not import here ({why}); timm needs torchvision, which does not import "
            "beside this torch build: run this test where timm imports"
        )
    body = create_model("timm:resnet18", in_channels=1, width=16)
    assert feature_size(body, 1, 32) == 512 == body.eval()(torch.zeros(2, 1, 32, 32)).shape[1]
    with pytest.raises(UserError, match=r"unknown timm model 'resnet_nope'"):
        create_model("timm:resnet_nope")
    params, buffers = split_state(body)
    head = init_head(3, feature_size(body, 1, 32))
    sampler = RandomImageSampler(32, 3, channels=1, pool=16)
    task = ImageTask(body, sampler, classes=3, batch_size=4, buffers=buffers)
    assert torch.isfinite(task.train_loss({**params, **head}))


# Per-task BatchNorm and heads for a user body -----------------------------------------------------
def test_user_body_gets_per_task_batchnorm_statistics_1d_and_2d():
    """Two tasks on the user's conv–BN2d–…–linear–BN1d body: each task's running statistics are its own
    and equal BatchNorm's update computed by hand; the template never changes; eval mode reads and writes
    nothing."""
    torch.manual_seed(0)
    body = create_model("user_bodies:bn_body", in_channels=1, width=4)
    template = {k: v.clone() for k, v in body.state_dict().items()}
    phi, buffers = split_state(body)
    tasks, params = [], []
    for t, shift in enumerate((2.0, -3.0)):
        sampler = RandomImageSampler(12, 3, channels=1, pool=32, seed=t)
        sampler.x += shift  # two domains: different input statistics
        tasks.append(
            ImageTask(
                body, sampler, classes=3, batch_size=8, buffers={k: v.clone() for k, v in buffers.items()}
            )
        )
        params.append({**phi, **init_head(3, feature_size(body, 1, 12), torch.Generator().manual_seed(t))})
    for task, p in zip(tasks, params, strict=True):
        x, y = task.train_batch()
        with task.static_inputs((x, y)):
            task.train_loss(p)
        # by hand: conv → BN2d (batch statistics) → ReLU → mean pool → linear → BN1d
        conv = F.conv2d(x, phi["0.weight"], padding=1)
        mean2, var2 = conv.mean((0, 2, 3)), conv.var((0, 2, 3))
        torch.testing.assert_close(task.buffers["1.running_mean"], 0.1 * mean2)
        torch.testing.assert_close(task.buffers["1.running_var"], 0.9 + 0.1 * var2)
        normed = F.batch_norm(conv, None, None, phi["1.weight"], phi["1.bias"], training=True)
        lin = F.linear(F.relu(normed).mean((2, 3)), phi["5.weight"], phi["5.bias"])
        torch.testing.assert_close(task.buffers["6.running_mean"], 0.1 * lin.mean(0))
        torch.testing.assert_close(task.buffers["6.running_var"], 0.9 + 0.1 * lin.var(0))
        assert int(task.buffers["6.num_batches_tracked"]) == 1
    assert not torch.allclose(tasks[0].buffers["1.running_mean"], tasks[1].buffers["1.running_mean"])
    assert all(torch.equal(v, template[k]) for k, v in body.state_dict().items())
    before = {k: v.clone() for k, v in tasks[0].buffers.items()}
    tasks[0].loss_and_accuracy(params[0], [tasks[0].sampler.sample_query(8)])
    assert all(torch.equal(before[k], tasks[0].buffers[k]) for k in before)


def test_cts_meta_learns_a_user_body_with_per_task_heads():
    """CTS over a user body sized by one forward pass: heads of 3 and 5 classes, losses go down, φ moves."""
    torch.manual_seed(1)
    body = create_model(f"{EXAMPLE}:small_cnn", in_channels=1, width=8)
    phi, buffers = split_state(body)
    features = feature_size(body, 1, 16)
    tasks, heads = [], []
    for t, classes in enumerate((3, 5)):
        sampler = RandomImageSampler(16, classes, channels=1, pool=16, seed=10 * t)
        tasks.append(
            ImageTask(
                body,
                sampler,
                classes=classes,
                batch_size=16,
                buffers={k: v.clone() for k, v in buffers.items()},
            )
        )
        heads.append(init_head(classes, features, torch.Generator().manual_seed(t)))
    phi0 = {k: v.clone() for k, v in phi.items()}
    learner = MetaLearner(
        phi, tasks, SGD(0.1, momentum=0.9), Reptile(), Schedule.cts(k=20), private=heads, meta_lr=0.1
    )
    losses = torch.stack([learner.inner_step() for _ in range(40)])
    # 16 random images per task, memorized: measured ratios 0.37 and 0.42 of the first steps' losses
    assert (losses[-5:].mean(0) < 0.7 * losses[:3].mean(0)).all(), losses
    assert any(not torch.equal(phi[k], phi0[k]) for k in phi)
    assert learner.params[1]["head.weight"].shape == (5, 8)


# The command line ---------------------------------------------------------------------------------
DECLARED = """
from torch import nn


def small_cnn(in_channels=1, width=32):
    body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    body.num_features = width
    return body
"""


@pytest.mark.parametrize("which", ["declares num_features", "the example, sized by a forward pass"])
def test_cli_trains_resumes_and_exports_a_body_from_a_file(tmp_path, tiny_suite, tiny_config, which):
    from checkpoint_edits import read_all
    from largemeta.cli import main

    if which == "declares num_features":
        path = tmp_path / "declared_body.py"
        path.write_text(DECLARED)
    else:
        path = EXAMPLE
    cfg = tiny_config(tiny_suite, model=f"{path}:small_cnn", steps=4, k=2, log_every=2, checkpoint_every=2)
    run = tmp_path / "run"
    flags = sets(cfg)
    assert main(["train", "--out", str(run), "--steps", "4", *flags]) == 0
    state = read_all(run)
    body = create_model(f"{path}:small_cnn", in_channels=1, width=8)
    assert set(state["shared"]["phi"]) == {k for k, _ in body.named_parameters()}
    assert main(["train", "--resume", str(run), "--steps", "6"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "phi.safetensors")]) == 0
    evaluate = ["evaluate", "--suite", str(tiny_suite), "--steps", "2", "--seeds", "1", "--batch-size", "8"]
    for init in (str(run), str(tmp_path / "phi.safetensors")):
        # a file naming the body's code does not run it unless asked to: --model names it explicitly
        assert main([*evaluate, "--init", init]) == 2
        assert main([*evaluate, "--init", init, "--model", f"{path}:small_cnn"]) == 0


def test_cli_names_a_bad_model_in_one_line(tmp_path, tiny_suite, tiny_config, capsys):
    from largemeta.cli import main

    cfg = tiny_config(tiny_suite, model="user_bodies:nope", steps=4)
    flags = sets(cfg)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "4", *flags]) == 2
    err = capsys.readouterr().err
    assert err == "largemeta: error: model 'user_bodies:nope': 'user_bodies' has no attribute 'nope'\n"
