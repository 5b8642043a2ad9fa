"""The algorithm table: every algorithm name the library knows, once.

An :class:`Algorithm` is a frozen spec: which meta-gradient it uses and whether CTS shifts the running
trajectories (a meta-update after every ``meta_every`` inner steps) or the plain schedule applies (one
meta-update per K steps). Everything else a layer needs to know — does it read query batches, can a CUDA graph
capture it, can it run over a user's own loop, does the synthetic benchmark's batch of starts stay independent
— is derived from the meta-gradient class (:mod:`largemeta.core.metagrad`). The command line's choices, config
validation, the trainer, the execution checks, the drop-in API and the synthetic benchmark all read this
table: adding an algorithm is one entry here (plus its meta-gradient class).

Joint training (``multitask``, ``single``) has no meta-gradient: one body trained on every task's loss at
once, the multi-task and fine-tuning baselines of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from largemeta.core.controller import Schedule
from largemeta.core.metagrad import META_GRADIENTS, MetaGradient
from largemeta.registry import Registry


@dataclass(frozen=True)
class Algorithm:
    """One named algorithm: a meta-gradient and a schedule, or joint training."""

    name: str
    meta_gradient: str | None
    """Name in :data:`~largemeta.core.metagrad.META_GRADIENTS`; ``None`` for joint training."""
    cts: bool = False
    """Shift every running trajectory by each meta-update (meta-update every ``meta_every`` steps)."""
    single_task: bool = False
    """Trains on exactly one task (the fine-tuning baseline's pre-training)."""
    summary: str = ""

    @property
    def joint(self) -> bool:
        return self.meta_gradient is None

    @property
    def _cls(self) -> type[MetaGradient] | None:
        return META_GRADIENTS.get(self.meta_gradient) if self.meta_gradient else None

    @property
    def uses_query(self) -> bool:
        """Needs a held-out query split of each task's training images."""
        return bool(self._cls and self._cls.uses_query)

    @property
    def graphable(self) -> bool:
        """A CUDA graph can capture its whole meta-step."""
        return bool(self._cls and self._cls.graphable)

    @property
    def drop_in(self) -> bool:
        """Runs over a user's own training loop (:class:`largemeta.ContinualTrajectoryShifting`)."""
        return bool(self._cls and self._cls.uses_parameters_only)

    @property
    def task_groups(self) -> bool:
        """Can a task be served by a group of ranks, its batch split over them (joint training can)?"""
        return self._cls is None or self._cls.splits_over_ranks

    @property
    def why_not_task_groups(self) -> str:
        return self._cls.why_not_split if self._cls is not None else ""

    @property
    def synthetic(self) -> bool:
        """Runs on the synthetic benchmark's batch of independent starts."""
        return bool(self._cls and self._cls.elementwise)

    def schedule(self, k: int, meta_every: int = 1) -> Schedule:
        """CTS: a meta-update every ``meta_every`` steps with the shift; plain: one per K steps, no shift."""
        return Schedule.cts(k, meta_every) if self.cts else Schedule.plain(k)

    def build(self, k: int, meta_every: int = 1, **options: Any) -> tuple[MetaGradient, Schedule]:
        """The meta-gradient (given the ``options`` its class takes, e.g. iMAML's ``lam``) and the
        schedule."""
        if self.joint:
            raise ValueError(f"{self.name!r} is joint training: it has no meta-gradient")
        return META_GRADIENTS.create(self.meta_gradient, **options), self.schedule(k, meta_every)


ALGORITHMS: Registry[Algorithm] = Registry("algorithm")
"""The algorithm table, by name (``largemeta algorithms`` prints it): each :class:`Algorithm` names its
meta-gradient and whether it shifts (CTS); ``ALGORITHMS.get("cts")``."""
for _algo in (
    Algorithm("cts", "reptile", cts=True, summary="CTS on Reptile, the paper's headline algorithm"),
    Algorithm("cts-reptile", "reptile", cts=True, summary="the same as cts"),
    Algorithm("reptile", "reptile", summary="Reptile: φ − θ after K steps"),
    Algorithm(
        "cts-fomaml",
        "fomaml",
        cts=True,
        summary="CTS on FOMAML as defined: a held-out query batch's gradient after each inner step",
    ),
    Algorithm(
        "cts-fomaml-official",
        "fomaml-pre-step",
        cts=True,
        summary="CTS on FOMAML as the paper's reference code: the step's training gradient, before the step",
    ),
    Algorithm("fomaml", "fomaml", summary="first-order MAML: a query batch's gradient after K steps"),
    Algorithm("cts-leap", "leap", cts=True, summary="CTS on Leap's path-length gradient"),
    Algorithm("leap", "leap", summary="Leap: the path-length gradient of K steps"),
    Algorithm("imaml", "imaml", summary="implicit MAML: conjugate gradient with Hessian-vector products"),
    Algorithm("multitask", None, summary="joint training of the body with per-task heads"),
    Algorithm("single", None, single_task=True, summary="training on one task (the fine-tuning baseline)"),
):
    ALGORITHMS.add(_algo.name, _algo)
