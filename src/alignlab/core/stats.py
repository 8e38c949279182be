"""Statistics across seeds: means with Student-t 95% confidence intervals.

One seed gives a mean but no interval: the half-width is NaN (written "nan" in JSON), and a
comparison of intervals with a NaN half-width never holds, so a claim that needs separation
across seeds cannot pass on one seed by accident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% Student-t confidence interval (nan for n < 2)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if len(x) < 2:
        return float(x.mean()), math.nan
    from scipy import stats

    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def welch_diff_ci95(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) − mean(b) and the half-width of its 95% Welch interval (unequal variances;
    Welch–Satterthwaite degrees of freedom). nan with fewer than 2 values on either side; 0
    when both samples are constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) < 2:
        return diff, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0
    from scipy import stats

    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, float(stats.t.ppf(0.975, dof) * se)


def seed_summary(values: Sequence[float]) -> dict[str, object]:
    """{"values", "mean", "ci95"} of one figure measured on several seeds."""
    mean, half = mean_ci95(values)
    return {"values": [float(v) for v in values], "mean": mean, "ci95": half}
