"""Image classification tasks for the core loop: a shared body template, per-task BN buffers and a head.

:class:`ImageTask` implements :class:`largemeta.core.metagrad.Task` over a :class:`BatchSource`, the data
layer's view of one dataset (``TrainQuerySampler`` over ``TaskImages`` provides it; tests use
:class:`largemeta.testing.RandomImageSampler`). The task owns its BatchNorm buffers (updated by every training
forward) and asks the sampler for a fresh batch on every loss, so inner steps, FOMAML's query losses and the
shift-error probe's replay all see the sampler's stream.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from math import nan
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from largemeta.core.params import Params
from largemeta.errors import UserError, check_positive
from largemeta.models.functional import HEAD, apply, split_state

Batch = tuple[Tensor, Tensor]


@runtime_checkable
class BatchSource(Protocol):
    """Minibatches of one task: images float (B, C, H, W) and labels long (B,).

    Training and query batches come from separate streams (FOMAML and iMAML draw query batches; the others
    never call :meth:`sample_query`). A sampler may also have ``state_dict()`` / ``load_state_dict()``, which
    make checkpoints resume and the shift-error probe replay the same batches.
    """

    def sample_train(self, batch: int) -> Batch: ...

    def sample_query(self, batch: int) -> Batch: ...


class ImageTask:
    """One classification task: cross-entropy of body + head on the sampler's batches.

    Args:
        body: the shared body template (never mutated; only its structure is used).
        sampler: where batches come from (see :class:`BatchSource`); its ``state_dict()`` /
            ``load_state_dict()``, when present, are this task's (checkpoints, the shift-error probe's
            replay).
        classes: head width.
        batch_size: training batch size; ``query_batch_size`` defaults to it.
        buffers: this task's BatchNorm buffers; default a copy of the template's.
        device: where batches and the buffers are moved (parameters are the caller's); any torch device,
            ``"meta"`` included (shapes only).
        name: for messages and metrics.

    Example::

        body = create_model("convnet", in_channels=1)
        phi, _ = split_state(body)
        task = ImageTask(body, sampler, classes=10, batch_size=32)
        head = init_head(10, feature_size(body, 1, 28), torch.Generator().manual_seed(0))
        loss = task.train_loss({**phi, **head})
    """

    def __init__(
        self,
        body: nn.Module,
        sampler: BatchSource,
        *,
        classes: int,
        batch_size: int,
        query_batch_size: int | None = None,
        buffers: Params | None = None,
        device: torch.device | str | None = None,
        name: str = "",
        rng_seed: int | None = None,
    ) -> None:
        check_positive("classes", classes, integer=True)
        check_positive("batch size", batch_size, integer=True)
        self.body, self.sampler, self.classes, self.name = body, sampler, classes, name
        self.batch_size = batch_size
        self.query_batch_size = query_batch_size or batch_size
        self.device = _device(device) if device is not None else None
        self.buffers = buffers if buffers is not None else split_state(body)[1]
        if self.device is not None:
            self.buffers = {k: v.to(self.device) for k, v in self.buffers.items()}
        self.memory_format = torch.contiguous_format
        """Memory format of input batches; the channels-last executor sets ``torch.channels_last``."""
        self._static: dict[str, Batch] = {}
        self.rng_seed = rng_seed if rng_seed is not None and draws_random_numbers(body) else None
        """A body that draws random numbers (Dropout) gets them from this task's own seed (see
        :meth:`_seed_forward`); None: the body draws none, and the global generator is left alone."""
        self.rng_draws = 0

    # Batches -------------------------------------------------------------------------------------------
    def _prepare(self, batch: Batch) -> Batch:
        x, y = batch
        if self.device is not None:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format), y

    def train_batch(self) -> Batch:
        """The next training batch (the static one while :meth:`static_inputs` is active)."""
        return (
            self._static["train"]
            if "train" in self._static
            else self._prepare(self.sampler.sample_train(self.batch_size))
        )

    def query_batch(self) -> Batch:
        return (
            self._static["query"]
            if "query" in self._static
            else self._prepare(self.sampler.sample_query(self.query_batch_size))
        )

    @contextmanager
    def static_inputs(self, train: Batch, query: Batch | None = None) -> Iterator[None]:
        """Make every loss read these tensors instead of sampling (CUDA graph capture: the graph records
        their addresses; the caller refills them in place before each replay)."""
        old = self._static
        self._static = {"train": train} | ({"query": query} if query is not None else {})
        try:
            yield
        finally:
            self._static = old

    # Losses ----------------------------------------------------------------------------------------------
    def logits(self, params: Mapping[str, Tensor], x: Tensor, train: bool = True) -> Tensor:
        if HEAD + "weight" not in params:
            raise KeyError(f"task {self.name!r}: parameters have no {HEAD}weight (its private head)")
        return apply(self.body, params, self.buffers, x, train=train)

    def loss_on(
        self, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor, y: Tensor
    ) -> Tensor:
        """Training-mode cross-entropy with explicit buffers (pure but for the buffer update; vmappable)."""
        self._seed_forward()
        return F.cross_entropy(apply(self.body, params, buffers, x, train=True), y)

    def _seed_forward(self) -> None:
        """Seed the global generator for this forward from the task's seed and its count of forwards, which
        the checkpoint keeps: Dropout's masks then depend on the task and its step alone — the same after a
        resume, and on any number of ranks (a task's batch split over a task group still draws per rank)."""
        if self.rng_seed is None:
            return
        if (
            self.device is not None
            and self.device.type == "cuda"
            and torch.cuda.is_current_stream_capturing()
        ):
            return  # a CUDA graph being captured: its replays advance the generator themselves
        torch.manual_seed((self.rng_seed * 1_000_003 + self.rng_draws) % (1 << 63))
        self.rng_draws += 1

    def train_loss(self, params: Params) -> Tensor:
        """Cross-entropy on a fresh training batch; updates this task's BN running statistics."""
        return self.loss_on(params, self.buffers, *self.train_batch())

    def query_loss(self, params: Params) -> Tensor:
        """Cross-entropy on a fresh query batch, in train mode like the inner loss (batch statistics; the
        query forward also updates the running statistics, as one more minibatch of this task would)."""
        return self.loss_on(params, self.buffers, *self.query_batch())

    @torch.no_grad()
    def loss_and_accuracy(
        self, params: Mapping[str, Tensor], batches: Iterable[tuple[Tensor, Tensor]]
    ) -> dict[str, float]:
        """``{"loss": mean cross-entropy, "accuracy": fraction correct}`` over ``batches`` of (x, y), in eval
        mode: BatchNorm normalizes with this task's running statistics and nothing is updated (NaN for no
        images). The one accuracy loop of the library (held-out accuracy while training, the meta-test
        protocol)."""
        total_loss, correct, n = 0.0, 0, 0
        for batch in batches:
            xb, yb = self._prepare(batch)
            out = self.logits(params, xb, train=False)
            total_loss += float(F.cross_entropy(out.float(), yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
            n += len(yb)
        return {"loss": total_loss / n, "accuracy": correct / n} if n else {"loss": nan, "accuracy": nan}

    # Checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Sampler state (to replay the same batches) and the BN buffers (they change with every step)."""
        sampler = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None
        state = {
            "sampler": copy.deepcopy(sampler),
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
        }
        if self.rng_seed is not None:
            state["rng_draws"] = self.rng_draws
        return state

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(copy.deepcopy(state["sampler"]))
        for k, v in state["buffers"].items():
            self.buffers[k].copy_(v)  # in place: executors and graphs may hold these tensors
        self.rng_draws = int(state.get("rng_draws", 0))


def draws_random_numbers(body: nn.Module) -> bool:
    """Whether ``body`` holds a module known to draw random numbers in training mode (the Dropout family)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in body.modules())


def _device(device: torch.device | str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(
            f"device {device!r} is not a torch device (valid: cpu, cuda, cuda:N, mps, meta)"
        ) from None
