"""PNG figures of the synthetic experiments (matplotlib, Agg backend; pure functions of the results)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from largemeta.core.inner import InnerOptimizer  # noqa: E402
from largemeta.synthetic.env import SyntheticEnv  # noqa: E402
from largemeta.synthetic.flow import FlowResult, grid_points, meta_loss  # noqa: E402


def _contour(
    ax, env: SyntheticEnv, k: int, inner: InnerOptimizer, lo: float, hi: float, n: int = 121
) -> None:
    pts = grid_points(n, lo, hi, env.coeff.dtype)
    z = (
        meta_loss(env, pts, k, inner)
        if k > 0
        else env.losses(pts.unsqueeze(0).expand(env.num_tasks, -1, -1)).mean(0)
    )
    z = torch.nan_to_num(z, nan=1e6, posinf=1e6).clamp(max=1e6).log10().view(n, n)
    axis = torch.linspace(lo, hi, n)
    cs = ax.contourf(axis, axis, z.numpy(), levels=30, cmap="viridis")
    plt.colorbar(cs, ax=ax, label=f"log10 mean task loss after {k} inner steps")
    ax.scatter(env.targets[:, 0], env.targets[:, 1], marker="x", color="white", s=30, label="task centres")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


def plot_flow(path: Path, env: SyntheticEnv, result: FlowResult, minima: torch.Tensor, k: int, inner) -> Path:
    lo = float(result.starts.min())
    hi = float(result.starts.max())
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    _contour(ax, env, k, inner, lo, hi)
    trail = torch.stack(result.paths)  # (P, S, 2)
    n = int(round(len(result.starts) ** 0.5))
    stride = max(1, n // 20)
    shown = [i for i in range(len(result.starts)) if (i % n) % stride == 0 and (i // n) % stride == 0]
    for i in shown:
        xy = trail[:, i]
        xy = xy[torch.isfinite(xy).all(1)]
        ax.plot(xy[:, 0], xy[:, 1], color="white", lw=0.5, alpha=0.6)
    ax.scatter(
        minima[:, 0],
        minima[:, 1],
        color="red",
        marker="*",
        s=120,
        edgecolor="black",
        zorder=5,
        label=f"{len(minima)} meta-level minima",
    )
    ax.set_title(f"Reptile meta-gradient flow, K = {k} ({len(result.starts)} starts)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(path: Path, env: SyntheticEnv, paths: dict[str, list[torch.Tensor]], k: int, inner) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    _contour(ax, env, k, inner, -7.0, 17.0)
    colours = {"reptile": "tab:blue", "cts": "tab:orange", "fomaml": "tab:green", "cts-fomaml": "tab:red"}
    for name, steps in paths.items():
        trail = torch.stack(steps)  # (M, S, 2)
        for i in range(trail.shape[1]):
            xy = trail[:, i]
            xy = xy[torch.isfinite(xy).all(1)]
            ax.plot(
                xy[:, 0],
                xy[:, 1],
                "-o",
                ms=2,
                lw=1.2,
                color=colours.get(name),
                label=name if i == 0 else None,
            )
    ax.set_title(f"φ paths at an equal budget of inner steps, K = {k}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_shift_error(path: Path, records: list[list[dict[str, float]]], k: int) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, rec in enumerate(records):
        ks = [r["k"] for r in rec]
        ax.loglog(ks, [max(r["shift_error"], 1e-16) for r in rec], lw=1, alpha=0.8, label=f"start {i}")
    ax.set_xlabel("inner steps since restart, k")
    ax.set_ylabel("‖θ_shifted − U_k(φ)‖ (task 0)")
    ax.set_title(f"CTS shift error along the first trajectory, K = {k}")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
