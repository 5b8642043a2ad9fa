"""The inner half of meta-learning: every task's own optimization θ_t, one inner step at a time.

One inner step of one task is, everywhere in the library (the engine's loop, the batched executor, the
shift-error probe's replay, joint training)::

    loss = task.train_loss(θ)                         # the task's next training minibatch
    grads = ∇_θ (loss + regularizer(θ))               # the regularizer: iMAML's optional proximal term
    inner optimizer step on θ with grads              # per-task state: momentum buffers, Adam moments

:func:`loss_and_gradients` is the first two lines, :func:`inner_step` all three. A :class:`TaskRunner` holds
the tasks, their parameter dicts (every key of φ plus task-private keys such as a head) and inner optimizer
states, and an *executor*: how the gradients of all tasks are computed — the plain loop
(:func:`loop_gradients`), or a fast path (batched, mixed precision, channels-last; :mod:`largemeta.execution`)
tested against it. The runner applies them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from largemeta.core.inner import InnerOptimizer
from largemeta.core.metagrad import Task
from largemeta.core.params import Params, clone

Regularizer = Callable[[Params], "Tensor | None"]
"""``regularizer(shared) -> Tensor | None``: an extra term of the inner loss at the task's shared
parameters."""
TaskGradients = tuple[int, Tensor, list[Tensor]]
"""``(t, detached training loss, gradients of every tensor of task t's parameter dict in dict order)``."""


class Executor(Protocol):
    """How the gradients of one inner step of every task are computed: yields :data:`TaskGradients`, in any
    order, one per task. The runner applies each as it comes, so a streaming executor holds one task's
    gradients at a time."""

    def __call__(self, runner: TaskRunner) -> Iterable[TaskGradients]: ...


def loss_and_gradients(
    task: Task, params: Params, regularizer: Regularizer | None = None, shared: Iterable[str] = ()
) -> tuple[Tensor, list[Tensor]]:
    """The training loss on ``task``'s next minibatch and the gradient of loss (+ ``regularizer`` at the
    ``shared`` keys) w.r.t. every tensor of ``params`` (dict order); no graph is kept.

    Returns:
        The loss (a 0-d tensor) and one gradient per tensor of ``params``, each of that tensor's shape.
    """
    loss = task.train_loss(params)
    reg = regularizer({k: params[k] for k in shared}) if regularizer is not None else None
    grads = torch.autograd.grad(loss if reg is None else loss + reg, list(params.values()))
    return loss.detach(), list(grads)


def inner_step(
    task: Task,
    params: Params,
    inner: InnerOptimizer,
    state: dict[str, Any],
    regularizer: Regularizer | None = None,
    shared: Iterable[str] = (),
) -> Tensor:
    """One inner optimizer step of one task, in place; returns its (detached) training loss.

    Args:
        task: anything with ``train_loss(params)``.
        params: the task's θ, updated in place.
        inner: the inner optimizer (:class:`SGD`, :class:`Adam`).
        state: its per-task state (from ``inner.init``), updated in place.
        regularizer: an extra loss on the ``shared`` parameters (iMAML's proximal term), or ``None``.
        shared: the keys of ``params`` the regularizer sees.

    Returns:
        The training loss before the step, a 0-d tensor.
    """
    loss, grads = loss_and_gradients(task, params, regularizer, shared)
    inner.step(list(params.values()), grads, state)
    return loss


def loop_gradients(runner: TaskRunner) -> Iterator[TaskGradients]:
    """The plain loop, the oracle of every fast path: each task's loss and gradients in turn."""
    for t in range(len(runner.tasks)):
        yield (t, *runner.task_gradients(t))


Observer = Callable[[int, Params, Tensor, Params], None]


class TaskRunner:
    """The tasks' inner optimizations: parameter dicts θ_t, inner optimizer states and the executor.

    Args:
        phi: the shared initialization (read, never written here): its keys are the shared part of every θ_t;
            new trajectories start as copies of it.
        tasks: the tasks (see :class:`largemeta.core.metagrad.Task`).
        inner: the inner optimizer (hyper-parameters); each task gets its own state.
        private: per-task private parameters (e.g. heads) added to each θ_t, or None.
        executor: see :class:`Executor`; default :func:`loop_gradients`.
        regularizer: the inner loss's extra term (iMAML's proximal term), or None.
    """

    def __init__(
        self,
        phi: Params,
        tasks: Sequence[Task],
        inner: InnerOptimizer,
        *,
        private: Sequence[Params] | None = None,
        executor: Executor | None = None,
        regularizer: Regularizer | None = None,
    ) -> None:
        if private is not None and len(private) != len(tasks):
            raise ValueError(f"{len(private)} private parameter sets for {len(tasks)} tasks")
        self.phi = phi
        self.tasks = list(tasks)
        self.inner = inner
        self.executor: Executor = executor or loop_gradients
        self.regularizer = regularizer
        self.params: list[Params] = []
        for t in range(len(self.tasks)):
            own = clone(private[t]) if private is not None else {}
            clash = set(own) & set(phi)
            if clash:
                raise ValueError(f"private parameters {sorted(clash)} also named in phi")
            self.params.append({k: v.requires_grad_(True) for k, v in {**clone(phi), **own}.items()})
        self.inner_states = [self.inner.init(list(p.values())) for p in self.params]

    def private(self, t: int) -> Params:
        """Task t's private parameters (its θ without φ's keys; the live tensors)."""
        return {k: v for k, v in self.params[t].items() if k not in self.phi}

    def task_gradients(self, t: int, params: Params | None = None) -> tuple[Tensor, list[Tensor]]:
        """Task t's training loss and gradients at ``params`` (default: its own θ_t)."""
        return loss_and_gradients(
            self.tasks[t], self.params[t] if params is None else params, self.regularizer, self.phi
        )

    def step(self, observe: Observer | None = None, before_apply: Callable[[], None] | None = None) -> Tensor:
        """One inner step of every task; returns their training losses (in task order).

        ``observe(t, shared, loss, shared_grads)`` sees each task at its pre-step point (Leap's path length).
        ``before_apply()`` runs once every task's gradients exist and before any inner optimizer step (the
        meta-update of a meta-gradient taken before the step); the gradients are then all held at once.
        """
        losses: list[Tensor | None] = [None] * len(self.tasks)
        if before_apply is None:
            for t, loss, grads in self.executor(self):
                self._observe(observe, t, loss, grads)
                self.apply(t, grads)
                losses[t] = loss
        else:
            pending = list(self.executor(self))
            for t, loss, grads in pending:
                self._observe(observe, t, loss, grads)
                losses[t] = loss
            before_apply()
            for t, _, grads in pending:
                self.apply(t, grads)
        return torch.stack(losses)  # type: ignore[arg-type]

    def _observe(self, observe: Observer | None, t: int, loss: Tensor, grads: list[Tensor]) -> None:
        if observe is not None:
            by_name = dict(zip(self.params[t], grads, strict=True))
            observe(
                t, {k: self.params[t][k].detach() for k in self.phi}, loss, {k: by_name[k] for k in self.phi}
            )

    def apply(self, t: int, grads: list[Tensor]) -> None:
        """Task t's inner optimizer step with ``grads`` (dict order of its parameters)."""
        self.inner.step(list(self.params[t].values()), grads, self.inner_states[t])

    def assign(self, t: int, task: Task, private: Params) -> None:
        """Slot ``t`` runs ``task`` from now on (a task pool's redraw): ``private`` replaces the slot's
        private parameters (copied), its shared ones are kept, and its inner optimizer state starts afresh."""
        clash = set(private) & set(self.phi)
        if clash:
            raise ValueError(f"private parameters {sorted(clash)} also named in phi")
        shared = {k: self.params[t][k] for k in self.phi}
        self.params[t] = {**shared, **{k: v.requires_grad_(True) for k, v in clone(private).items()}}
        self.tasks[t] = task
        self.inner_states[t] = self.inner.init(list(self.params[t].values()))

    def reset_inner_states(self) -> None:
        """Fresh inner optimizer states for every task (a restart that re-creates the optimizer)."""
        self.inner_states = [self.inner.init(list(p.values())) for p in self.params]

    def state_dict(self) -> dict[str, Any]:
        return {"params": [clone(p) for p in self.params], "inner_states": copy.deepcopy(self.inner_states)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for mine, saved in zip(self.params, state["params"], strict=True):
            for k, v in saved.items():
                mine[k].copy_(v)
        self.inner_states = copy.deepcopy(state["inner_states"])
