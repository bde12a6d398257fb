"""Means over seeds with 95% t-intervals, paired differences, and the verdict on a claim.

For values v_1..v_n (one per seed)::

    mean = sum(v) / n,   s = sqrt(sum((v - mean)^2) / (n - 1)),   half = t_{0.975, n-1} * s / sqrt(n)

(``scipy.stats.t``). A claim "A beats B" is tested on the paired differences d_k = A_k - B_k over the seeds both
arms have, with the same interval. Verdict: ``supported`` when the interval lies entirely on the claimed side of 0,
``contradicted`` when it lies entirely on the other side, ``not resolved`` when it contains 0, and ``untestable``
with fewer than two paired seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval (``low``/``high`` NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` (NaNs dropped) with its t-interval (module docstring)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(st.t.ppf(0.5 + confidence / 2.0, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> Interval:
    """Interval of ``a[seed] - b[seed]`` over the seeds both have (finite values only)."""
    seeds = sorted(k for k in a if k in b and _finite(a[k]) and _finite(b[k]))
    return mean_ci([a[k] - b[k] for k in seeds], confidence)


def verdict(diff: Interval, lower_is_better: bool) -> str:
    """``supported`` / ``contradicted`` / ``not resolved`` / ``untestable`` for "A beats B" given A - B."""
    if diff.n < 2 or not math.isfinite(diff.low):
        return "untestable"
    sign = -1.0 if lower_is_better else 1.0
    low, high = sorted((sign * diff.low, sign * diff.high))
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "not resolved"


def by_seed(rows: Sequence[dict], metric: str) -> Dict[int, float]:
    """``{seed: value}`` from result rows of one arm (missing or empty values dropped)."""
    out = {}
    for row in rows:
        value = row.get(metric)
        if value not in (None, ""):
            value = float(value)
            if math.isfinite(value):
                out[int(row["seed"])] = value
    return out


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)
