"""Bodies, registry, functional application with per-task BatchNorm buffers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from largemeta.errors import UserError
from largemeta.models import (
    HEAD,
    ZeroPadShortcut,
    apply,
    count_parameters,
    create_model,
    init_head,
    list_models,
    split_state,
)


def resnet20_body_count() -> int:
    """By hand: 3×3 convs have no bias; every BatchNorm has 2·C affine parameters."""
    conv = lambda i, o: 9 * i * o  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    stem = conv(3, 16) + bn(16)  # 432 + 32 = 464
    block = lambda i, o: conv(i, o) + bn(o) + conv(o, o) + bn(o)  # noqa: E731 (shortcuts are parameter-free)
    stage1 = 3 * block(16, 16)  # 3 × 4,672 = 14,016
    stage2 = block(16, 32) + 2 * block(32, 32)  # 13,952 + 2 × 18,560 = 51,072
    stage3 = block(32, 64) + 2 * block(64, 64)  # 55,552 + 2 × 73,984 = 203,520
    return stem + stage1 + stage2 + stage3


def test_resnet20_parameter_count_by_hand():
    body = create_model("resnet20")
    assert resnet20_body_count() == 269_072
    assert count_parameters(body) == 269_072
    head = init_head(10, body.num_features)
    with_head = count_parameters(body) + sum(v.numel() for v in head.values())
    assert with_head == 269_722  # + 64·10 + 10: the paper's "0.27M"
    assert body.num_features == 64


def test_resnet20_has_19_batchnorms_and_no_shortcut_parameters():
    body = create_model("resnet20")
    bns = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 19  # stem + 2 per block × 9
    assert all("shortcut" not in name for name, _ in body.named_parameters())


@pytest.mark.parametrize("size", [28, 32, 64, 84])
@pytest.mark.parametrize("name", ["resnet20", "convnet"])
def test_output_shapes_at_task_sizes(name, size):
    body = create_model(name).eval()
    out = body(torch.randn(2, 3, size, size))
    assert out.shape == (2, body.num_features)


def test_in_channels_configurable():
    body = create_model("resnet20", in_channels=1)
    assert body(torch.randn(2, 1, 28, 28)).shape == (2, 64)
    assert create_model("convnet", in_channels=1, width=8).num_features == 8


def test_zero_pad_shortcut_subsamples_and_pads_channels():
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)  # ⌈7/2⌉, like the stride-2 conv beside it
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0


def test_resnet_stride2_block_uses_zero_pad_shortcut():
    body = create_model("resnet20")
    assert isinstance(body.layer2[0].shortcut, ZeroPadShortcut)
    assert body.layer1[0].shortcut is None and body.layer2[1].shortcut is None


def test_registry_unknown_name_lists_valid_ones():
    with pytest.raises(UserError, match=r"unknown model 'resnet21' \(valid: convnet, resnet18, resnet20, "):
        create_model("resnet21")
    assert list_models() == ["convnet", "resnet18", "resnet20"]
    assert list_models("resnet*") == ["resnet18", "resnet20"]


def test_resnet18_needs_torchvision_or_builds():
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(UserError, match=r"pip install largemeta\[vision\]"):
            create_model("resnet18")
    else:
        body = create_model("resnet18")
        assert body.num_features == 512
        assert body(torch.randn(2, 3, 64, 64)).shape == (2, 512)


@pytest.mark.parametrize("name", ["convnet", "resnet20"])
def test_split_state_names_and_copies(name):
    body = create_model(name)
    params, buffers = split_state(body)
    assert set(params) == {k for k, _ in body.named_parameters()}
    assert set(buffers) == {k for k, _ in body.named_buffers()}
    assert not any(k.startswith(HEAD) for k in params)
    for k, p in body.named_parameters():
        assert torch.equal(params[k], p) and params[k].data_ptr() != p.data_ptr()


def test_functional_apply_matches_module_forward():
    torch.manual_seed(0)
    body = create_model("convnet", width=8)
    params, buffers = split_state(body)
    head = init_head(5, body.num_features, torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 16, 16)
    ref = torch.nn.functional.linear(body.train()(x), head[HEAD + "weight"], head[HEAD + "bias"])
    out = apply(body, {**params, **head}, buffers, x, train=True)
    torch.testing.assert_close(out, ref)


def test_per_task_batchnorm_buffers_update_in_place_and_template_untouched():
    torch.manual_seed(0)
    body = create_model("resnet20")
    template = {k: v.clone() for k, v in body.state_dict().items()}
    params, _ = split_state(body)
    head = init_head(3, body.num_features)
    buf_a, buf_b = split_state(body)[1], split_state(body)[1]
    a_mean = buf_a["bn1.running_mean"]
    apply(body, {**params, **head}, buf_a, torch.randn(4, 3, 28, 28) + 2.0, train=True)
    apply(body, {**params, **head}, buf_b, torch.randn(4, 3, 28, 28) - 2.0, train=True)
    assert buf_a["bn1.running_mean"] is a_mean  # updated in place, same tensor
    assert int(buf_a["bn1.num_batches_tracked"]) == 1 and int(buf_b["bn1.num_batches_tracked"]) == 1
    assert not torch.equal(buf_a["bn1.running_mean"], template["bn1.running_mean"])
    assert not torch.equal(buf_a["layer3.2.bn2.running_var"], buf_b["layer3.2.bn2.running_var"])
    for k, v in body.state_dict().items():  # the template's own parameters and buffers never change
        assert torch.equal(v, template[k]), k
    # eval mode reads the buffers and writes nothing
    before = {k: v.clone() for k, v in buf_a.items()}
    apply(body, {**params, **head}, buf_a, torch.randn(4, 3, 28, 28), train=False)
    assert all(torch.equal(before[k], buf_a[k]) for k in before)
    assert body.training  # the template's mode is restored


def test_init_head_is_reproducible_and_shaped():
    a = init_head(7, 64, torch.Generator().manual_seed(3))
    b = init_head(7, 64, torch.Generator().manual_seed(3))
    assert a.keys() == {"head.weight", "head.bias"} and a["head.weight"].shape == (7, 64)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["head.weight"].abs().max()) <= 1 / 8


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_runs(name):
    """Registry-wide smoke test: a new entry is tested the moment it is registered."""
    if name == "resnet18" and importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision not installed")
    body = create_model(name).eval()
    assert body(torch.randn(2, 3, 32, 32)).shape == (2, body.num_features)


def test_create_model_passes_each_factory_only_the_options_it_takes(monkeypatch):
    """Call sites offer what they know; resnet20 uses the width, a factory without one never sees it."""
    from largemeta.models import MODELS

    assert create_model("resnet20", in_channels=1, width=8).num_features == 32  # 4 · width
    seen = {}

    def no_width(in_channels=3):
        seen["in_channels"] = in_channels
        return torch.nn.Flatten()

    monkeypatch.setitem(MODELS._entries, "test-no-width", no_width)  # registered for this test only
    create_model("test-no-width", in_channels=1, width=16, weights=None)
    assert seen == {"in_channels": 1}
    # None means "not given": the factory's default applies
    assert create_model("convnet", width=None).num_features == 32
