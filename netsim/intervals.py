"""Mean and 95 % confidence interval of a figure over independent seeds.

A run with ``--seeds N`` repeats one configuration with seeds s, s+1, …,
s+N−1; each seed is an independent draw of the whole network (population
costs, arrivals, routing, cheating, beacon, hence sampling). A summary
figure is then reported as its mean over the seeds with the two-sided 95 %
Student-t interval ``mean ± t(0.975, N−1) · sd / √N`` (sd with N−1 in the
denominator). Seeds whose figure is undefined (say, a detection time when
no cheater was caught) are left out and N counts the rest. A figure whose
interval holds zero strictly inside it is *inconclusive*: the seeds do not
settle its sign.

The t quantile comes from the exact Student-t distribution function for
integer degrees of freedom, Abramowitz and Stegun, *Handbook of
Mathematical Functions*, 26.7.3 (odd) and 26.7.4 (even), inverted by
bisection; no statistics package is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LEVEL = 0.95
INTERVAL = "95 % Student-t interval over seeds"


def t_within(t: float, df: int) -> float:
    """A(t|ν) = P(|T| ≤ t) for Student's t with ν = ``df`` degrees of freedom (A&S 26.7.3/4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        term, total = cos, cos if df > 1 else 0.0
        for j in range(3, df - 1, 2):
            term *= (j - 1) / j * cos * cos
            total += term
        return 2.0 / math.pi * (theta + sin * total)
    term, total = 1.0, 1.0
    for j in range(2, df - 1, 2):
        term *= (j - 1) / j * cos * cos
        total += term
    return sin * total


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| ≤ t) = ``level``: the half-width multiplier of a two-sided interval."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    low, high = 0.0, 1.0
    while t_within(high, df) < level:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_within(middle, df) < level:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Estimate:
    """A figure over seeds: mean and interval (NaN when fewer than two seeds define it)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def inconclusive(self) -> bool:
        """The interval holds zero strictly inside: the seeds do not settle the sign."""
        return self.low < 0.0 < self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def estimate(values: Iterable[float | int | None]) -> Estimate:
    """Mean and 95 % Student-t interval of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(finite) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    variance = math.fsum((v - mean) ** 2 for v in finite) / (n - 1)
    half = t_quantile(n - 1) * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half, n)
