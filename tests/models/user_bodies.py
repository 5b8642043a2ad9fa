"""Bodies a user might write, named in tests as ``user_bodies:NAME`` (this folder is on ``sys.path`` in
tests), plus broken factories for the error tests."""

from __future__ import annotations

import torch
from torch import nn

CALLS: list[dict] = []
"""The options each recording factory was called with."""


def bn_body(in_channels: int = 3, width: int = 4) -> nn.Module:
    """conv → BatchNorm2d → ReLU → global pool → linear → BatchNorm1d: ``2 · width`` features, no
    ``num_features`` attribute (found by a forward pass)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 2 * width),
        nn.BatchNorm1d(2 * width),
    )


def flat_body(in_channels: int = 1) -> nn.Module:
    """No pooling: the feature size depends on the image size (``4 · H · W``)."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.Flatten())


def recording(in_channels: int = 3) -> nn.Module:
    """Takes ``in_channels`` only: ``width`` and anything else offered must not reach it."""
    CALLS.append({"in_channels": in_channels})
    return bn_body(in_channels)


class TinyNet(nn.Module):
    """A class is a factory too; it declares its feature size."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 6, 3)
        self.num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class HostSync(nn.Module):
    """A forward with a host-side read (``.item()``): no meta kernel, so feature_size runs it for real."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x).mean(dim=(2, 3))
        return out * 2 if float(out.abs().sum().item()) >= 0 else out


def fixed_three_channels() -> nn.Module:
    """Ignores the tasks' channel count: fails on grey images."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def no_pool(in_channels: int = 3) -> nn.Module:
    return nn.Conv2d(in_channels, 4, 3, padding=1)  # (B, 4, H, W): not a feature batch


def returns_tuple(in_channels: int = 3) -> nn.Module:
    class Pair(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)), x

    return Pair()


def raising(in_channels: int = 3) -> nn.Module:
    raise ValueError(f"width must be even, got {in_channels}\nand a second line nobody needs")


def returns_tensor(in_channels: int = 3):
    return torch.zeros(3)


NOT_CALLABLE = 42
