"""A body of your own for ``largemeta train`` (see docs/models.md).

    largemeta train --config offline --out runs/mine --set model=examples/my_body.py:small_cnn

A factory is any callable returning an ``nn.Module`` that maps images (B, C, H, W) to features (B, F). It is
called with the options it names: ``in_channels`` (the tasks' channel count) and ``width`` (the config's
``width``). It need not say what F is: largemeta finds it with one forward pass. Standard BatchNorm layers
get per-task running statistics, as in the built-in bodies.
"""

from __future__ import annotations

from torch import nn


def small_cnn(in_channels: int = 1, width: int = 32) -> nn.Module:
    """Two conv–BatchNorm–ReLU–max-pool blocks and a global average pool: ``width`` features per image."""

    def block(c_in: int) -> list[nn.Module]:
        # no conv bias: the BatchNorm right after it removes the batch mean anyway
        conv = nn.Conv2d(c_in, width, 3, padding=1, bias=False)
        return [conv, nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(in_channels), *block(width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
