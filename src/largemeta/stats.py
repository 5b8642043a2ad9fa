"""The intervals reported beside every accuracy and every difference: two-sided 95 % Student-t intervals.

The t quantiles come from :mod:`scipy.stats` (``t.ppf``), exact for any number of degrees of freedom.
:func:`ci95` is the half-width of the interval of a mean over seeds; :func:`paired` is the interval of the
mean of paired differences (a paired t-interval: two initializations fine-tuned on the same targets with the
same seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _check_df(df: int) -> None:
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")


def t_quantile(probability: float, df: int) -> float:
    """The t with ``A(t | df) = probability`` (two-sided), e.g. 12.706 for 0.95 and one degree of freedom."""
    from scipy.stats import t as student_t

    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability!r}")
    _check_df(df)
    return float(student_t.ppf(0.5 + probability / 2.0, df))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean of ``values`` (None for fewer than two: one value has no
    interval)."""
    n = len(values)
    if n < 2:
        return None
    _, sd = _mean_sd(values)
    return t_quantile(0.95, n - 1) * sd / math.sqrt(n)


def plus_minus(mean: float, width: float | None, digits: int = 1, scale: float = 100.0) -> str:
    """``mean ± width`` (times ``scale``, ``digits`` decimals), or the mean and "one value: no interval"
    where there is none (:func:`ci95` of fewer than two values)."""
    if width is None or not math.isfinite(width):
        return f"{scale * mean:.{digits}f} (one seed: no interval)"
    return f"{scale * mean:.{digits}f} ± {scale * width:.{digits}f}"


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """The paired comparison of ``a`` and ``b`` (``a[i]`` and ``b[i]`` measured on the same unit): the mean
    of the differences ``a[i] − b[i]``, its 95 % t-interval ``[low, high]`` (None for fewer than two pairs)
    and the number of pairs ``n``."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n == 0:
        return {"mean_diff": None, "ci95": None, "n": 0}
    mean = math.fsum(diffs) / n
    if n < 2:
        return {"mean_diff": mean, "ci95": None, "n": n}
    width = ci95(diffs)
    return {"mean_diff": mean, "ci95": [mean - width, mean + width], "n": n}
