"""Helpers for tests and benchmarks: stand-ins that need no data files.

:class:`RandomImageSampler` is a fixed pool of random images with random labels: a network can memorize it, so
losses go down, and batches are drawn with the sampler's own generators, so its ``state_dict()`` replays the
same stream. Query batches use a separate generator, so drawing them never changes the training stream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class RandomImageSampler:
    """A :class:`~largemeta.models.task.BatchSampler` over ``pool`` random images (``channels`` × ``size``
    × ``size``, N(0, 1)) with labels in [0, classes)."""

    def __init__(self, size: int, classes: int, *, channels: int = 3, pool: int = 256, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        gen = torch.Generator().manual_seed(seed)
        # The pool may live on the GPU (benchmarks: no host-to-device copy per batch); indices are drawn on
        # the CPU generator either way, so the stream of batches does not depend on the device.
        self.x = torch.randn(pool, channels, size, size, generator=gen).to(device)
        self.y = torch.randint(0, classes, (pool,), generator=gen).to(device)
        self.train_gen = torch.Generator().manual_seed(seed + 1)
        self.query_gen = torch.Generator().manual_seed(seed + 2)

    def _draw(self, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self.x), (batch,), generator=gen).to(self.x.device)
        return self.x[idx], self.y[idx]

    def sample_train(self, batch: int) -> tuple[Tensor, Tensor]:
        return self._draw(batch, self.train_gen)

    def sample_query(self, batch: int) -> tuple[Tensor, Tensor]:
        return self._draw(batch, self.query_gen)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train_gen.get_state(), "query": self.query_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_gen.set_state(state["train"])
        self.query_gen.set_state(state["query"])
