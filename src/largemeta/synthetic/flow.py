"""Meta-gradient flow on the synthetic environment: where does Reptile's meta-update lead from each start?

From every start φ on an N×N grid, iterate the Reptile meta-update φ ← φ − β (φ − mean_t U_K,t(φ)) until φ
stops moving, then cluster the fixed points: each cluster is a meta-level local minimum. The paper's point:
few minima at small K (a smooth meta-loss), many at large K (a rugged one).

All starts and tasks run as one tensor of shape (T, S, 2); the loop oracle for this fast path is
:class:`largemeta.core.MetaLearner` with Reptile (tested to agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from largemeta.core.inner import SGD, InnerOptimizer
from largemeta.synthetic.env import SyntheticEnv


def unroll(env: SyntheticEnv, phi: Tensor, k: int, inner: InnerOptimizer) -> Tensor:
    """U_K: k inner steps of every task from every point of ``phi`` (S, 2) → θ of shape (T, S, 2)."""
    theta = phi.unsqueeze(0).expand(env.num_tasks, *phi.shape).clone()
    state = inner.init([theta])
    for _ in range(k):
        _, grad = env.losses_and_grads(theta)
        inner.step([theta], [grad], state)
    return theta


def meta_loss(env: SyntheticEnv, phi: Tensor, k: int, inner: InnerOptimizer) -> Tensor:
    """The average task loss after k inner steps from each point of ``phi`` (S, 2) → (S,)."""
    return env.losses(unroll(env, phi, k, inner)).mean(0)


def reptile_update(env: SyntheticEnv, phi: Tensor, k: int, inner: InnerOptimizer, meta_lr: float) -> Tensor:
    """One Reptile meta-update (plain SGD outer step) of every point of ``phi`` (S, 2)."""
    return phi - meta_lr * (phi - unroll(env, phi, k, inner).mean(0))


@dataclass
class FlowResult:
    starts: Tensor  # (S, 2)
    ends: Tensor  # (S, 2): the fixed point, or the centre of the cycle the start settled in
    status: Tensor  # (S,) int: FIXED, CYCLE, DIVERGED or UNSETTLED
    iterations: Tensor  # (S,) meta-updates taken
    paths: list[Tensor]  # φ of every start every ``record_every`` iterations, each (S, 2)

    @property
    def settled(self) -> Tensor:
        return (self.status == FIXED) | (self.status == CYCLE)


FIXED, CYCLE, DIVERGED, UNSETTLED = 0, 1, 2, 3


def grid_points(n: int, lo: float = -5.0, hi: float = 15.0, dtype: torch.dtype = torch.float64) -> Tensor:
    axis = torch.linspace(lo, hi, n, dtype=dtype)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def meta_flow(
    env: SyntheticEnv,
    starts: Tensor,
    k: int,
    inner: InnerOptimizer | None = None,
    meta_lr: float = 0.1,
    tol: float = 1e-6,
    cycle_window: int = 50,
    cycle_tol: float = 1e-2,
    max_iters: int = 2000,
    record_every: int = 5,
) -> FlowResult:
    """Iterate Reptile meta-updates from every start until it settles (or ``max_iters``).

    A start settles at a *fixed point* when one meta-update moves it less than ``tol``. At large K the
    meta-update map is rugged enough that some starts instead end in a small cycle around a point (steps of
    ~0.01–0.3 that never shrink); such a start settles as a *cycle* when the mean of its iterates over a
    window of ``cycle_window`` meta-updates moves less than ``cycle_tol`` between windows, and the window mean
    stands for its end (a start converging too slowly to tell apart from a cycle is counted here too; the
    window mean is then within ``cycle_tol`` of its fixed point). Both kinds are meta-level attractors; a
    start whose φ turns non-finite diverged.
    """
    inner = inner or SGD(0.05, momentum=0.9)
    phi = starts.clone()
    ends = starts.clone()
    status = torch.full((len(phi),), UNSETTLED, dtype=torch.long)
    iterations = torch.zeros(len(phi), dtype=torch.long)
    window_sum = torch.zeros_like(phi)
    last_mean = torch.full_like(phi, float("inf"))
    paths = [phi.clone()]
    for it in range(1, max_iters + 1):
        idx = (status == UNSETTLED).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        new = reptile_update(env, phi[idx], k, inner, meta_lr)
        step = (new - phi[idx]).norm(dim=1)
        phi[idx] = new
        iterations[idx] = it
        window_sum[idx] += new
        status[idx[~torch.isfinite(step)]] = DIVERGED
        fixed = idx[step < tol]
        status[fixed], ends[fixed] = FIXED, phi[fixed]
        if it % cycle_window == 0:
            idx = (status == UNSETTLED).nonzero().squeeze(1)
            mean = window_sum[idx] / cycle_window
            cyc = idx[(mean - last_mean[idx]).norm(dim=1) < cycle_tol]
            status[cyc], ends[cyc] = CYCLE, (window_sum[cyc] / cycle_window)
            last_mean[idx] = mean
            window_sum.zero_()
        if it % record_every == 0:
            paths.append(phi.clone())
    paths.append(phi.clone())
    unsettled = status == UNSETTLED
    ends[unsettled] = phi[unsettled]
    return FlowResult(starts, ends, status, iterations, paths)


def cluster(points: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Greedy clustering: each point joins the first centre within ``radius``, else founds one.

    Returns (centres (C, 2) — the mean of each cluster's points, counts (C,)), largest cluster first.
    """
    centres: list[Tensor] = []
    members: list[list[Tensor]] = []
    for p in points:
        for c, group in zip(centres, members, strict=True):
            if (p - c).norm() <= radius:
                group.append(p)
                break
        else:
            centres.append(p)
            members.append([p])
    if not centres:
        return points.new_zeros((0, 2)), torch.zeros(0, dtype=torch.long)
    means = torch.stack([torch.stack(g).mean(0) for g in members])
    counts = torch.tensor([len(g) for g in members])
    order = counts.argsort(descending=True, stable=True)
    return means[order], counts[order]
