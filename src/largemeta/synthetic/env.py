"""The paper's 2-D synthetic environment: 8 rotated, shifted Himmelblau functions.

Task t's loss at x ∈ R²: with d = x − c_t rotated by a_t and scaled by 1/3,
u = (cos a_t·d₀ − sin a_t·d₁)/3, v = (sin a_t·d₀ + cos a_t·d₁)/3,

    f_t(x) = k₀ (u² + v − 11)² + k₂ (u + v² − 7)²

with the exact constants of the paper's environment file (``coeff`` = (k₀, 11, k₂, 7), ``angles`` (8, 1),
``targets`` (8, 2)), shipped as package data.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from largemeta.core.params import Params
from largemeta.errors import UserError

DEFAULT_ENV = "synthetic_env.npz"


@dataclass(frozen=True)
class SyntheticEnv:
    coeff: Tensor  # (4,)
    angles: Tensor  # (T,)
    targets: Tensor  # (T, 2)

    @property
    def num_tasks(self) -> int:
        return self.targets.shape[0]

    def _rotated(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(u, v, cos a_t, sin a_t) of points ``x`` (T, ..., 2): the offset from c_t rotated by a_t, over
        3."""
        shape = (self.num_tasks,) + (1,) * (x.dim() - 2)
        c, s = torch.cos(self.angles).view(shape), torch.sin(self.angles).view(shape)
        d = x - self.targets.view(shape + (2,))
        return (c * d[..., 0] - s * d[..., 1]) / 3, (s * d[..., 0] + c * d[..., 1]) / 3, c, s

    def losses(self, x: Tensor) -> Tensor:
        """Per-task losses of points ``x`` of shape (T, ..., 2) (task t's points in row t) → (T, ...)."""
        u, v, _, _ = self._rotated(x)
        k0, a, k2, b = self.coeff
        return k0 * (u * u + v - a) ** 2 + k2 * (u + v * v - b) ** 2

    def losses_and_grads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-task losses (T, ...) and their gradients w.r.t. ``x`` (T, ..., 2), in closed form.

        With A = u² + v − 11 and B = u + v² − 7: ∂f/∂u = 4k₀Au + 2k₂B, ∂f/∂v = 2k₀A + 4k₂Bv, and the chain
        rule through the rotation gives ∂f/∂d₀ = (c ∂f/∂u + s ∂f/∂v)/3, ∂f/∂d₁ = (−s ∂f/∂u + c ∂f/∂v)/3.
        Tested against autograd; about 3× faster than it in the flow's inner loops.
        """
        u, v, c, s = self._rotated(x)
        k0, a, k2, b = self.coeff
        big_a, big_b = u * u + v - a, u + v * v - b
        loss = k0 * big_a**2 + k2 * big_b**2
        df_du = 4 * k0 * big_a * u + 2 * k2 * big_b
        df_dv = 2 * k0 * big_a + 4 * k2 * big_b * v
        grad = torch.stack([c * df_du + s * df_dv, -s * df_du + c * df_dv], dim=-1) / 3
        return loss, grad

    def task_loss(self, t: int, x: Tensor) -> Tensor:
        """Task t's loss at points ``x`` of shape (..., 2) → (...)."""
        one = SyntheticEnv(self.coeff, self.angles[t : t + 1], self.targets[t : t + 1])
        return one.losses(x.unsqueeze(0))[0]


def load_env(path: str | Path | None = None, dtype: torch.dtype = torch.float64) -> SyntheticEnv:
    """Load the environment constants (default: the paper's, shipped with largemeta)."""
    if path is None:
        source = resources.files("largemeta.synthetic") / DEFAULT_ENV
        name = DEFAULT_ENV
    else:
        source, name = Path(path), str(path)
        if not source.is_file():
            raise UserError(
                f"environment file {name!r} does not exist (expected an .npz with coeff, angles, targets)"
            )
    try:
        with source.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"environment file {name!r} is not a readable .npz ({err})") from None
    missing = [k for k in ("coeff", "angles", "targets") if k not in arrays]
    if missing:
        raise UserError(
            f"environment file {name!r} lacks {', '.join(missing)} (needs coeff, angles, targets)"
        )
    coeff, angles, targets = arrays["coeff"], arrays["angles"].reshape(-1), arrays["targets"]
    if (
        coeff.shape != (4,)
        or targets.ndim != 2
        or targets.shape[1] != 2
        or angles.shape[0] != targets.shape[0]
    ):
        raise UserError(
            f"environment file {name!r} has coeff {coeff.shape}, angles {arrays['angles'].shape}, "
            f"targets {targets.shape} (valid: coeff (4,), angles (T,) or (T, 1), targets (T, 2))"
        )
    for key, arr in (("coeff", coeff), ("angles", angles), ("targets", targets)):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise UserError(f"environment file {name!r}: {key} must be finite numbers")
    as_t = lambda a: torch.as_tensor(a.astype(np.float64), dtype=dtype)  # noqa: E731
    return SyntheticEnv(as_t(coeff), as_t(angles), as_t(targets))


class SyntheticTask:
    """One synthetic task over a batch of independent points: ``params["x"]`` has shape (S, 2).

    The loss is the sum over the S points, so each point's gradient is its own: S independent copies of
    the same meta-learning problem run as one (every optimizer and meta-gradient used here is elementwise).
    The loss is deterministic, so the query loss is the training loss.
    """

    def __init__(self, env: SyntheticEnv, t: int) -> None:
        self.env, self.t = env, t

    def train_loss(self, params: Params) -> Tensor:
        return self.env.task_loss(self.t, params["x"]).sum()

    query_loss = train_loss
