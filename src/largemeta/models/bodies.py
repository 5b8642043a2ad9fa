"""Feature extractors ("bodies") shared by all tasks; each task adds its own linear head.

Every built-in body is an ``nn.Module`` mapping images (B, C, H, W) to features (B, F) with
``body.num_features == F``, for any input size the architecture allows (28–84 px for the small ones). Heads
are *not* part of a body: they stay out of φ (see :mod:`largemeta.models.functional`). Each factory names the
options it takes (``create_model`` passes it only those), so ``resnet18`` simply has no ``width``.
"""

from __future__ import annotations

import importlib

import torch.nn.functional as F
from torch import Tensor, nn

from largemeta.errors import UserError, check_positive
from largemeta.models.factory import register_model


class ZeroPadShortcut(nn.Module):
    """He et al. (2016) option A: a parameter-free identity shortcut for a block that halves the resolution
    and widens the channels: subsample by taking every other pixel (what a 1×1 stride-2 identity would see)
    and zero-pad the new channels, half before and half after the old ones (as the common CIFAR ResNet
    code)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"zero-pad shortcut cannot shrink {in_planes} -> {out_planes} channels")
        self.stride = stride
        self.before = (out_planes - in_planes) // 2
        self.after = out_planes - in_planes - self.before

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after)) if self.before or self.after else x


class BasicBlock(nn.Module):
    """conv3×3–BN–ReLU–conv3×3–BN plus shortcut, then ReLU (the CIFAR ResNet block)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut = ZeroPadShortcut(in_planes, planes, stride) if needs_shortcut else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, §4.2): a 3×3 stem, three stages of ``blocks`` basic blocks at
    widths w, 2w, 4w (the 2nd and 3rd halve the resolution), global average pooling. Depth = 6·blocks + 2."""

    def __init__(self, blocks: int = 3, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        check_positive("blocks per stage", blocks, integer=True)
        check_positive("width", width, integer=True)
        check_positive("in_channels", in_channels, integer=True)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for j in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))


@register_model("resnet20")
def resnet20(in_channels: int = 3, width: int = 16) -> nn.Module:
    """The paper's ResNet-20 body (3 stages × 3 basic blocks, 16/32/64 channels, 64 features)."""
    return CifarResNet(blocks=3, width=width, in_channels=in_channels)


class ConvNet(nn.Module):
    """``depth`` × [conv3×3 (``width`` channels), BN, ReLU, max-pool 2], then global average pooling.

    The 4-block version is the usual few-shot "Conv-4"; at 28 px the last pool leaves 1×1, so the average pool
    only matters for larger inputs (it makes the feature size independent of the image size).
    """

    def __init__(self, width: int = 32, depth: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        check_positive("width", width, integer=True)
        check_positive("depth", depth, integer=True)
        check_positive("in_channels", in_channels, integer=True)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                # no conv bias: the BatchNorm right after subtracts the batch mean, so its gradient is zero
                # up to rounding (and Adam would turn that rounding noise into full-size steps)
                nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


@register_model("convnet")
def convnet(in_channels: int = 3, width: int = 32, depth: int = 4) -> nn.Module:
    """A small ConvNet for CPU runs (default 4 blocks of 32 channels, 32 features; needs ≥ 2^depth px)."""
    return ConvNet(width=width, depth=depth, in_channels=in_channels)


@register_model("resnet18")
def resnet18(in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet-18 body (512 features), optionally with named torchvision ``weights``
    (e.g. ``"IMAGENET1K_V1"``, downloaded by torchvision). Needs the ``vision`` extra."""
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError as err:
        raise UserError("model 'resnet18' needs torchvision: pip install largemeta[vision]") from err
    except Exception as err:  # installed, but built for another torch (e.g. "operator torchvision::nms ...")
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"model 'resnet18' needs torchvision, which does not import here "
            f"({type(err).__name__}: {first}): install the build that matches torch"
        ) from err
    net = models.resnet18(weights=weights)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.num_features = net.fc.in_features
    net.fc = nn.Identity()  # the body ends at the pooled features; heads are per task
    return net


def count_parameters(module: nn.Module) -> int:
    """The number of scalars in ``module``'s parameters (buffers not counted)."""
    return sum(p.numel() for p in module.parameters())
