"""Which rank serves which task under torchrun, and one task served by a group of ranks (data parallelism
inside a task).

With T meta-train tasks on W ranks (:func:`largemeta.train.layout.layout`):

* **W ≤ T** — tasks are dealt round-robin (rank r holds tasks r, r + W, …), each on one rank: the task
  sharding of earlier versions, unchanged.
* **W > T** — W must be a multiple of T. Each task is served by a *group* of G = W / T consecutive ranks
  (task t: ranks t·G … t·G + G − 1, so a group stays within a torchrun node whenever the node's rank count is
  a multiple of G). Other world sizes are refused in one line that lists the valid ones. Uneven groups are
  not supported: a task served by more ranks than another would weigh its slices differently, or need
  weighted averages everywhere, for no gain over choosing W as a multiple of T.

Inside a group (:func:`serve_in_groups`), every inner step of the task is one batch split over the group:

* **the batches do not depend on G.** Every rank of the group draws the task's *whole* batch from the task's
  generator — indices and augmentation randomness alike, so all of them consume the generator identically and
  hold the same sampler state — and keeps its slice (:class:`SliceSampler`; the batch size must divide by G).
  The price is G× the (cheap, on-device) batch gathering and augmentation; the forward and backward are 1/G.
* **gradients are averaged within the group** every inner step: the loss and every gradient of the task,
  flattened into one buffer per dtype, are all-reduced on the group's own process group and divided by G
  (:class:`GroupAverage`, an executor wrapper). Every rank of the group then takes the same inner step and
  holds the same θ, inner state and (with synchronised BatchNorm) the same running statistics.
* **BatchNorm statistics are synchronised** within the group (``sync_batchnorm = true``, the default:
  :mod:`largemeta.models.sync_batchnorm`), so a forward normalizes with the whole batch's statistics. With
  ``sync_batchnorm = false`` each rank normalizes its own slice (one collective less per BatchNorm layer,
  statistics of B/G images; the result then depends on G, and the checkpoint keeps the group leader's running
  statistics).
* **the meta-gradient counts each task once.** Every rank contributes its task's meta-gradient to the world
  mean (:class:`~largemeta.core.controller.MetaController`'s one all-reduce, unchanged). Each task appears on
  exactly G ranks, so the mean over the W contributions is the mean over tasks — for query-batch
  meta-gradients (FOMAML) it is the mean over each task's slices, i.e. the whole query batch's gradient.

Hence one process, or T ranks, or W = G·T ranks give the same φ up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from largemeta.core.algorithms import Algorithm
from largemeta.core.runner import Executor, TaskGradients, TaskRunner, loop_gradients
from largemeta.errors import UserError
from largemeta.models.sync_batchnorm import convert_batchnorm
from largemeta.train.layout import Layout, valid_world_sizes


def check_config(cfg: Any, lay: Layout, algo: Algorithm) -> None:
    """Refuse, in one line and on every rank alike, what a task served by several ranks cannot do."""
    g = lay.group_size
    if g == 1:
        return
    why = f"with {lay.world} ranks for {lay.slots} tasks each task is served by {g} ranks"
    if cfg.batch_size % g:
        raise UserError(
            f"batch_size {cfg.batch_size} does not split over {g} ranks ({why}): use a multiple of {g}, "
            f"or another world size ({valid_world_sizes(lay.slots)})"
        )
    if cfg.executor not in ("loop", "channels_last", "autocast", "channels_last+autocast"):
        raise UserError(
            f"executor {cfg.executor!r} runs one rank's tasks together; {why}: "
            "use loop, channels_last, autocast or channels_last+autocast"
        )
    if not algo.task_groups:
        raise UserError(f"{algo.name} {algo.why_not_task_groups}; {why}: use at most {lay.slots} ranks")
    if cfg.shift_error_every:
        raise UserError(f"shift_error_every replays one rank's slice of the batch; {why}: set it to 0")


@dataclass
class TaskGroup:
    """This rank's task group: its process group and size G."""

    group: Any
    size: int

    def mean(self, loss: Tensor, grads: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The group's mean of ``loss`` and ``grads``: one all-reduce per dtype of the flattened tensors."""
        out = group_mean([loss, *grads], self.group, self.size)
        return out[0], out[1:]

    def executor(self, inner: Executor = loop_gradients) -> GroupAverage:
        return GroupAverage(self, inner)


def group_mean(tensors: list[Tensor], group: Any, size: int) -> list[Tensor]:
    """Element-wise mean over ``group`` of each tensor: flattened into one buffer per dtype, one all-reduce
    (SUM) each, divided by ``size``; returns new tensors shaped as the inputs."""
    out: list[Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        dist.all_reduce(flat, group=group)
        flat.div_(size)
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view(tensors[i].shape)
            offset += n
    return out  # type: ignore[return-value]


class GroupAverage:
    """Executor wrapper: each task's loss and gradients from ``inner``, averaged over the task's group."""

    def __init__(self, task_group: TaskGroup, inner: Executor = loop_gradients) -> None:
        self.task_group, self.inner = task_group, inner

    def __call__(self, runner: TaskRunner) -> Iterator[TaskGradients]:
        for t, loss, grads in self.inner(runner):
            mean_loss, mean_grads = self.task_group.mean(loss, grads)
            yield t, mean_loss, mean_grads


class SliceSampler:
    """A :class:`~largemeta.models.task.BatchSource` that draws the task's whole batch from ``inner`` (so
    the generator advances as on one rank) and returns slice ``part`` of ``parts`` equal slices. Everything
    else (state, the eval split) is ``inner``'s."""

    def __init__(self, inner: Any, part: int, parts: int) -> None:
        self.inner, self.part, self.parts = inner, part, parts

    def _slice(self, batch: tuple[Tensor, Tensor], size: int) -> tuple[Tensor, Tensor]:
        if size % self.parts:
            raise UserError(f"a batch of {size} does not split over {self.parts} ranks")
        n = size // self.parts
        x, y = batch
        return x[self.part * n : (self.part + 1) * n], y[self.part * n : (self.part + 1) * n]

    def sample_train(self, batch: int) -> tuple[Tensor, Tensor]:
        return self._slice(self.inner.sample_train(batch), batch)

    def sample_query(self, batch: int) -> tuple[Tensor, Tensor]:
        return self._slice(self.inner.sample_query(batch), batch)

    def state_dict(self) -> Any:
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state: Any) -> None:
        self.inner.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def task_groups(lay: Layout, timeout_s: float) -> Any:
    """Create every task's process group — a collective: every rank, the same order — and return this rank's
    (None when G = 1: no group needed)."""
    if lay.group_size == 1:
        return None
    mine = None
    for task in range(lay.slots):
        group = dist.new_group(lay.ranks(task), timeout=timedelta(seconds=timeout_s))
        if task == lay.mine[0]:
            mine = group
    return mine


def serve_in_groups(
    lay: Layout, body: nn.Module, tasks: list[Any], *, sync_batchnorm: bool, timeout_s: float
) -> TaskGroup | None:
    """For G > 1: create the task groups, give each local task a :class:`SliceSampler`, synchronise the body's
    BatchNorm over the group (``sync_batchnorm``); returns this rank's :class:`TaskGroup` (None for G = 1).
    Call it after every forward that sizes heads (those run on the template, outside any group)."""
    g = lay.group_size
    if g == 1:
        return None
    group = task_groups(lay, timeout_s)
    for task in tasks:
        task.sampler = SliceSampler(task.sampler, lay.part, g)
    if sync_batchnorm:
        convert_batchnorm(body, group, g)
    return TaskGroup(group, g)
