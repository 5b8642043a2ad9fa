"""Helpers for tests and benchmarks: in-memory image tasks that need no data files.

:class:`RandomImageSampler` is a fixed pool of random images with random labels: a network can memorize it, so
losses go down, and batches are drawn with the sampler's own generators, so its ``state_dict()`` replays the
same stream. Query batches use a separate generator, so drawing them never changes the training stream.
:func:`image_problem` and :func:`make_learner` build small meta-learning problems on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from largemeta.core import SGD, MetaLearner, Reptile, Schedule
from largemeta.models import create_model, init_head, split_state
from largemeta.models.task import ImageTask


class RandomImageSampler:
    """A :class:`~largemeta.models.task.BatchSource` over ``pool`` random images (``channels`` × ``size``
    × ``size``, N(0, 1)) with labels in [0, classes)."""

    def __init__(
        self,
        size: int,
        classes: int,
        *,
        channels: int = 3,
        pool: int = 256,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
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


def image_problem(
    specs: Sequence[tuple[int, int]] = ((16, 5), (16, 5), (20, 3)),
    *,
    model: str = "convnet",
    batch: int = 8,
    seed: int = 0,
    device: str = "cpu",
    **model_kw: Any,
):
    """(body, φ, tasks, heads) for image tasks given as (image size, classes); same seed → same everything."""
    torch.manual_seed(seed)
    body = create_model(model, **model_kw)
    phi, _ = split_state(body)
    phi = {k: v.to(device) for k, v in phi.items()}
    tasks, heads = [], []
    for i, (size, classes) in enumerate(specs):
        sampler = RandomImageSampler(size, classes, pool=64, seed=100 * seed + 10 * i)
        tasks.append(ImageTask(body, sampler, classes=classes, batch_size=batch, device=device, name=f"t{i}"))
        head = init_head(classes, int(body.num_features), torch.Generator().manual_seed(1000 + i))
        heads.append({k: v.to(device) for k, v in head.items()})
    return body, phi, tasks, heads


def make_learner(
    executor=None,
    *,
    inner=None,
    schedule=None,
    meta_gradient=None,
    meta_lr: float = 0.1,
    reset_inner_state: bool = False,
    **problem_kw: Any,
) -> MetaLearner:
    """A :class:`MetaLearner` over :func:`image_problem` (CTS on Reptile, K = 4, SGD 0.05 / 0.9 / 5e-4)."""
    body, phi, tasks, heads = image_problem(**problem_kw)
    return MetaLearner(
        phi,
        tasks,
        inner or SGD(0.05, momentum=0.9, weight_decay=5e-4),
        meta_gradient or Reptile(),
        schedule or Schedule.cts(k=4),
        private=heads,
        meta_lr=meta_lr,
        executor=executor,
        reset_inner_state=reset_inner_state,
    )
