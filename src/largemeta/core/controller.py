"""The outer half of meta-learning: φ, its optimizer, the meta-gradient and the schedule of updates and
restarts.

A :class:`MetaController` never takes an inner step. It is handed the running trajectories — every task's
parameter dict θ_t, holding each key of φ (the *shared* part) plus task-private keys such as a head — and,
after each inner step of all of them, does what the :class:`Schedule` asks::

    if step % meta_every == 0:                  # a meta-update
        g  = mean_t meta_gradient_t(φ, θ_t)     # over every task of every rank: one all-reduce
        φ' = outer.step(φ, g)                   # any torch.optim optimizer over φ
        if shift: shared(θ_t) += φ' − φ         # CTS: move every running trajectory with φ
    if step % k == 0:                           # restart every trajectory from φ
        shared(θ_t) = φ

Who takes the inner steps is not its business: the library's :class:`~largemeta.core.runner.TaskRunner` (the
CLI trainer, :class:`~largemeta.core.engine.MetaLearner`) or a user's own loop (:mod:`largemeta.api`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from largemeta.core.metagrad import META_GRADIENTS, MetaGradient, Task
from largemeta.core.params import Params, clone, sq_norm, unflatten
from largemeta.errors import UserError, check_positive


@dataclass(frozen=True)
class Schedule:
    """When meta-updates and restarts happen, counted in inner steps."""

    k: int
    """Horizon: inner steps per trajectory before a restart from φ."""
    meta_every: int
    """Inner steps between meta-updates (k for the plain algorithms, 1 for the paper's CTS)."""
    shift: bool
    """Shift every running trajectory by φ' − φ after each meta-update (CTS)."""

    def __post_init__(self) -> None:
        check_positive("K (inner steps per trajectory)", self.k, integer=True)
        check_positive("meta_every", self.meta_every, integer=True)
        if self.meta_every > self.k:
            raise UserError(f"meta_every must be <= K={self.k}, got {self.meta_every}")

    @classmethod
    def plain(cls, k: int) -> Schedule:
        return cls(k=k, meta_every=k, shift=False)

    @classmethod
    def cts(cls, k: int, meta_every: int = 1) -> Schedule:
        return cls(k=k, meta_every=meta_every, shift=True)


def mean_over_all_tasks(total: Tensor, count: int, group: Any = None) -> Tensor:
    """Σ_t over this process's ``count`` tasks (flattened ``total``) → the mean over every task of every rank,
    with one all-reduce of the sum and the task count together (ranks may hold different numbers of tasks).

    Args:
        total: the sum over this process's tasks of their flattened meta-gradients, shape (P,) for P scalars
            in φ.
        count: how many tasks that sum holds.
        group: the process group (``None``: this process alone, no communication).

    Returns:
        The mean over all tasks of all ranks, shape (P,).
    """
    # new_full is a device-side fill, not a host-to-device copy, so a CUDA graph can capture it.
    flat = torch.cat([total, total.new_full((1,), float(count))])
    if group is not None:
        dist.all_reduce(flat, group=group)
    return flat[:-1] / flat[-1]


Trajectories = Sequence[Params]
Hook = Callable[["MetaController"], None]


class MetaController:
    """φ and everything that moves it: the outer optimizer, the meta-gradient, the schedule, shifts and
    restarts.

    Args:
        phi: the shared initialization; its tensors are updated in place by ``outer``.
        meta_gradient: how a task's trajectory becomes its meta-gradient contribution.
        schedule: K, meta_every and whether to shift.
        outer: a ``torch.optim`` optimizer over ``phi.values()``; default plain SGD with ``meta_lr``.
        meta_lr: β for the default outer optimizer.
        group: a ``torch.distributed`` process group whose ranks hold the other tasks; the meta-gradient is
            averaged over all tasks of all ranks with one flattened all-reduce.

    The trajectories are passed to each call (``trajectories[t]`` is task t's live parameter dict), so the
    same controller serves tensors it owns and a user's live model parameters. ``on_step`` hooks run after
    every counted inner step (after its meta-update), ``on_restart`` hooks after every restart; each gets the
    controller.
    """

    def __init__(
        self,
        phi: Params,
        meta_gradient: MetaGradient,
        schedule: Schedule,
        *,
        outer: torch.optim.Optimizer | None = None,
        meta_lr: float = 0.01,
        group: Any = None,
    ) -> None:
        if schedule.shift and not meta_gradient.supports_cts:
            valid = [n for n in META_GRADIENTS if META_GRADIENTS.get(n).supports_cts]
            raise UserError(f"{meta_gradient.name} has no CTS form (valid with CTS: {', '.join(valid)})")
        self.phi = phi
        self.meta_gradient = meta_gradient
        self.schedule = schedule
        self.group = group
        if outer is None:
            check_positive("meta learning rate", meta_lr)
            outer = torch.optim.SGD(list(phi.values()), lr=meta_lr)
        self.outer = outer
        self.step = 0
        self.on_step: list[Hook] = []
        self.on_restart: list[Hook] = []
        self._last: tuple[Params, Params] | None = None  # (g, φ' − φ) of the last meta-update

    # ------------------------------------------------------------------------------------------- schedule
    @property
    def update_due(self) -> bool:
        """Whether the inner step being taken now ends with a meta-update."""
        return (self.step + 1) % self.schedule.meta_every == 0

    def begin(self, trajectories: Trajectories) -> None:
        """Start every trajectory at φ (shared keys copied in place; private keys untouched)."""
        for t, params in enumerate(trajectories):
            missing = set(self.phi) - set(params)
            if missing:
                raise ValueError(f"task parameters lack shared keys {sorted(missing)}")
            with torch.no_grad():
                for k, v in self.phi.items():
                    params[k].copy_(v)
            self.meta_gradient.restart(t, self.phi)

    def advance(self, trajectories: Trajectories, tasks: Sequence[Task] | None = None) -> None:
        """Count one inner step of every trajectory (taken elsewhere) and do whatever the schedule asks: the
        meta-update (and shift), the step hooks, the restart."""
        if self.update_due:
            self.meta_update(trajectories, tasks)
        self.end_step(trajectories)

    def end_step(self, trajectories: Trajectories) -> None:
        """The bookkeeping after a step whose meta-update (if due) is done: count, hooks, restart."""
        self.step += 1
        for hook in self.on_step:
            hook(self)
        if self.step % self.schedule.k == 0:
            self.restart(trajectories)

    # ------------------------------------------------------------------------------------------- updates
    def meta_gradient_now(self, trajectories: Trajectories, tasks: Sequence[Task] | None = None) -> Params:
        """The meta-gradient averaged over all tasks (all ranks when a group is set)."""
        keys = list(self.phi)
        total = None
        for t, params in enumerate(trajectories):
            task = tasks[t] if tasks is not None else None
            g = self.meta_gradient.task_gradient(t, self.phi, params, task)  # type: ignore[arg-type]
            flat = torch.cat([g[k].reshape(-1) for k in keys])
            total = flat if total is None else total + flat
        if total is None:
            raise ValueError("a meta-update needs at least one trajectory")
        return unflatten(mean_over_all_tasks(total, len(trajectories), self.group), self.phi)

    def meta_update(self, trajectories: Trajectories, tasks: Sequence[Task] | None = None) -> Params:
        """Step φ with the current meta-gradient; with CTS shift every trajectory by φ' − φ. Returns φ' −
        φ."""
        g = self.meta_gradient_now(trajectories, tasks)
        keys = list(self.phi)
        phi = [self.phi[k] for k in keys]
        with torch.no_grad():
            before = [p.clone() for p in phi]
            for k, p in self.phi.items():
                p.grad = g[k]
            self.outer.step()
            deltas = torch._foreach_sub(phi, before)
            for p in phi:
                p.grad = None
            delta = dict(zip(keys, deltas, strict=True))
            # kept on the device (no host sync per step); reduced only when read, at log time
            self._last = (g, delta)
            if self.schedule.shift:
                for t, params in enumerate(trajectories):
                    torch._foreach_add_([params[k] for k in keys], deltas)
                    self.meta_gradient.shift(t, delta)
        return delta

    @torch.no_grad()
    def restart(self, trajectories: Trajectories) -> None:
        """Start every trajectory again from φ (private keys kept), then run the restart hooks."""
        for t, params in enumerate(trajectories):
            for k, v in self.phi.items():
                params[k].copy_(v)
            self.meta_gradient.restart(t, self.phi)
        for hook in self.on_restart:
            hook(self)

    @property
    def meta_updates(self) -> int:
        """Meta-updates so far (one every ``meta_every`` inner steps)."""
        return self.step // self.schedule.meta_every

    @property
    def shifts(self) -> int:
        """Trajectory shifts so far (CTS shifts after every meta-update)."""
        return self.meta_updates if self.schedule.shift else 0

    @property
    def last_meta_grad_norm(self) -> float:
        """‖g‖ of the last meta-update (NaN before the first)."""
        return float(sq_norm(self._last[0]).sqrt()) if self._last else float("nan")

    @property
    def last_shift_norm(self) -> float:
        """‖φ' − φ‖ of the last meta-update: the shift CTS applied to every task."""
        return float(sq_norm(self._last[1]).sqrt()) if self._last else float("nan")

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self, num_tasks: int = 0) -> dict[str, Any]:
        """Step, φ, the outer optimizer, and the meta-gradient's state of tasks ``0..num_tasks-1`` (a
        list)."""
        return {
            "step": self.step,
            "phi": clone(self.phi),
            "outer": copy.deepcopy(self.outer.state_dict()),
            "meta_gradient": [copy.deepcopy(self.meta_gradient.task_state(t)) for t in range(num_tasks)],
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for k, v in state["phi"].items():
            self.phi[k].copy_(v)
        self.outer.load_state_dict(state["outer"])
        per_task = state.get("meta_gradient") or []
        for t, task_state in enumerate(per_task):
            self.meta_gradient.load_task_state(t, copy.deepcopy(task_state))
