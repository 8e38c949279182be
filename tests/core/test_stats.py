"""core.stats.wilson_ci: the Wilson score interval, checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.core.stats import wilson_ci

CASES = [
    (k, n)
    for n in (1, 2, 3, 5, 10, 17, 50, 100, 1000, 12345)
    for k in sorted({0, 1, n // 3, n - 1, n})
]


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_wilson_matches_scipy(confidence):
    for k, n in CASES:
        got = wilson_ci(k, n, confidence)
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        assert got == pytest.approx((ci.low, ci.high), abs=1e-12, rel=0), (k, n)
        assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_by_hand_and_edges():
    # 8 of 10 at 95%: center (16 + z^2) / (2 (10 + z^2)), Wilson 1927's formula
    z = sps.norm.ppf(0.975)
    center = (2 * 8 + z**2) / (2 * (10 + z**2))
    half = z / (2 * (10 + z**2)) * math.sqrt(4 * 10 * 0.8 * 0.2 + z**2)
    assert wilson_ci(8, 10) == pytest.approx((center - half, center + half), abs=1e-15)
    assert wilson_ci(0, 20)[0] == 0.0 and wilson_ci(20, 20)[1] == 1.0
    assert wilson_ci(0, 20)[1] > 0 and wilson_ci(20, 20)[0] < 1  # not collapsed to a point
    lo, hi = wilson_ci(3, 7)
    lo2, hi2 = wilson_ci(7 - 3, 7)
    assert lo == pytest.approx(1 - hi2, abs=1e-15) and hi == pytest.approx(1 - lo2, abs=1e-15)
    assert wilson_ci(0, 0) == (0.0, 1.0) and wilson_ci(0, 0, 0.5) == (0.0, 1.0)
    assert wilson_ci(np.int64(4), np.int64(9)) == wilson_ci(4, 9)
    wide, narrow = wilson_ci(30, 100, 0.99), wilson_ci(30, 100, 0.8)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


@pytest.mark.parametrize(
    "args, match",
    [
        ((5, 3), r"successes must be in 0\.\.n"),
        ((-1, 3), r"successes must be in 0\.\.n"),
        ((0, -1), "n must be >= 0"),
        ((1.5, 3), "successes must be an integer"),
        ((True, 3), "successes must be an integer"),
        ((1, 3.0), "n must be an integer"),
        ((1, 3, 1.0), "confidence must be a number strictly between 0 and 1"),
        ((1, 3, 0.0), "strictly between 0 and 1"),
        ((1, 3, 95), "strictly between 0 and 1"),
        ((1, 3, math.nan), "strictly between 0 and 1"),
        ((1, 3, "0.95"), "strictly between 0 and 1"),
    ],
)
def test_wilson_rejects_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        wilson_ci(*args)


def test_paired_bootstrap_ci_covers_the_mean_difference_and_respects_pairing():
    import numpy as np

    from alignlab.core.stats import paired_bootstrap_ci

    rng = np.random.default_rng(0)
    base = rng.normal(size=200) * 10  # large shared noise: pairing removes it
    a, b = base + 0.5 + rng.normal(size=200) * 0.1, base
    d, lo, hi = paired_bootstrap_ci(a, b, np.random.default_rng(1))
    assert lo < d < hi and 0.45 < lo and hi < 0.55 and hi - lo < 0.05
    assert d == pytest.approx(float(np.mean(a - b)))
    # a constant difference has a zero-width interval
    assert paired_bootstrap_ci([2.0, 3.0], [1.0, 2.0], np.random.default_rng(0)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 2.0], np.random.default_rng(0))
