"""Faster ways to run one inner step of every task, each a drop-in for the engine's plain loop.

An *executor* is a callable ``executor(learner) -> losses`` (a 1-d tensor, one training loss per task) given to
``MetaLearner(executor=...)``; :class:`ChannelsLast` and :class:`Autocast` wrap another executor, so options
compose (``Autocast(inner=ChannelsLast())``). :class:`CudaGraphMetaStep` is different: it replaces
``learner.inner_step`` and captures a whole meta-step (every task's inner step, the meta-update and the CTS
shift) in one CUDA graph. Every option is tested against :func:`largemeta.core.engine.loop_executor`.

Where each one pays (anchors measured on an H200 in ``shared/reference/performance-anchors.md``; none of these
figures were measured by this module's authors, whose machines have no GPU): bf16 autocast + channels-last ≈ 1.7×
over the fp32 loop; graph capture on top ≈ 3.2×; vmap over same-shaped tasks ≈ 1.8× (with GroupNorm there; here
BatchNorm's running statistics are vmapped too). On a 2-core CPU (ConvNet, 28 px) channels-last + bf16 took
0.45–0.55× the loop's time and vmap 1.5–1.6×.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from largemeta.core.engine import MetaLearner, loop_executor
from largemeta.core.inner import SGD
from largemeta.errors import UserError, choice_error

Executor = Callable[[MetaLearner], Tensor]


class ChannelsLast:
    """Run conv weights and image batches in ``torch.channels_last`` (NHWC) memory format.

    The first call converts, in place (same tensor objects, so the outer optimizer and the engine keep their
    references), every 4-d tensor of φ and of each task's parameters, and sets ``memory_format`` on tasks that
    have it (:class:`largemeta.models.task.ImageTask`) so batches arrive in NHWC. The engine's clones, shifts
    and restarts preserve the format afterwards. Numerically the same computation (different kernels; fp32
    results agree to rounding).
    """

    def __init__(self, inner: Executor = loop_executor) -> None:
        self.inner = inner
        self._converted: weakref.WeakSet[MetaLearner] = weakref.WeakSet()

    @staticmethod
    @torch.no_grad()
    def convert(learner: MetaLearner) -> None:
        fmt = torch.channels_last
        for params in [learner.phi, *learner.params]:
            for p in params.values():
                if p.dim() == 4 and not p.is_contiguous(memory_format=fmt):
                    p.data = p.data.contiguous(memory_format=fmt)
        for task in learner.tasks:
            if hasattr(task, "memory_format"):
                task.memory_format = fmt

    def __call__(self, learner: MetaLearner) -> Tensor:
        if learner not in self._converted:
            self.convert(learner)
            self._converted.add(learner)
        return self.inner(learner)


class Autocast:
    """Run the inner steps under ``torch.autocast`` (bf16 by default) on the parameters' device.

    Convolutions and matmuls run in bf16, losses (cross-entropy is on autocast's fp32 list), parameters,
    gradients, optimizer states and the meta-update stay fp32 — so φ, the shift and the Reptile difference are
    exact fp32 arithmetic and only the task gradients carry bf16 rounding. float16 is refused: it needs loss
    scaling, which the inner loop does not do. The autocast weight cache is off (it would pin casts of tensors
    that change every step, and CUDA graph capture forbids it).
    """

    DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

    def __init__(self, dtype: torch.dtype | str = torch.bfloat16, inner: Executor = loop_executor) -> None:
        if isinstance(dtype, str):
            if dtype not in self.DTYPES:
                raise choice_error("autocast dtype", dtype, self.DTYPES)
            dtype = self.DTYPES[dtype]
        if dtype != torch.bfloat16:
            raise UserError(
                f"autocast dtype {dtype} is not supported (float16 needs loss scaling; use bfloat16)")
        self.dtype, self.inner = dtype, inner

    def __call__(self, learner: MetaLearner) -> Tensor:
        device_type = next(iter(learner.phi.values())).device.type
        with torch.autocast(device_type, dtype=self.dtype, cache_enabled=False):
            return self.inner(learner)


class Batched:
    """One vmapped forward/backward per group of same-shaped tasks (``torch.func.vmap`` over stacked tensors).

    Tasks are grouped when they share the body template and every parameter, buffer and batch shape (same image
    size, same head width); each group's parameters, BatchNorm buffers and batches are stacked along a new task
    dimension and one ``vmap``-ed loss gives every task its gradient (the tasks are independent, so the
    gradient of the sum of their losses w.r.t. the stack is the stack of their gradients). BatchNorm stays
    exact: the stacked running statistics are vmapped inputs, so each task's slice is updated in place with its
    own batch statistics, then copied back to the task. A task alone in its group takes the plain step.
    The inner optimizer then steps each task on its own state, exactly as the loop does.

    Tasks must offer ``body``, ``buffers``, ``train_batch()`` and ``loss_on(params, buffers, x, y)``
    (:class:`~largemeta.models.task.ImageTask`); other tasks run the plain step. Stacking copies the parameters
    each step (cheap next to the convolutions; the engine keeps per-task tensors).

    Meant for GPUs: vmap turns the per-task convolutions into grouped ones, which CPU kernels run slower
    (measured 1.5–1.6× the loop's time for 5 same-shaped ConvNet tasks, ``benchmarks/meta_step.py --size cpu``).
    In the paper's task set only the two 64 px / 100-class tasks share shapes.
    """

    def __call__(self, learner: MetaLearner) -> Tensor:
        losses: list[Tensor | None] = [None] * len(learner.tasks)
        groups: dict[tuple, list[int]] = {}
        batches: dict[int, tuple[Tensor, Tensor]] = {}
        for t, task in enumerate(learner.tasks):
            if not all(hasattr(task, a) for a in ("body", "buffers", "train_batch", "loss_on")):
                losses[t] = learner.task_inner_step(t)
                continue
            batches[t] = task.train_batch()
            groups.setdefault(self._key(learner, t, batches[t]), []).append(t)
        for members in groups.values():
            for t, loss in zip(members, self._group_step(learner, members, batches)):
                losses[t] = loss
        return torch.stack(losses)  # type: ignore[arg-type]

    @staticmethod
    def _key(learner: MetaLearner, t: int, batch: tuple[Tensor, Tensor]) -> tuple:
        task = learner.tasks[t]
        shapes = lambda d: tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in d.items())  # noqa: E731
        return (id(task.body), type(task).loss_on, shapes(learner.params[t]), shapes(task.buffers),
                tuple(batch[0].shape), tuple(batch[1].shape))

    @staticmethod
    def _group_step(learner: MetaLearner, members: Sequence[int], batches: dict) -> list[Tensor]:
        mg, tasks = learner.meta_gradient, learner.tasks
        names = list(learner.params[members[0]])
        lead = tasks[members[0]]
        stacked = {k: torch.stack([learner.params[t][k].detach() for t in members]).requires_grad_(True)
                   for k in names}
        buffers = {k: torch.stack([tasks[t].buffers[k] for t in members]) for k in lead.buffers}
        x = torch.stack([batches[t][0] for t in members])
        y = torch.stack([batches[t][1] for t in members])
        per_task = vmap(lead.loss_on)(stacked, buffers, x, y)
        total = per_task.sum()
        for i in range(len(members)):
            reg = mg.regularizer(learner.phi, {k: stacked[k][i] for k in learner.phi})
            if reg is not None:
                total = total + reg
        grads = dict(zip(names, torch.autograd.grad(total, [stacked[k] for k in names])))
        out = []
        with torch.no_grad():
            for i, t in enumerate(members):
                for k, b in tasks[t].buffers.items():
                    b.copy_(buffers[k][i])
                params = learner.params[t]
                if mg.observes:
                    mg.observe(t, {k: params[k].detach() for k in learner.phi}, per_task[i].detach(),
                               {k: grads[k][i] for k in learner.phi})
                learner.inner.step([params[k] for k in names], [grads[k][i] for k in names],
                                   learner.inner_states[t])
                out.append(per_task[i].detach())
        return out


EXECUTORS = ("loop", "channels_last", "autocast", "channels_last+autocast", "batched")


def make_executor(name: str) -> Executor:
    """An executor by name: ``loop``, ``channels_last``, ``autocast`` (bf16), ``channels_last+autocast``,
    ``batched``. (CUDA graph capture is :class:`CudaGraphMetaStep`, a wrapper around the learner.)"""
    if name == "loop":
        return loop_executor
    if name == "channels_last":
        return ChannelsLast()
    if name == "autocast":
        return Autocast()
    if name == "channels_last+autocast":
        return Autocast(inner=ChannelsLast())
    if name == "batched":
        return Batched()
    raise choice_error("executor", name, EXECUTORS)


class CudaGraphMetaStep:
    """A whole meta-step — every task's inner step, the meta-update and the CTS shift — as one CUDA graph.

    Use it instead of ``learner.inner_step``::

        step = CudaGraphMetaStep(learner)
        for _ in range(n):
            losses = step()

    How: the first ``warmup`` steps run eagerly on a side stream (library initialization, lazily created
    momentum buffers). Then each task gets static input tensors; before every replay a fresh batch is drawn from
    the task's sampler and copied into them, and the graph (captured once with the tasks reading the static
    tensors) replays the learner's executor and, on meta-update steps, ``learner.meta_update()``. Two graphs
    are kept: with and without a meta-update, so any ``meta_every`` works. Host-side bookkeeping stays eager:
    the step counter, ``on_step`` hooks (the shift-error probe) and restarts (in-place copies). If any captured
    tensor is replaced (a restart that re-creates the inner state, ``learner.load_state_dict``), the graphs are
    captured again; a step whose lazily created state does not exist yet runs eagerly.

    Refused (:class:`~largemeta.errors.UserError`) when it cannot be right: no CUDA or parameters off the GPU;
    an inner optimizer other than SGD (Adam's bias correction uses its step count as a Python float that changes
    every step — a graph would freeze it); meta-gradients that read host-side values (Leap turns losses into
    Python floats; iMAML's conjugate gradient does too); an outer optimizer other than ``torch.optim.SGD``;
    a process group (not tested); tasks without ``static_inputs`` (:class:`~largemeta.models.task.ImageTask`).
    Batches are drawn train-then-query per task rather than interleaved with computation: samplers must use
    separate generators for the two (``RandomImageSampler`` does) for results to equal the eager loop's.

    Untested on real hardware by its authors (no GPU on their machines); a ``gpu``-marked test compares it with
    the eager loop.
    """

    GRAPHABLE_META_GRADIENTS = ("reptile", "fomaml")

    def __init__(self, learner: MetaLearner, warmup: int = 3) -> None:
        check_graphable(learner)
        self.learner, self.warmup = learner, warmup
        self._eager_steps = 0
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        self._outputs: dict[bool, Tensor] = {}
        self._static: list[dict[str, tuple[Tensor, Tensor]]] = []
        self._fingerprint: tuple[int, ...] = ()
        self._stream = torch.cuda.Stream()

    def _tensors(self) -> list[Tensor]:
        """Every persistent tensor a graph reads or writes; their addresses fingerprint the capture."""
        lr = self.learner
        out = list(lr.phi.values())
        for t, params in enumerate(lr.params):
            out += params.values()
            out += getattr(lr.tasks[t], "buffers", {}).values()
            buf = lr.inner_states[t].get("momentum_buffer")
            out += buf or []
        return out

    def _ready(self, full: bool) -> bool:
        """Whether all lazily created state exists (else this step runs eagerly and creates it)."""
        lr = self.learner
        if lr.inner.momentum and any(s.get("momentum_buffer") is None for s in lr.inner_states):
            return False
        if full and any(g["momentum"] for g in lr.outer.param_groups):
            return all("momentum_buffer" in lr.outer.state.get(p, {}) for p in lr.phi.values())
        return True

    def _eager(self) -> Tensor:
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            losses = self.learner.inner_step()
        torch.cuda.current_stream().wait_stream(self._stream)
        self._eager_steps += 1
        return losses

    def _fill(self, full: bool) -> None:
        lr = self.learner
        query = full and lr.meta_gradient.name == "fomaml"
        fresh = not self._static
        for t, task in enumerate(lr.tasks):
            batches = {"train": task.train_batch()}
            if query:
                batches["query"] = task.query_batch()
            if fresh:
                self._static.append({})
            for key, (x, y) in batches.items():
                if key not in self._static[t]:
                    self._static[t][key] = (x.clone(), y.clone())
                else:
                    self._static[t][key][0].copy_(x, non_blocking=True)
                    self._static[t][key][1].copy_(y, non_blocking=True)

    def _capture(self, full: bool) -> None:
        lr = self.learner
        steps = [s["step"] for s in lr.inner_states]

        def meta_step() -> Tensor:
            with ExitStack() as stack:
                for task, static in zip(lr.tasks, self._static):
                    stack.enter_context(task.static_inputs(static["train"], static.get("query")))
                losses = lr.executor(lr)
                if full:
                    lr.meta_update()
            return losses

        graph = torch.cuda.CUDAGraph()
        losses = _capture_graph(graph, meta_step)
        for s, n in zip(lr.inner_states, steps):
            s["step"] = n  # capture only recorded the step; replays count it
        self._graphs[full], self._outputs[full] = graph, losses

    def __call__(self) -> Tensor:
        lr = self.learner
        full = (lr.step + 1) % lr.schedule.meta_every == 0
        if self._eager_steps < self.warmup or not self._ready(full):
            return self._eager()
        fingerprint = tuple(p.data_ptr() for p in self._tensors())
        if fingerprint != self._fingerprint:
            self._graphs.clear()
            self._outputs.clear()
            self._fingerprint = fingerprint
        self._fill(full)
        if full not in self._graphs:
            self._capture(full)
        self._graphs[full].replay()
        lr.step += 1
        for s in lr.inner_states:
            s["step"] += 1
        for hook in lr.on_step:
            hook(lr)
        if lr.step % lr.schedule.k == 0:
            lr.restart()
        return self._outputs[full].clone()

    def run(self, steps: int) -> Tensor:
        losses = torch.empty(0)
        for _ in range(steps):
            losses = self()
        return losses


def _capture_graph(graph: torch.cuda.CUDAGraph, fn: Callable[[], Tensor]) -> Tensor:
    """Record ``fn`` into ``graph`` (its kernels are recorded, not run); returns its static output.
    A seam: the CPU test of the bookkeeping substitutes an emulation that runs ``fn`` at every replay."""
    with torch.cuda.graph(graph):
        return fn()


def check_graphable(learner: MetaLearner) -> None:
    """Raise :class:`UserError` naming the first setting that CUDA graph capture cannot reproduce."""
    mg = learner.meta_gradient
    if not isinstance(learner.inner, SGD):
        raise UserError(
            f"CUDA graph capture needs an SGD inner optimizer, got {type(learner.inner).__name__}: its bias "
            "correction uses the step count as a host-side float that changes every step")
    if mg.name not in CudaGraphMetaStep.GRAPHABLE_META_GRADIENTS or mg.observes:
        raise UserError(
            f"CUDA graph capture does not support the {mg.name!r} meta-gradient: it reads host-side floats "
            f"(valid: {', '.join(CudaGraphMetaStep.GRAPHABLE_META_GRADIENTS)})")
    if type(learner.outer) is not torch.optim.SGD:
        raise UserError(f"CUDA graph capture needs torch.optim.SGD as the outer optimizer, got "
                        f"{type(learner.outer).__name__}")
    if learner.group is not None:
        raise UserError("CUDA graph capture with a process group is not supported")
    missing = [getattr(t, "name", i) for i, t in enumerate(learner.tasks) if not hasattr(t, "static_inputs")]
    if missing:
        raise UserError(
            f"CUDA graph capture needs tasks with static_inputs() (ImageTask); tasks {missing} lack it")
    _check_device(learner)


def _check_device(learner: MetaLearner) -> None:
    if not torch.cuda.is_available():
        raise UserError("CUDA graph capture needs a CUDA device; none is available")
    devices = {p.device.type for p in learner.phi.values()}
    if devices != {"cuda"}:
        raise UserError(f"CUDA graph capture needs the parameters on the GPU, they are on {sorted(devices)}")


def describe(executor: Any) -> str:
    """A short name for logs: ``autocast(channelslast(loop))``."""
    if executor is loop_executor:
        return "loop"
    inner = getattr(executor, "inner", None)
    name = type(executor).__name__.lower()
    return f"{name}({describe(inner)})" if inner is not None else name
