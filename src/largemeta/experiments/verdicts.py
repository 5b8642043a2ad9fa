"""Paired comparisons between the algorithms of an experiment, and the verdicts they support.

Each meta-test fine-tunes every initialization on the same targets with the same seeds (the same images,
subsets, batches and heads), so two algorithms' accuracies pair up unit by unit: (meta-training seed, target,
fine-tuning seed). :func:`comparisons` compares every two algorithms at every point of an experiment
(:attr:`largemeta.experiments.spec.Experiment.points`); :func:`verdict` says what one comparison supports.
"""

from __future__ import annotations

import math
from typing import Any

from largemeta.experiments.spec import EXPERIMENTS, UNTRAINED
from largemeta.stats import paired


def _samples(r: dict[str, Any]) -> dict[tuple[str | None, str, int], float]:
    """A meta-test result's accuracies by (meta-training seed or None, target, fine-tuning seed)."""
    runs = r.get("runs") or {None: r}
    return {
        (seed, target, s): value
        for seed, run in runs.items()
        for target, task in run["tasks"].items()
        for s, value in enumerate(task["per_seed"])
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def compare(a: str, ra: dict[str, Any], b: str, rb: dict[str, Any], at: str) -> dict[str, Any]:
    """The paired comparison of ``a`` and ``b`` at ``at``: differences of accuracy (fractions) over the
    (meta-training seed, target, fine-tuning seed) units both were measured on. Each meta-test fine-tunes
    every initialization on the same targets with the same seeds (the same images, subsets, batches and
    heads), so the accuracies pair up; a baseline that is not meta-trained pairs with every run."""
    if any(ra.get(k) != rb.get(k) for k in ("steps", "train_size")):
        raise ValueError(f"{a} and {b} at {at} were scored with different protocols: not paired")
    sa, sb = _samples(ra), _samples(rb)

    def lookup(samples: dict, unit: tuple) -> float | None:
        return samples[unit] if unit in samples else samples.get((None, *unit[1:]))

    candidates = list(dict.fromkeys([*sa, *sb]))
    if any(u[0] is not None for u in candidates):
        candidates = [u for u in candidates if u[0] is not None]
    units = [u for u in candidates if lookup(sa, u) is not None and lookup(sb, u) is not None]
    xs, ys = [lookup(sa, u) for u in units], [lookup(sb, u) for u in units]
    record = {"a": a, "b": b, "at": at, **paired(xs, ys), "unit": "fraction"}
    train = len({k[0] for k in units if k[0] is not None})
    targets, seeds = len({k[1] for k in units}), len({k[2] for k in units})
    over = f"{_plural(targets, 'target')} × {_plural(seeds, 'fine-tuning seed')}"
    if train > 1:
        over += f" × {_plural(train, 'meta-training run')}"
    elif not (a in UNTRAINED and b in UNTRAINED):
        over += " of 1 meta-training run"
    return {**record, "over": over}


def comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every two algorithms compared at every point of the experiment (:attr:`Experiment.points`) where
    both were measured: ``a``, ``b``, ``at``, ``mean_diff`` (a − b, a fraction of test images like the
    accuracies), ``ci95`` ([low, high]: the 95 % paired t-interval; None under two pairs), ``n`` (pairs),
    ``unit`` and ``over`` (what the pairs run over)."""
    spec = EXPERIMENTS.get(result["experiment"])
    out = []
    for at, by_name in spec.points(result):
        names = [n for n, r in by_name.items() if r is not None]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                try:
                    out.append(compare(a, by_name[a], b, by_name[b], at))
                except ValueError:
                    continue
    return out


def verdict(c: dict[str, Any]) -> str:
    """One sentence the comparison supports, and no more."""
    text = f"{c['a']} − {c['b']} at {c['at']}: "
    if c["mean_diff"] is None:
        return text + "no pairs"
    if not finite(c["mean_diff"]):  # a results file holding NaN (an accuracy never measured): no verdict
        return text + "the difference is not a number (an accuracy was not finite): no verdict"
    text += f"{100 * c['mean_diff']:+.1f} points"
    if c["ci95"] is None:
        return text + f", {_plural(c['n'], 'pair')}: too few pairs for an interval"
    if not all(finite(v) for v in c["ci95"]):
        return text + f", {_plural(c['n'], 'pair')}: the interval is not a number: no verdict"
    low, high = (100 * v for v in c["ci95"])
    text += f", 95 % CI [{_bound(low)}, {_bound(high)}], {_plural(c['n'], 'pair')}"
    if low <= 0 <= high:
        return text + ": no significant difference"
    return text + f": {c['a'] if low > 0 else c['b']} higher"


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (a results file may hold NaN where an accuracy was not finite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bound(points: float) -> str:
    """An interval's end in points: one decimal, or two where one would read as 0 while it is not."""
    return f"{points:.1f}" if round(points, 1) != 0 or points == 0 else f"{points:.2f}"


def verdicts(result: dict[str, Any]) -> list[str]:
    """The verdicts of the results' paired comparisons (those stored, else worked out from the results),
    under a line that says what each interval is over."""
    found = result.get("comparisons")
    if found is None:
        found = comparisons(result)
    if not found:
        return []
    lines: list[str] = []
    for over in dict.fromkeys(c.get("over", "") for c in found):
        lines += [""] if lines else []
        lines.append(
            f"Paired differences a − b in accuracy points (95 % t-interval over {over}; the same targets "
            "and fine-tuning seeds for every algorithm):"
        )
        lines.append("")
        lines += [f"- {verdict(c)}" for c in found if c.get("over", "") == over]
    return lines
