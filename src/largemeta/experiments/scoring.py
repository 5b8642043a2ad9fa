"""How φ is scored in an experiment: :class:`EvalSettings` (the meta-test protocol's steps, seeds, batch
size, training-set size and targets), the paper's :data:`PROTOCOL`, the shorter :data:`VALIDATION` of
tuning, and the ``protocol`` record every results file holds (:func:`protocol_of`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module is read by the command line's start-up, which must not import torch
    from largemeta.data.tasks.suite import TaskSpec
    from largemeta.metatest import Init
    from largemeta.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How φ is scored: the meta-test protocol's steps, seeds, batch size and training-set size."""

    steps: int = 1000
    seeds: int = 3
    batch_size: int = 128
    train_size: int | None = None
    targets: tuple[str, ...] = ()  # names of the suite's meta-test tasks (default: all)

    def protocol(self, specs: list[TaskSpec]) -> dict[str, Any]:
        """How φ is scored on ``specs``, as a results file records it (``protocol``)."""
        from largemeta.metatest import FINE_TUNING

        return {
            "targets": [t.name for t in specs],
            "fine_tuning_steps": self.steps,
            "fine_tuning_seeds": self.seeds,
            "batch_size": self.batch_size,
            "train_size": self.train_size,
            "fine_tuning": FINE_TUNING,
        }

    def score(self, init: Init, specs: list[TaskSpec], cfg: TrainConfig, *, device: str) -> dict[str, Any]:
        """The meta-test protocol with these settings (:func:`largemeta.metatest.meta_test`); the images are
        found and placed as the run's config says (``data_dir``, ``data_placement``, ...)."""
        from largemeta.metatest import meta_test

        return meta_test(
            init,
            specs,
            steps=self.steps,
            seeds=self.seeds,
            batch_size=self.batch_size,
            train_size=self.train_size,
            device=device,
            data_dir=cfg.data_dir or None,
            data_placement=cfg.data_placement,
            memory_budget_gb=cfg.memory_budget_gb,
            stream_workers=cfg.stream_workers,
        )


PROTOCOL = EvalSettings()
"""The paper's meta-test protocol: 1000 fine-tuning steps, 3 seeds, batches of 128, every training image."""
VALIDATION = EvalSettings(steps=100, seeds=2, batch_size=64)
"""The shorter protocol that scores φ on the meta-training tasks when tuning."""


def protocol_of(
    settings: EvalSettings, targets: list[TaskSpec], cfg: TrainConfig, train_seeds: list[int], **more: Any
) -> dict[str, Any]:
    """The ``protocol`` record of a results file: how φ is meta-trained and scored."""
    scored = settings.protocol(targets)
    return {"meta_training_steps": cfg.steps, "train_seeds": train_seeds, **scored, **more}
