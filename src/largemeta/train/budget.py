"""How many meta-updates a budget of inner steps holds, and the one-line warning when it holds none.

The schedule is the algorithm table's (:meth:`largemeta.core.algorithms.Algorithm.schedule`): a plain
algorithm (Reptile, Leap, FOMAML, iMAML) meta-updates once per K inner steps, CTS every ``meta_every`` steps;
joint training has no meta-update by design. A run whose budget ends before the first meta-update leaves φ at
its initialization: :func:`no_meta_update` says so, and what to change, in one line (a logged WARNING).
The counts agree with :attr:`largemeta.core.controller.MetaController.meta_updates` (``step // meta_every``).
"""

from __future__ import annotations

from largemeta.core.algorithms import ALGORITHMS
from largemeta.train.config import TrainConfig


def meta_update_every(cfg: TrainConfig) -> int | None:
    """Inner steps between two meta-updates of ``cfg``'s algorithm (None: joint training, which has none)."""
    algo = ALGORITHMS.get(cfg.algo)
    if algo.joint:
        return None
    return algo.schedule(cfg.k, cfg.meta_every).meta_every


def meta_updates(cfg: TrainConfig, steps: int | None = None) -> int:
    """Meta-updates in ``steps`` inner steps (default ``cfg.steps``) of ``cfg``'s algorithm (0: joint)."""
    every = meta_update_every(cfg)
    return 0 if every is None else (cfg.steps if steps is None else steps) // every


def lower_hint(cfg: TrainConfig) -> str:
    """The config key whose lower value brings the first meta-update earlier."""
    if ALGORITHMS.get(cfg.algo).cts:
        return "lower --set meta_every=..."
    return "lower --set k=..."


def no_meta_update(
    cfg: TrainConfig, steps: int, *, budget: str, fix: str | None = None, plural: bool = False
) -> str | None:
    """One line when ``steps`` inner steps of ``cfg``'s algorithm hold no meta-update (None when they hold
    one, and for joint training). ``budget`` names the steps (``--steps 60``, ``milestones 25, 50``;
    ``plural``: several); ``fix`` says what to change (default: raise --steps to the first meta-update, or
    bring that earlier)."""
    every = meta_update_every(cfg)
    if every is None or steps >= every:
        return None
    fix = fix or f"raise --steps to >= {every} or {lower_hint(cfg)}"
    holds = "hold" if plural else "holds"
    return (
        f"{cfg.algo} with K={cfg.k} meta-updates every {every} steps; {budget} {holds} none: "
        f"φ stays at its initialization — {fix}"
    )
