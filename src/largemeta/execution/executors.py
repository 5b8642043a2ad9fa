"""Faster ways to compute one inner step's gradients of every task, each a drop-in for the plain loop.

An executor (:class:`largemeta.core.runner.Executor`) is a callable ``executor(runner)`` yielding ``(t, loss,
gradients)`` for every task of a :class:`~largemeta.core.runner.TaskRunner`, which applies each task's inner
optimizer step as they come. :class:`ChannelsLast` and :class:`Autocast` wrap another executor, so options
compose (``Autocast(inner=ChannelsLast())``). Every one is tested against
:func:`largemeta.core.runner.loop_gradients`.

Where each one pays (measured on an H200, not by this module's tests): bf16 autocast + channels-last ≈
1.7× over the fp32 loop; graph capture on top ≈ 3.2×; vmap over same-shaped tasks ≈ 1.8× (with GroupNorm
there; here BatchNorm's running statistics are vmapped too). On a 2-core CPU (ConvNet, 28 px) channels-last +
bf16 took 0.45–0.55× the loop's time and vmap 1.5–1.6×.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.func import vmap

from largemeta.core.runner import Executor, TaskGradients, TaskRunner, loop_gradients
from largemeta.errors import UserError, choice_error


class ChannelsLast:
    """Run conv weights and image batches in ``torch.channels_last`` (NHWC) memory format.

    The first call converts, in place (same tensor objects, so the outer optimizer and the controller keep
    their references), every 4-d tensor of φ and of each task's parameters, and sets ``memory_format`` on
    tasks that have it (:class:`largemeta.models.task.ImageTask`) so batches arrive in NHWC. Clones, shifts
    and restarts preserve the format afterwards. Numerically the same computation (different kernels; fp32
    results agree to rounding).
    """

    def __init__(self, inner: Executor = loop_gradients) -> None:
        self.inner = inner
        self._converted: weakref.WeakSet[TaskRunner] = weakref.WeakSet()

    @staticmethod
    @torch.no_grad()
    def convert(runner: TaskRunner) -> None:
        fmt = torch.channels_last
        for params in [runner.phi, *runner.params]:
            for p in params.values():
                if p.dim() == 4 and not p.is_contiguous(memory_format=fmt):
                    p.data = p.data.contiguous(memory_format=fmt)
        for task in runner.tasks:
            if hasattr(task, "memory_format"):
                task.memory_format = fmt

    def __call__(self, runner: TaskRunner) -> Iterator[TaskGradients]:
        if runner not in self._converted:
            self.convert(runner)
            self._converted.add(runner)
        return iter(self.inner(runner))


class Autocast:
    """Compute the inner steps' gradients under ``torch.autocast`` (bf16 by default) on the parameters'
    device.

    Convolutions and matmuls run in bf16, losses (cross-entropy is on autocast's fp32 list), parameters,
    gradients, optimizer states and the meta-update stay fp32 — so φ, the shift and the Reptile difference are
    exact fp32 arithmetic and only the task gradients carry bf16 rounding. float16 is refused: it needs loss
    scaling, which the inner loop does not do. The autocast weight cache is off (it would pin casts of tensors
    that change every step, and CUDA graph capture forbids it).
    """

    DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

    def __init__(self, dtype: torch.dtype | str = torch.bfloat16, inner: Executor = loop_gradients) -> None:
        if isinstance(dtype, str):
            if dtype not in self.DTYPES:
                raise choice_error("autocast dtype", dtype, self.DTYPES)
            dtype = self.DTYPES[dtype]
        if dtype != torch.bfloat16:
            raise UserError(
                f"autocast dtype {dtype} is not supported (float16 needs loss scaling; use bfloat16)"
            )
        self.dtype, self.inner = dtype, inner

    def __call__(self, runner: TaskRunner) -> Iterator[TaskGradients]:
        device_type = next(iter(runner.phi.values())).device.type
        results = iter(self.inner(runner))
        while True:  # autocast around the computation of each task's gradients only, never around their use
            with torch.autocast(device_type, dtype=self.dtype, cache_enabled=False):
                item = next(results, None)
            if item is None:
                return
            yield item


class Batched:
    """One vmapped forward/backward per group of same-shaped tasks (``torch.func.vmap`` over stacked tensors).

    Tasks are grouped when they share the body template and every parameter, buffer and batch shape (same
    image size, same head width); each group's parameters, BatchNorm buffers and batches are stacked along a
    new task dimension and one ``vmap``-ed loss gives every task its gradient (the tasks are independent, so
    the gradient of the sum of their losses w.r.t. the stack is the stack of their gradients). BatchNorm stays
    exact: the stacked running statistics are vmapped inputs, so each task's slice is updated in place with
    its own batch statistics, then copied back to the task.

    Tasks must offer ``body``, ``buffers``, ``train_batch()`` and ``loss_on(params, buffers, x, y)``
    (:class:`~largemeta.models.task.ImageTask`); other tasks take the plain loop's gradients. Stacking copies
    the parameters each step (cheap next to the convolutions; the runner keeps per-task tensors).

    Meant for GPUs: vmap turns the per-task convolutions into grouped ones, which CPU kernels run slower
    (measured 1.5–1.6× the loop's time for 5 same-shaped ConvNet tasks, ``benchmarks/meta_step.py --size
    cpu``). In the paper's task set only the two 64 px / 100-class tasks share shapes.
    """

    def __call__(self, runner: TaskRunner) -> Iterator[TaskGradients]:
        groups: dict[tuple, list[int]] = {}
        batches: dict[int, tuple[Tensor, Tensor]] = {}
        for t, task in enumerate(runner.tasks):
            if not all(hasattr(task, a) for a in ("body", "buffers", "train_batch", "loss_on")):
                yield (t, *runner.task_gradients(t))
                continue
            batches[t] = task.train_batch()
            groups.setdefault(self._key(runner, t, batches[t]), []).append(t)
        for members in groups.values():
            yield from self._group_gradients(runner, members, batches)

    @staticmethod
    def _key(runner: TaskRunner, t: int, batch: tuple[Tensor, Tensor]) -> tuple:
        task = runner.tasks[t]
        shapes = lambda d: tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in d.items())  # noqa: E731
        return (
            id(task.body),
            type(task).loss_on,
            shapes(runner.params[t]),
            shapes(task.buffers),
            tuple(batch[0].shape),
            tuple(batch[1].shape),
        )

    @staticmethod
    def _group_gradients(runner: TaskRunner, members: Sequence[int], batches: dict) -> list[TaskGradients]:
        tasks = runner.tasks
        names = list(runner.params[members[0]])
        lead = tasks[members[0]]
        stacked = {
            k: torch.stack([runner.params[t][k].detach() for t in members]).requires_grad_(True)
            for k in names
        }
        buffers = {k: torch.stack([tasks[t].buffers[k] for t in members]) for k in lead.buffers}
        x = torch.stack([batches[t][0] for t in members])
        y = torch.stack([batches[t][1] for t in members])
        per_task = vmap(lead.loss_on)(stacked, buffers, x, y)
        total = per_task.sum()
        if runner.regularizer is not None:
            for i in range(len(members)):
                reg = runner.regularizer({k: stacked[k][i] for k in runner.phi})
                if reg is not None:
                    total = total + reg
        grads = dict(zip(names, torch.autograd.grad(total, [stacked[k] for k in names]), strict=True))
        with torch.no_grad():
            for i, t in enumerate(members):
                for k, b in tasks[t].buffers.items():
                    b.copy_(buffers[k][i])
        return [(t, per_task[i].detach(), [grads[k][i] for k in names]) for i, t in enumerate(members)]
