"""One loop for every first-order meta-learner and its Continual Trajectory Shifting (CTS) form.

Every task t runs its own inner optimization θ_t from φ. After each inner step (over all tasks)::

    if step % meta_every == 0:                  # a meta-update
        g  = mean_t meta_gradient_t(φ, θ_t)     # Reptile, FOMAML, Leap, iMAML: largemeta.core.metagrad
        φ' = outer_optimizer.step(φ, g)         # any torch.optim optimizer over φ
        if shift: body(θ_t) += φ' − φ           # CTS: move every running trajectory with φ
    if step % k == 0:                           # restart every trajectory from φ
        body(θ_t) = φ

Plain Reptile/FOMAML/Leap/iMAML is ``Schedule.plain(k)`` (meta_every = k, no shift); CTS on any of the
first three is ``Schedule.cts(k)`` (meta_every = 1, shift). Task-private parameters (heads) stay outside φ:
never meta-updated, shifted or reset. Memory does not grow with k: no autograd graph outlives an inner step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from largemeta.core.inner import InnerOptimizer
from largemeta.core.metagrad import MetaGradient, Task, make_meta_gradient
from largemeta.core.params import Params, clone, sq_norm, unflatten
from largemeta.errors import UserError, check_positive, choice_error


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


# Algorithm name -> (meta-gradient name, uses CTS).
ALGORITHMS: dict[str, tuple[str, bool]] = {
    "cts": ("reptile", True),
    "cts-reptile": ("reptile", True),
    "reptile": ("reptile", False),
    "cts-fomaml": ("fomaml", True),
    "fomaml": ("fomaml", False),
    "cts-leap": ("leap", True),
    "leap": ("leap", False),
    "imaml": ("imaml", False),
}


def algorithm(name: str, k: int, meta_every: int = 1, **meta_kwargs: Any) -> tuple[MetaGradient, Schedule]:
    """The meta-gradient and schedule of an algorithm name (``cts``, ``reptile``, ``cts-leap``, ...)."""
    if name not in ALGORITHMS:
        raise choice_error("algorithm", name, ALGORITHMS)
    grad_name, uses_cts = ALGORITHMS[name]
    schedule = Schedule.cts(k, meta_every) if uses_cts else Schedule.plain(k)
    return make_meta_gradient(grad_name, **meta_kwargs), schedule


def mean_over_all_tasks(total: Tensor, count: int, group: Any = None) -> Tensor:
    """Σ_t over this process's ``count`` tasks (flattened ``total``) → the mean over every task of every rank,
    with one all-reduce of the sum and the task count together (ranks may hold different numbers of tasks)."""
    # new_full is a device-side fill, not a host-to-device copy, so a CUDA graph can capture it.
    flat = torch.cat([total, total.new_full((1,), float(count))])
    if group is not None:
        dist.all_reduce(flat, group=group)
    return flat[:-1] / flat[-1]


def loop_executor(learner: MetaLearner) -> Tensor:
    """The plain loop: one :meth:`MetaLearner.task_inner_step` per task, in order."""
    return torch.stack([learner.task_inner_step(t) for t in range(len(learner.tasks))])


class MetaLearner:
    """Runs inner steps on all tasks and the meta-updates, shifts and restarts a :class:`Schedule` asks for.

    Args:
        phi: the shared initialization; its tensors are updated in place by ``outer``.
        tasks: the tasks (see :class:`largemeta.core.metagrad.Task`).
        inner: the inner optimizer (hyper-parameters); each task gets its own state.
        meta_gradient: how a task's trajectory becomes its meta-gradient contribution.
        schedule: K, meta_every and whether to shift.
        private: per-task private parameters (e.g. heads), or None.
        outer: a ``torch.optim`` optimizer over ``phi.values()``; default plain SGD with ``meta_lr``.
        meta_lr: β for the default outer optimizer.
        reset_inner_state: re-create each task's inner optimizer state at every restart (the paper's
            synthetic code) instead of keeping it (its image code).
        group: a ``torch.distributed`` process group whose ranks hold the other tasks; the meta-gradient is
            averaged over all tasks of all ranks with one flattened all-reduce.
        params: adopt these live per-task parameter dicts (each holding every key of φ, plus private ones)
            instead of creating copies — how a user's own models are driven (see :mod:`largemeta.api`); their
            shared parts are reset to φ. ``private`` must then be None.
        executor: how one inner step of all tasks is carried out: a callable ``executor(learner) -> losses``
            (a 1-d tensor, one loss per task). Default: the plain loop over :meth:`task_inner_step`. Fast
            paths (batched tasks, mixed precision, graph capture) plug in here and are tested against it.

    Example (CTS on Reptile)::

        learner = MetaLearner(phi, tasks, SGD(0.05, momentum=0.9), Reptile(), Schedule.cts(k=100), meta_lr=0.1)
        for _ in range(240):
            learner.inner_step()
    """

    def __init__(
        self,
        phi: Params,
        tasks: Sequence[Task],
        inner: InnerOptimizer,
        meta_gradient: MetaGradient,
        schedule: Schedule,
        *,
        private: Sequence[Params] | None = None,
        outer: torch.optim.Optimizer | None = None,
        meta_lr: float = 0.01,
        reset_inner_state: bool = False,
        group: Any = None,
        params: Sequence[Params] | None = None,
        executor: Callable[[MetaLearner], Tensor] | None = None,
    ) -> None:
        if schedule.shift and not meta_gradient.supports_cts:
            raise UserError(f"{meta_gradient.name} has no CTS form (valid with CTS: reptile, fomaml, leap)")
        if private is not None and len(private) != len(tasks):
            raise ValueError(f"{len(private)} private parameter sets for {len(tasks)} tasks")
        self.phi = phi
        self.tasks = list(tasks)
        self.inner = inner
        self.meta_gradient = meta_gradient
        self.schedule = schedule
        self.reset_inner_state = reset_inner_state
        self.group = group
        self.executor = executor or loop_executor
        if outer is None:
            check_positive("meta learning rate", meta_lr)
            outer = torch.optim.SGD(list(phi.values()), lr=meta_lr)
        self.outer = outer
        self.params: list[Params] = []
        if params is not None:
            if private is not None or len(params) != len(self.tasks):
                raise ValueError("params= needs one dict per task and no private=")
            for p in params:
                missing = set(phi) - set(p)
                if missing:
                    raise ValueError(f"task parameters lack shared keys {sorted(missing)}")
                with torch.no_grad():
                    for k, v in phi.items():
                        p[k].copy_(v)
            self.params = list(params)
        for t in range(len(self.params), len(self.tasks)):
            own = clone(private[t]) if private is not None else {}
            clash = set(own) & set(phi)
            if clash:
                raise ValueError(f"private parameters {sorted(clash)} also named in phi")
            self.params.append({k: v.requires_grad_(True) for k, v in {**clone(phi), **own}.items()})
        self.inner_states = [self.inner.init(list(p.values())) for p in self.params]
        self.step = 0
        self._last: tuple[Params, Params] | None = None  # (g, φ' − φ) of the last meta-update
        self.on_restart: list[Callable[[MetaLearner], None]] = []
        self.on_step: list[Callable[[MetaLearner], None]] = []
        for t in range(len(self.tasks)):
            self.meta_gradient.restart(t, self.phi)

    @property
    def last_meta_grad_norm(self) -> float:
        """‖g‖ of the last meta-update (NaN before the first)."""
        return float(sq_norm(self._last[0]).sqrt()) if self._last else float("nan")

    @property
    def last_shift_norm(self) -> float:
        """‖φ' − φ‖ of the last meta-update: the shift CTS applied to every task."""
        return float(sq_norm(self._last[1]).sqrt()) if self._last else float("nan")

    @property
    def steps_since_restart(self) -> int:
        return self.step % self.schedule.k

    def shared(self, t: int) -> Params:
        """Task t's shared parameters (the live tensors)."""
        return {k: self.params[t][k] for k in self.phi}

    def task_inner_step(self, t: int) -> Tensor:
        """One inner optimizer step on task t; returns its (detached) training loss."""
        params, mg = self.params[t], self.meta_gradient
        loss = self.tasks[t].train_loss(params)
        reg = mg.regularizer(self.phi, self.shared(t))
        names = list(params)
        grads = torch.autograd.grad(loss if reg is None else loss + reg, [params[k] for k in names])
        if mg.observes:
            by_name = dict(zip(names, grads))
            mg.observe(t, {k: params[k].detach() for k in self.phi}, loss.detach(), {k: by_name[k] for k in self.phi})
        self.inner.step([params[k] for k in names], list(grads), self.inner_states[t])
        return loss.detach()

    def inner_step(self) -> Tensor:
        """One inner step on every task, then whatever the schedule asks; returns the tasks' losses."""
        losses = self.executor(self)
        self.advance()
        return losses

    def advance(self) -> None:
        """Count one inner step of every task (taken by the executor, or by a user's own loop) and do
        whatever the schedule asks: the meta-update (and shift), the step hooks, the restart."""
        self.step += 1
        if self.step % self.schedule.meta_every == 0:
            self.meta_update()
        for hook in self.on_step:
            hook(self)
        if self.step % self.schedule.k == 0:
            self.restart()

    def meta_gradient_now(self) -> Params:
        """The meta-gradient averaged over all tasks (all ranks when a group is set)."""
        keys = list(self.phi)
        total = None
        for t, task in enumerate(self.tasks):
            g = self.meta_gradient.task_gradient(t, self.phi, self.params[t], task)
            flat = torch.cat([g[k].reshape(-1) for k in keys])
            total = flat if total is None else total + flat
        return unflatten(mean_over_all_tasks(total, len(self.tasks), self.group), self.phi)

    def meta_update(self) -> Params:
        """Step φ with the current meta-gradient; with CTS shift every task by φ' − φ. Returns φ' − φ."""
        g = self.meta_gradient_now()
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
            delta = dict(zip(keys, deltas))
            # kept on the device (no host sync per step); reduced only when read, at log time
            self._last = (g, delta)
            if self.schedule.shift:
                for t in range(len(self.tasks)):
                    torch._foreach_add_([self.params[t][k] for k in keys], deltas)
                    self.meta_gradient.shift(t, delta)
        return delta

    @torch.no_grad()
    def restart(self) -> None:
        """Start every task's trajectory again from φ (heads kept)."""
        for t in range(len(self.tasks)):
            for k, v in self.phi.items():
                self.params[t][k].copy_(v)
            if self.reset_inner_state:
                self.inner_states[t] = self.inner.init(list(self.params[t].values()))
            self.meta_gradient.restart(t, self.phi)
        for hook in self.on_restart:
            hook(self)

    def run(self, steps: int) -> Tensor:
        """Run ``steps`` inner steps; returns the losses of the last one."""
        losses = torch.empty(0)
        for _ in range(steps):
            losses = self.inner_step()
        return losses

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "phi": clone(self.phi),
            "params": [clone(p) for p in self.params],
            "inner_states": copy.deepcopy(self.inner_states),
            "outer": copy.deepcopy(self.outer.state_dict()),
            "meta_gradient": copy.deepcopy(self.meta_gradient.state_dict()),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for k, v in state["phi"].items():
            self.phi[k].copy_(v)
        for mine, saved in zip(self.params, state["params"]):
            for k, v in saved.items():
                mine[k].copy_(v)
        self.inner_states = copy.deepcopy(state["inner_states"])
        self.outer.load_state_dict(state["outer"])
        self.meta_gradient.load_state_dict(copy.deepcopy(state["meta_gradient"]))
