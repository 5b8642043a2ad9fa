"""Reptile against CTS on the synthetic environment at an equal budget of cumulative inner steps.

Both run through :class:`largemeta.core.MetaLearner` on 8 tasks, all starts at once (each task's parameter
is an (S, 2) batch of independent points). Reptile takes budget/K meta-updates, CTS one per inner step;
both restart trajectories every K steps with a fresh inner optimizer (the paper's synthetic code). A final φ
is scored by running Adam (lr 0.05) K steps on every task from it and averaging the final task losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from largemeta.core.algorithms import ALGORITHMS
from largemeta.core.diagnostics import ShiftErrorProbe
from largemeta.core.engine import MetaLearner
from largemeta.core.inner import INNER_OPTIMIZERS, Adam
from largemeta.errors import choice_error
from largemeta.synthetic.env import SyntheticEnv, SyntheticTask
from largemeta.synthetic.flow import unroll

# Algorithms that run on the synthetic environment: their meta-gradients are elementwise, so the batch of
# starts stays a batch of independent problems (Leap's path-length norm would couple them).
SYNTHETIC_ALGORITHMS = tuple(a for a in ALGORITHMS if ALGORITHMS.get(a).synthetic)
PAPER_STARTS = [[x, y] for x in (-5.0, 5.0, 15.0) for y in (-5.0, 5.0, 15.0)]


def score(env: SyntheticEnv, phi: Tensor, k: int, lr: float = 0.05) -> Tensor:
    """Average final task loss after k Adam steps from each point of ``phi`` (S, 2) → (S,); NaN if
    diverged."""
    with torch.no_grad():
        losses = env.losses(unroll(env, phi, k, Adam(lr))).mean(0)
    return torch.where(torch.isfinite(losses) & torch.isfinite(phi).all(1), losses, torch.nan)


@dataclass
class RunResult:
    final_phi: Tensor  # (S, 2)
    losses: Tensor  # (S,): score(final_phi)
    path: list[Tensor] = field(default_factory=list)  # φ after every meta-update, each (S, 2)
    shift_error: list[dict[str, float]] = field(default_factory=list)


def run(
    env: SyntheticEnv,
    starts: Tensor,
    algo: str,
    k: int,
    inner: str = "sgd",
    budget: int = 240,
    inner_lr: float = 0.05,
    meta_lr: float = 0.1,
    probe: bool = False,
) -> RunResult:
    """Meta-train from every start with ``budget`` cumulative inner steps per task; score the final φ."""
    if algo not in SYNTHETIC_ALGORITHMS:
        raise choice_error("synthetic algorithm", algo, SYNTHETIC_ALGORITHMS)
    meta_gradient, schedule = ALGORITHMS.get(algo).build(k)
    phi = {"x": starts.clone()}
    tasks = [SyntheticTask(env, t) for t in range(env.num_tasks)]
    learner = MetaLearner(
        phi,
        tasks,
        INNER_OPTIMIZERS.create(inner, lr=inner_lr),
        meta_gradient,
        schedule,
        meta_lr=meta_lr,
        reset_inner_state=True,
    )
    shift_probe = ShiftErrorProbe(learner, task=0, at=range(1, k + 1)) if probe else None
    path = [phi["x"].clone()]
    for _ in range(budget):
        learner.inner_step()
        if learner.step % schedule.meta_every == 0:
            path.append(phi["x"].clone())
    final = phi["x"].detach().clone()
    return RunResult(final, score(env, final, k), path, shift_probe.records if shift_probe else [])


def compare(
    env: SyntheticEnv,
    k: int,
    inner: str,
    budget: int = 240,
    starts: list[list[float]] | None = None,
    algos: tuple[str, ...] = ("reptile", "cts"),
    inner_lr: float = 0.05,
    meta_lr: float = 0.1,
) -> dict[str, RunResult]:
    points = torch.tensor(starts or PAPER_STARTS, dtype=env.coeff.dtype)
    return {a: run(env, points, a, k, inner, budget, inner_lr, meta_lr) for a in algos}


def shift_errors(
    env: SyntheticEnv, start: list[float], k: int, inner: str, inner_lr: float = 0.05, meta_lr: float = 0.1
) -> list[dict[str, float]]:
    """‖θ_shifted − U_k(φ)‖ of task 0 at every k of the first CTS trajectory from one start."""
    point = torch.tensor([start], dtype=env.coeff.dtype)
    return run(env, point, "cts", k, inner, k, inner_lr, meta_lr, probe=True).shift_error
