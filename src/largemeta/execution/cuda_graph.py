"""A whole meta-step — every task's inner step, the meta-update and the CTS shift — as one CUDA graph."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import torch
from torch import Tensor

from largemeta.core.engine import MetaLearner
from largemeta.core.inner import SGD
from largemeta.core.metagrad import META_GRADIENTS
from largemeta.errors import UserError


class CudaGraphMetaStep:
    """A whole meta-step — every task's inner step, the meta-update and the CTS shift — as one CUDA graph.

    Use it instead of ``learner.inner_step``::

        step = CudaGraphMetaStep(learner)
        for _ in range(n):
            losses = step()

    How: the first ``warmup`` steps run eagerly on a side stream (library initialization, lazily created
    momentum buffers). Then each task gets static input tensors; before every replay a fresh batch is drawn
    from the task's sampler and copied into them, and the graph (captured once with the tasks reading the
    static tensors) replays ``learner.device_step`` — the executor, the inner optimizer steps and, on
    meta-update steps, the controller's meta-update. Two graphs are kept: with and without a meta-update, so
    any ``meta_every`` works. Host-side bookkeeping stays eager: the inner optimizers' step counters, then the
    controller's own ``end_step`` (its step counter, ``on_step`` hooks such as the shift-error probe,
    restarts). If any captured tensor is replaced (a restart that re-creates the inner state,
    ``learner.load_state_dict``), the graphs are captured again; a step whose lazily created state does not
    exist yet runs eagerly.

    Refused (:class:`~largemeta.errors.UserError`) when it cannot be right: no CUDA or parameters off the GPU;
    an inner optimizer other than SGD (Adam's bias correction uses its step count as a Python float that
    changes every step — a graph would freeze it); meta-gradients that read host-side values (Leap turns
    losses into Python floats; iMAML's conjugate gradient does too: ``graphable`` is false); an outer
    optimizer other than ``torch.optim.SGD``; a process group (not tested); tasks without ``static_inputs``
    (:class:`~largemeta.models.task.ImageTask`). Batches are drawn train-then-query per task rather than
    interleaved with computation: samplers must use separate generators for the two (``RandomImageSampler``
    does) for results to equal the eager loop's.

    Untested on real hardware by its authors (no GPU on their machines); a ``gpu``-marked test compares it
    with the eager loop.
    """

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
        run = self.learner.runner
        out = list(run.phi.values())
        for t, params in enumerate(run.params):
            out += params.values()
            out += getattr(run.tasks[t], "buffers", {}).values()
            buf = run.inner_states[t].get("momentum_buffer")
            out += buf or []
        return out

    def _ready(self, full: bool) -> bool:
        """Whether all lazily created state exists (else this step runs eagerly and creates it)."""
        run, outer = self.learner.runner, self.learner.controller.outer
        if run.inner.momentum and any(s.get("momentum_buffer") is None for s in run.inner_states):
            return False
        if full and any(g["momentum"] for g in outer.param_groups):
            return all("momentum_buffer" in outer.state.get(p, {}) for p in run.phi.values())
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
        query = full and lr.meta_gradient.uses_query
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
        states = lr.runner.inner_states
        steps = [s["step"] for s in states]

        def meta_step() -> Tensor:
            with ExitStack() as stack:
                for task, static in zip(lr.tasks, self._static, strict=True):
                    stack.enter_context(task.static_inputs(static["train"], static.get("query")))
                return lr.device_step(full)

        graph = torch.cuda.CUDAGraph()
        losses = _capture_graph(graph, meta_step)
        for s, n in zip(states, steps, strict=True):
            s["step"] = n  # capture only recorded the step; replays count it
        self._graphs[full], self._outputs[full] = graph, losses

    def __call__(self) -> Tensor:
        lr = self.learner
        full = lr.controller.update_due
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
        for s in lr.runner.inner_states:
            s["step"] += 1
        lr.controller.end_step(lr.params)
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
    mg, inner, outer = learner.meta_gradient, learner.runner.inner, learner.controller.outer
    if not isinstance(inner, SGD):
        raise UserError(
            f"CUDA graph capture needs an SGD inner optimizer, got {type(inner).__name__}: its bias "
            "correction uses the step count as a host-side float that changes every step"
        )
    if not mg.graphable:
        valid = [n for n in META_GRADIENTS if META_GRADIENTS.get(n).graphable]
        raise UserError(
            f"CUDA graph capture does not support the {mg.name!r} meta-gradient: it reads host-side floats "
            f"(valid: {', '.join(valid)})"
        )
    if type(outer) is not torch.optim.SGD:
        raise UserError(
            f"CUDA graph capture needs torch.optim.SGD as the outer optimizer, got {type(outer).__name__}"
        )
    if learner.controller.group is not None:
        raise UserError("CUDA graph capture with a process group is not supported")
    missing = [getattr(t, "name", i) for i, t in enumerate(learner.tasks) if not hasattr(t, "static_inputs")]
    if missing:
        raise UserError(
            f"CUDA graph capture needs tasks with static_inputs() (ImageTask); tasks {missing} lack it"
        )
    _check_device(learner)


def _check_device(learner: MetaLearner) -> None:
    if not torch.cuda.is_available():
        raise UserError("CUDA graph capture needs a CUDA device; none is available")
    devices = {p.device.type for p in learner.phi.values()}
    if devices != {"cuda"}:
        raise UserError(f"CUDA graph capture needs the parameters on the GPU, they are on {sorted(devices)}")
