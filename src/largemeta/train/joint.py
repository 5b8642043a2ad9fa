"""Joint (multi-task) training of the shared body with per-task heads — the multi-task and fine-tuning
baselines.

One body φ for all tasks: each step, every task's loss gradient is taken at the same φ; the body steps with
their average (over all tasks of all ranks: one all-reduce), each head with its own task's gradient. One inner
optimizer state for the body, one per head. ``single`` is this with one task (pre-training a model to
fine-tune). Same surface as :class:`largemeta.core.MetaLearner` where the trainer needs it (step, phi, params,
state).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from largemeta.core.controller import mean_over_all_tasks
from largemeta.core.inner import InnerOptimizer
from largemeta.core.metagrad import Task
from largemeta.core.params import Params, clone, unflatten
from largemeta.core.runner import loss_and_gradients


class JointLearner:
    def __init__(
        self,
        phi: Params,
        tasks: Sequence[Task],
        inner: InnerOptimizer,
        private: Sequence[Params],
        group: Any = None,
        reduce: Callable[[Tensor, list[Tensor]], tuple[Tensor, list[Tensor]]] | None = None,
    ) -> None:
        self.phi = {k: v.requires_grad_(True) for k, v in phi.items()}
        self.tasks = list(tasks)
        self.inner = inner
        self.group = group
        self.reduce = reduce  # a task served by several ranks: the group's mean of (loss, gradients)
        self.heads = [{k: v.clone().requires_grad_(True) for k, v in p.items()} for p in private]
        self.params = [{**self.phi, **h} for h in self.heads]  # the body tensors are shared, not copied
        self.body_state = inner.init(list(self.phi.values()))
        self.head_states = [inner.init(list(h.values())) for h in self.heads]
        self.step = 0
        self.last_meta_grad_norm = float("nan")
        self.last_shift_norm = float("nan")

    def inner_step(self) -> Tensor:
        keys = list(self.phi)
        total = [torch.zeros_like(self.phi[k]) for k in keys]
        losses = []
        for task, params, head, state in zip(
            self.tasks, self.params, self.heads, self.head_states, strict=True
        ):
            # the body's gradient at the shared φ is summed over tasks; each head steps on its own gradient
            loss, grads = loss_and_gradients(task, params)  # params: {**φ, **head}, the body tensors shared
            if self.reduce is not None:
                loss, grads = self.reduce(loss, grads)
            torch._foreach_add_(total, grads[: len(keys)])
            self.inner.step(list(head.values()), grads[len(keys) :], state)
            losses.append(loss)
        flat = torch.cat([g.reshape(-1) for g in total])
        mean = unflatten(mean_over_all_tasks(flat, len(self.tasks), self.group), self.phi)
        self.inner.step(list(self.phi.values()), list(mean.values()), self.body_state)
        self.step += 1
        return torch.stack(losses)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "phi": clone(self.phi),
            "params": [clone(h) for h in self.heads],
            "inner_states": [copy.deepcopy(s) for s in self.head_states],
            "body_state": copy.deepcopy(self.body_state),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for k, v in state["phi"].items():
            self.phi[k].copy_(v)
        for mine, saved in zip(self.heads, state["params"], strict=True):
            for k, v in saved.items():
                mine[k].copy_(v)
        self.head_states = copy.deepcopy(state["inner_states"])
        self.body_state = copy.deepcopy(state["body_state"])

    # one checkpoint entry at a time, as MetaLearner's
    def shared_state_dict(self) -> dict[str, Any]:
        """step, phi and the body's optimizer state."""
        return {"step": self.step, "phi": clone(self.phi), "body_state": copy.deepcopy(self.body_state)}

    @torch.no_grad()
    def load_shared_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for k, v in state["phi"].items():
            self.phi[k].copy_(v)
        self.body_state = copy.deepcopy(state["body_state"])

    def task_state_dict(self, t: int) -> dict[str, Any]:
        """Task t's head (as ``params``) and its optimizer state (``meta``: none)."""
        return {"params": clone(self.heads[t]), "inner_state": copy.deepcopy(self.head_states[t]), "meta": {}}

    @torch.no_grad()
    def load_task_state_dict(self, t: int, state: dict[str, Any]) -> None:
        for k, v in state["params"].items():
            self.heads[t][k].copy_(v)
        self.head_states[t] = copy.deepcopy(state["inner_state"])
