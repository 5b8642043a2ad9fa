"""The interval reported beside every accuracy: a two-sided 95 % Student-t interval of a mean over seeds.

The t quantile is computed, not tabulated, so it is exact for any number of seeds: for an integer number ν of
degrees of freedom the distribution function has a finite closed form (Abramowitz & Stegun 26.7.3–4): with
θ = atan(t / √ν) and c = cos²θ, the probability A(t | ν) = P(|T| ≤ t) is

    ν odd:   (2/π) [θ + sinθ cosθ (1 + (2/3) c + (2·4)/(3·5) c² + …
                                  + (2·4···(ν−3))/(3·5···(ν−2)) c^((ν−3)/2))]
    ν even:  sinθ [1 + (1/2) c + (1·3)/(2·4) c² + … + (1·3···(ν−3))/(2·4···(ν−2)) c^((ν−2)/2)]

and the quantile is the t where A = 0.95, found by bisection (A grows with t) to float precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def t_two_sided_probability(t: float, df: int) -> float:
    """A(t | ν) = P(|T| ≤ t) for Student's t with ``df`` = ν ≥ 1 (an integer) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 1.0, 1.0
        for j in range(1, (df - 1) // 2):  # terms (2·4···2j)/(3·5···(2j+1)) c^j
            term *= c * (2 * j) / (2 * j + 1)
            total += term
        series = s * math.cos(theta) * total if df > 1 else 0.0
        return 2.0 / math.pi * (theta + series)
    total, term = 1.0, 1.0
    for j in range(1, df // 2):  # terms (1·3···(2j−1))/(2·4···2j) c^j
        term *= c * (2 * j - 1) / (2 * j)
        total += term
    return s * total


def t_quantile(probability: float, df: int) -> float:
    """The t with ``A(t | df) = probability`` (two-sided), e.g. 12.706 for 0.95 and one degree of freedom."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability!r}")
    lo, hi = 0.0, 1.0
    while t_two_sided_probability(hi, df) < probability:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_two_sided_probability(mid, df) < probability else (lo, mid)
    return 0.5 * (lo + hi)


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95 % t-interval of the mean of ``values`` (0 for fewer than two)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t_quantile(0.95, n - 1) * sd / math.sqrt(n)
