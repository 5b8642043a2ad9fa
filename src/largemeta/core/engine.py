"""One loop for every first-order meta-learner and its Continual Trajectory Shifting (CTS) form.

:class:`MetaLearner` composes the two halves — a :class:`~largemeta.core.runner.TaskRunner` that takes every
task's inner steps and a :class:`~largemeta.core.controller.MetaController` that moves φ — into the paper's
loop::

    every inner step:
        every task t: θ_t ← inner optimizer step on a minibatch of task t      (runner)
        if step % meta_every == 0:                                              (controller)
            g  = mean_t meta_gradient_t(φ, θ_t)      # Reptile, FOMAML, Leap, iMAML: largemeta.core.metagrad
            φ' = outer_optimizer.step(φ, g)          # any torch.optim optimizer over φ
            if shift: body(θ_t) += φ' − φ            # CTS: move every running trajectory with φ
        if step % k == 0: body(θ_t) = φ              # restart every trajectory from φ

Plain Reptile/FOMAML/Leap/iMAML is ``Schedule.plain(k)`` (meta_every = k, no shift); CTS on any of the first
three is ``Schedule.cts(k)`` (meta_every = 1, shift). A meta-gradient taken *before* the inner step
(:class:`~largemeta.core.metagrad.PreStepFOMAML`, the reference code's CTS-FOMAML) is applied between the
step's gradients and its inner optimizer step. Task-private parameters (heads) stay outside φ: never
meta-updated, shifted or reset. Memory does not grow with k: no autograd graph outlives an inner step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from largemeta.core.assignment import Static, TaskAssignment
from largemeta.core.controller import MetaController, Schedule
from largemeta.core.inner import InnerOptimizer
from largemeta.core.metagrad import MetaGradient, Task
from largemeta.core.params import Params, clone
from largemeta.core.runner import Executor, TaskRunner


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
        group: a ``torch.distributed`` process group whose ranks hold the other tasks.
        assignment: which task runs in which slot (:mod:`largemeta.core.assignment`); default
            :class:`~largemeta.core.assignment.Static`: ``tasks`` for the whole run. A
            :class:`~largemeta.core.assignment.TaskPool` built them (``pool.start()``) and redraws them.
        executor: how the gradients of one inner step of all tasks are computed
            (:class:`~largemeta.core.runner.Executor`; default the plain loop). Fast paths plug in here and
            are tested against it.

    ``learner.controller`` and ``learner.runner`` are the two halves; the properties below are read-only
    views. A restart (every K steps) is one sequence, in this order: every trajectory back to φ (the
    controller), fresh inner optimizer states when ``reset_inner_state``, the assignment's redraw, then the
    controller's ``on_restart`` hooks (e.g. the shift-error probe's snapshot), which see the new tasks and
    states.

    Example (CTS on Reptile)::

        learner = MetaLearner(
            phi, tasks, SGD(0.05, momentum=0.9), Reptile(), Schedule.cts(k=100), meta_lr=0.1
        )
        learner.run(240)
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
        assignment: TaskAssignment | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.controller = MetaController(
            phi, meta_gradient, schedule, outer=outer, meta_lr=meta_lr, group=group
        )
        self.runner = TaskRunner(
            phi,
            tasks,
            inner,
            private=private,
            executor=executor,
            regularizer=lambda shared: meta_gradient.regularizer(phi, shared),
        )
        self.reset_inner_state = reset_inner_state
        self.assignment = assignment or Static(len(self.runner.tasks), activate=_built_already)
        self.assignment.bind(self.runner)
        self.controller.on_restart.insert(0, self._restart)  # the learner's own part comes before any hook
        self.controller.begin(self.runner.params)

    def _restart(self, controller: MetaController) -> None:
        """The learner's part of a restart (the trajectories are at φ already): fresh inner states if asked,
        then the assignment's redraw (which starts a changed slot's inner state afresh)."""
        if self.reset_inner_state:
            self.runner.reset_inner_states()
        self.assignment.restart(self.step)

    # read-only views -------------------------------------------------------------------------------------
    @property
    def phi(self) -> Params:
        return self.controller.phi

    @property
    def step(self) -> int:
        return self.controller.step

    @property
    def schedule(self) -> Schedule:
        return self.controller.schedule

    @property
    def meta_gradient(self) -> MetaGradient:
        return self.controller.meta_gradient

    @property
    def tasks(self) -> list[Task]:
        return self.runner.tasks

    @property
    def params(self) -> list[Params]:
        return self.runner.params

    @property
    def last_meta_grad_norm(self) -> float:
        return self.controller.last_meta_grad_norm

    @property
    def last_shift_norm(self) -> float:
        return self.controller.last_shift_norm

    # the loop --------------------------------------------------------------------------------------------
    def inner_step(self) -> Tensor:
        """One inner step on every task, then whatever the schedule asks; returns the tasks' losses."""
        losses = self.device_step(self.controller.update_due)
        self.controller.end_step(self.runner.params)
        return losses

    def device_step(self, meta_update: bool) -> Tensor:
        """The tensor work of one step: every task's inner step and, if ``meta_update``, the meta-update (and
        shift) — before the inner optimizer steps for a meta-gradient taken there, else after. No host-side
        bookkeeping (a CUDA graph captures exactly this; :mod:`largemeta.execution`)."""
        ctl, run = self.controller, self.runner
        mg = ctl.meta_gradient
        observe = mg.observe if mg.observes else None
        if meta_update and mg.before_inner_step:
            return run.step(observe, before_apply=lambda: ctl.meta_update(run.params, run.tasks))
        losses = run.step(observe)
        if meta_update:
            ctl.meta_update(run.params, run.tasks)
        return losses

    def run(self, steps: int) -> Tensor:
        """Run ``steps`` inner steps; returns the losses of the last one."""
        losses = torch.empty(0)
        for _ in range(steps):
            losses = self.inner_step()
        return losses

    def meta_gradient_now(self) -> Params:
        """The meta-gradient the next meta-update would take (all tasks, all ranks)."""
        return self.controller.meta_gradient_now(self.runner.params, self.runner.tasks)

    def state_dict(self) -> dict[str, Any]:
        """step, phi, outer, meta_gradient (per task), params and inner_states (per task)."""
        return {**self.controller.state_dict(len(self.runner.tasks)), **self.runner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state)
        self.runner.load_state_dict(state)

    # one checkpoint entry at a time: the state common to all tasks, and one trajectory's
    def shared_state_dict(self) -> dict[str, Any]:
        """step, phi and outer: the state common to every task."""
        state = self.controller.state_dict()
        del state["meta_gradient"]
        return state

    def load_shared_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict({**state, "meta_gradient": []})

    def task_state_dict(self, t: int) -> dict[str, Any]:
        """Trajectory t's state: its ``params`` (θ_t), ``inner_state`` and ``meta`` (what the meta-gradient
        accumulated along it); copies."""
        return {
            "params": clone(self.runner.params[t]),
            "inner_state": copy.deepcopy(self.runner.inner_states[t]),
            "meta": copy.deepcopy(self.meta_gradient.task_state(t)),
        }

    @torch.no_grad()
    def load_task_state_dict(self, t: int, state: dict[str, Any]) -> None:
        for k, v in state["params"].items():
            self.runner.params[t][k].copy_(v)
        self.runner.inner_states[t] = copy.deepcopy(state["inner_state"])
        self.meta_gradient.load_task_state(t, copy.deepcopy(state.get("meta", {})))


def _built_already(p: int, state: Any) -> Any:
    raise RuntimeError("a static assignment given to MetaLearner never builds tasks: they are given")
