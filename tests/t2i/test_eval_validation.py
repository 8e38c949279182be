"""Metric validation against raters per model pair (Imagen 3 App. C.1)."""

import numpy as np
import pytest
from scipy import stats

from alignlab.t2i.eval.sxs import Rating
from alignlab.t2i.eval.validation import (
    agreement,
    agreement_where_concur,
    metric_verdict,
    metric_verdicts,
    rater_verdict,
    rater_verdicts,
)


def test_metric_verdict_is_a_two_sided_wilcoxon_at_005():
    rng = np.random.default_rng(0)
    base = rng.random(100)
    assert metric_verdict(base + 0.05 + rng.normal(0, 0.1, 100), base) == "a"
    assert metric_verdict(base, base + 0.05 + rng.normal(0, 0.1, 100)) == "b"
    noise = rng.normal(0, 0.1, 100)
    p = stats.wilcoxon(noise).pvalue
    assert metric_verdict(base + noise, base) == (
        "tie" if p >= 0.05 else "a" if np.median(noise) > 0 else "b"
    )
    assert metric_verdict(base, base) == "tie"
    # the verdict follows scipy's default test exactly at the 0.05 boundary
    for seed in range(30):
        d = np.random.default_rng(seed).normal(0.15, 1.0, 40)
        want = "tie" if stats.wilcoxon(d).pvalue >= 0.05 else ("a" if np.median(d) > 0 else "b")
        assert metric_verdict(d, np.zeros(40)) == want
    with pytest.raises(ValueError, match="paired"):
        metric_verdict(base, base[:50])


def test_rater_verdict_is_a_binomial_test_with_ties_dropped():
    assert rater_verdict(60, 40) == "tie"  # p = 0.057
    assert rater_verdict(62, 38) == "a"  # p = 0.021
    for wa, wb in [(60, 40), (61, 39), (40, 61), (10, 10), (0, 0), (9, 1)]:
        p = stats.binomtest(wa, wa + wb).pvalue if wa + wb else 1.0
        want = "tie" if p >= 0.05 else ("a" if wa > wb else "b")
        assert rater_verdict(wa, wb) == want


def test_rater_verdicts_from_ratings_drop_ties_and_respect_sides():
    def r(a, b, c):
        return Rating("s", "x", "overall", 0, a, b, c)

    ratings = (
        [r("m0", "m1", "left")] * 30 + [r("m1", "m0", "right")] * 30 + [r("m0", "m1", "tie")] * 200
    )
    ratings += [r("m1", "m0", "left")] * 10
    assert rater_verdicts(ratings) == {("m0", "m1"): "a"}  # 60 wins vs 10, 200 ties dropped
    assert rater_verdicts(ratings, [("m1", "m0")]) == {("m1", "m0"): "b"}


def test_agreement_and_agreement_where_metrics_concur():
    pairs = [(f"m{i}", f"m{j}") for i in range(4) for j in range(i + 1, 4)]  # 6 pairs
    raters = dict(zip(pairs, ["a", "a", "b", "tie", "a", "b"]))
    m1 = dict(zip(pairs, ["a", "a", "a", "tie", "b", "b"]))  # 4 of 6
    m2 = dict(zip(pairs, ["a", "b", "a", "tie", "a", "b"]))  # 4 of 6
    assert agreement(m1, raters) == pytest.approx(100 * 4 / 6)
    assert agreement(m2, raters) == pytest.approx(100 * 4 / 6)
    both = agreement_where_concur(m1, m2, raters)
    # they concur on pairs 0, 2, 3, 5, and the raters agree on 0, 3, 5
    assert both["n_concur"] == 4 and both["concur_share"] == pytest.approx(100 * 4 / 6)
    assert both["agreement"] == pytest.approx(75.0)
    # keys given the other way round count with the verdict flipped
    flipped = {(b, a): {"a": "b", "b": "a"}.get(v, v) for (a, b), v in m1.items()}
    assert agreement(flipped, raters) == agreement(m1, raters)
    with pytest.raises(ValueError, match="missing for 1 pair"):
        agreement({k: v for k, v in m1.items() if k != pairs[0]}, raters)
    with pytest.raises(ValueError, match="valid verdicts"):
        agreement({**m1, pairs[0]: "win"}, raters)


def test_metric_verdicts_over_models():
    rng = np.random.default_rng(1)
    base = rng.random(80)
    scores = {"good": base + 0.2, "mid": base + rng.normal(0, 0.01, 80), "bad": base - 0.2}
    v = metric_verdicts(scores)
    assert v == {("good", "mid"): "a", ("good", "bad"): "a", ("mid", "bad"): "a"}
    with pytest.raises(ValueError, match="no scores for model 'x'"):
        metric_verdicts(scores, [("good", "x")])
