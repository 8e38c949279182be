"""Statistics across seeds: means with Student-t 95% confidence intervals, and Wilson score
intervals for success rates.

One seed gives a mean but no interval: the half-width is NaN (written "nan" in JSON), and a
comparison of intervals with a NaN half-width never holds, so a claim that needs separation
across seeds cannot pass on one seed by accident.
"""

from __future__ import annotations

import math
import numbers
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


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
    statistical inference", JASA 22(158)) for a success probability, from `successes` of `n`
    trials, without continuity correction.

    With p = k/n and z the normal quantile of (1 + confidence)/2, the interval is
    (2np + z^2 -+ z sqrt(4np(1-p) + z^2)) / (2(n + z^2)), in Newcombe's (1998) form, as scipy's
    `binomtest(k, n).proportion_ci(method="wilson")` computes it. Unlike the normal
    approximation it stays inside [0, 1] and does not collapse to a point at k = 0 or k = n:
    the lower end is exactly 0 when k = 0 and the upper end exactly 1 when k = n. With no
    trials (n = 0) nothing is known: (0.0, 1.0).
    """
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"wilson_ci: {name} must be an integer, got {value!r}")
    k, n = int(successes), int(n)
    if n < 0:
        raise ValueError(f"wilson_ci: n must be >= 0 trials, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: successes must be in 0..n = 0..{n}, got {k}")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0 < confidence < 1
    ):
        raise ValueError(
            f"wilson_ci: confidence must be a number strictly between 0 and 1 (e.g. 0.95), "
            f"got {confidence!r}"
        )
    if n == 0:
        return 0.0, 1.0
    from scipy.special import ndtri

    z = float(ndtri(0.5 + 0.5 * float(confidence)))
    p = k / n
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    lo = 0.0 if k == 0 else max(0.0, center - delta)
    hi = 1.0 if k == n else min(1.0, center + delta)
    return lo, hi


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    rng: np.random.Generator,
    n_boot: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """mean(a - b) and its percentile bootstrap interval, resampling the pairs (a_i, b_i)
    together (Efron & Tibshirani 1993, ch. 13): (difference, low, high)."""
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if x.ndim != 1 or len(x) == 0 or len(a) != len(b):
        raise ValueError("paired_bootstrap_ci needs two equally long, non-empty 1-d sequences")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(x.mean()), float(lo), float(hi)
