"""The shift-error diagnostic: how far CTS's shifted trajectory is from the trajectory it stands for.

CTS replaces the restarted trajectory U_k(φ) — k inner steps from the *current* φ — by the running one,
shifted by every meta-update since the restart. The paper bounds the gap by O(βαhk² + β²k). The probe
measures it on one task: at chosen step counts k after a restart it replays k inner steps from the current φ
(same minibatches, same starting optimizer state and head) and records ‖body(θ_shifted) − body(U_k(φ))‖.

Replaying the same minibatches needs the task to expose its sampler state through ``state_dict()`` /
``load_state_dict()`` (tasks without them are taken to be deterministic); its training batches must come from
that state alone (draw query batches from a separate generator).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from largemeta.core.engine import MetaLearner
from largemeta.core.params import clone, norm
from largemeta.core.runner import inner_step


class ShiftErrorProbe:
    """Records (k, ‖θ_shifted − U_k(φ)‖, ‖θ_shifted − φ‖) for one probe task of a :class:`MetaLearner`.

    Attach it before running; ``at`` are the step counts after a restart at which to measure
    (default 1, 2, 4, ... up to K), on every ``every``-th trajectory. Each measurement costs k extra inner
    steps of the probe task.
    """

    def __init__(
        self, learner: MetaLearner, task: int = 0, at: Iterable[int] | None = None, every: int = 1
    ) -> None:
        k = learner.schedule.k
        self.learner, self.task, self.every = learner, task, every
        self.at = (
            sorted(set(at)) if at is not None else sorted({min(2**i, k) for i in range(k.bit_length() + 1)})
        )
        self.records: list[dict[str, float]] = []
        self._snapshot()
        learner.controller.on_restart.append(lambda _: self._snapshot())
        learner.controller.on_step.append(lambda _: self._maybe_measure())

    def _snapshot(self) -> None:
        lr, t = self.learner, self.task
        self._private = {k: v.detach().clone() for k, v in lr.params[t].items() if k not in lr.phi}
        self._inner_state = copy.deepcopy(lr.runner.inner_states[t])
        task = lr.tasks[t]
        self._task_state = copy.deepcopy(task.state_dict()) if hasattr(task, "state_dict") else None
        self._restart_step = lr.step

    def _maybe_measure(self) -> None:
        k = self.learner.step - self._restart_step
        trajectory = self._restart_step // self.learner.schedule.k
        if k in self.at and trajectory % self.every == 0:
            self.records.append(self.measure(k))

    def replay(self, k: int) -> dict[str, torch.Tensor]:
        """U_k(φ): k inner steps of the probe task from the current φ, as from the last restart."""
        lr, t = self.learner, self.task
        task = lr.tasks[t]
        saved = copy.deepcopy(task.state_dict()) if self._task_state is not None else None
        if self._task_state is not None:
            task.load_state_dict(copy.deepcopy(self._task_state))
        params = {k_: v.requires_grad_(True) for k_, v in {**clone(lr.phi), **clone(self._private)}.items()}
        state = copy.deepcopy(self._inner_state)
        try:
            for _ in range(k):
                inner_step(task, params, lr.runner.inner, state, lr.runner.regularizer, lr.phi)
        finally:
            if saved is not None:
                task.load_state_dict(saved)
        return {n: params[n].detach() for n in lr.phi}

    def measure(self, k: int) -> dict[str, float]:
        lr = self.learner
        exact = self.replay(k)
        shifted = {n: lr.params[self.task][n].detach() for n in lr.phi}
        return {
            "step": lr.step,
            "k": k,
            "shift_error": norm({n: shifted[n] - exact[n] for n in exact}),
            "displacement": norm({n: shifted[n] - lr.phi[n] for n in exact}),
        }
