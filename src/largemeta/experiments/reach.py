"""Steps-to-reach: how many cumulative inner steps a baseline needs to reach the reference's accuracy.

The paper's meta-convergence measure. For a reference algorithm R (CTS) at milestone m, its mean meta-test
accuracy there is the *level*; a baseline B's mean accuracy curve over the milestones is searched for the
first milestone at which it is at least the level, and the budget at which it reaches it is interpolated
linearly between that milestone and the one before. The *ratio* is that budget over m: how many times more
inner steps B needs than R to get as far (< 1: B gets there sooner).

* Reached at the first milestone: the budget is that milestone and ``at_most`` is true (nothing is measured
  before it, so the true budget may be lower).
* Not reached at the last milestone: ``steps`` and ``ratio`` are None ("not reached within the budget": the
  ratio is more than budget / m).

The interval is a paired bootstrap over units (meta-training seed, target, fine-tuning seed): both
algorithms' accuracies of a unit are resampled together (the same targets, images, batches and heads), the
mean curves of the resample give one ratio, and the 2.5 % and 97.5 % percentiles of :data:`RESAMPLES` such
ratios are the 95 % interval (a resample where B does not reach the level counts as an infinite ratio, so an
upper end that is not reached is None). Why a bootstrap and not a t-interval over per-unit ratios: a single
unit's curve is one fine-tuning seed's noisy accuracy, which often never crosses the level (an infinite,
un-averageable ratio), while the measure is defined on mean curves; the bootstrap keeps that definition and
handles "not reached". It treats units as exchangeable: with few meta-training runs the interval reflects
meta-training variance only as far as the units of different runs differ.
"""

from __future__ import annotations

from typing import Any

RESAMPLES = 2000
"""Bootstrap resamples of each interval (a fixed seed: the same results give the same interval)."""
REFERENCE = "cts"
"""The algorithm whose accuracy the others must reach."""


def crossing(milestones: list[int], curve: list[float], level: float) -> tuple[float | None, bool]:
    """The budget at which ``curve`` (accuracy at each milestone) first reaches ``level``, linearly
    interpolated between milestones, and whether it is only an upper bound (reached by the first milestone);
    (None, False) when it is never reached."""
    for j, (m, value) in enumerate(zip(milestones, curve, strict=True)):
        if value >= level:
            if j == 0:
                return float(m), True
            before, was = milestones[j - 1], curve[j - 1]
            return before + (level - was) / (value - was) * (m - before), False
    return None, False


def _units(result: dict[str, Any], algo: str, milestones: list[int]) -> dict[tuple, list[float]]:
    """``algo``'s accuracy curve over the milestones per unit (meta-training seed, target, fine-tuning
    seed), for the units measured at every milestone."""
    from largemeta.experiments.verdicts import _samples

    entry = result["algorithms"].get(algo) or {}
    per_milestone = [entry.get("accuracy", {}).get(str(m)) for m in milestones]
    if any(r is None for r in per_milestone):
        return {}
    samples = [_samples(r) for r in per_milestone]
    return {u: [s[u] for s in samples] for u in samples[0] if all(u in s for s in samples)}


def steps_to_reach(
    result: dict[str, Any], reference: str = REFERENCE, *, resamples: int = RESAMPLES
) -> list[dict[str, Any]]:
    """For every trained baseline of a convergence result and every milestone: the steps-to-reach record
    (``baseline``, ``reference``, ``milestone``, ``level``, ``steps``, ``at_most``, ``ratio``, ``ci95``
    [low, high] of the ratio with None for an end not reached within the budget, ``reached`` (the fraction of
    resamples where it is), ``n`` units, ``over`` and ``method``). Empty until the reference and a baseline
    are measured at every milestone."""
    import numpy as np

    from largemeta.experiments.spec import UNTRAINED

    milestones = [int(m) for m in result.get("milestones", [])]
    ref = _units(result, reference, milestones)
    if not ref:
        return []
    out = []
    for baseline in result["algorithms"]:
        if baseline == reference or baseline in UNTRAINED:
            continue
        base = _units(result, baseline, milestones)
        units = [u for u in ref if u in base]
        if len(units) < 2:
            continue
        a = np.array([ref[u] for u in units])
        b = np.array([base[u] for u in units])
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(units), size=(resamples, len(units)))
        boot_a, boot_b = a[picks].mean(axis=1), b[picks].mean(axis=1)  # (resamples, milestones)
        trains = len({u[0] for u in units if u[0] is not None})
        over = f"{len(units)} units (target × fine-tuning seed" + (
            f" × {trains} meta-training runs)" if trains > 1 else ", 1 meta-training run)"
        )
        for i, m in enumerate(milestones):
            level = float(a[:, i].mean())
            steps, at_most = crossing(milestones, [float(v) for v in b.mean(axis=0)], level)
            ratios = np.array(
                [
                    _ratio(crossing(milestones, list(map(float, boot_b[r])), float(boot_a[r, i]))[0], m)
                    for r in range(resamples)
                ]
            )
            low = np.percentile(ratios, 2.5, method="lower")
            high = np.percentile(ratios, 97.5, method="higher")
            out.append(
                {
                    "reference": reference,
                    "baseline": baseline,
                    "milestone": m,
                    "level": level,
                    "steps": steps,
                    "at_most": at_most,
                    "ratio": None if steps is None else steps / m,
                    "ci95": [_finite(low), _finite(high)],
                    "reached": float(np.isfinite(ratios).mean()),
                    "n": len(units),
                    "over": over,
                    "method": f"paired bootstrap over units, {resamples} resamples, 2.5/97.5 % percentiles",
                }
            )
    return out


def _ratio(steps: float | None, milestone: int) -> float:
    return float("inf") if steps is None else steps / milestone


def _finite(value: float) -> float | None:
    import math

    return None if not math.isfinite(float(value)) else float(value)


def sentence(record: dict[str, Any], budget: int) -> str:
    """What one steps-to-reach record says, in one sentence, and no more."""
    b, r, m = record["baseline"], record["reference"], record["milestone"]
    level = 100 * record["level"]
    head = f"To reach {r}'s {level:.1f} % at {m} inner steps, {b} "
    low, high = record["ci95"]
    if low is None:
        missed = 100 * (1 - record["reached"])
        interval = f"not reached in {missed:.1f} % of the bootstrap resamples either, {record['over']}"
    else:
        shown = _num(high) if high is not None else "not reached"
        interval = f"95 % bootstrap interval of the ratio [{_num(low)}, {shown}], {record['over']}"
    if record["steps"] is None:
        return (
            head + f"does not get there within the budget of {budget} steps "
            f"(ratio > {budget / m:.2f}; {interval})."
        )
    bound = "at most " if record["at_most"] else ""
    return (
        head + f"needs {bound}{record['steps']:.0f} steps: {bound}{record['ratio']:.2f}× {r}'s ({interval})."
    )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"
