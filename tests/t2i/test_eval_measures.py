"""Counting, homogeneity, safety rates and red teaming (Imagen 3 Secs. 3.1 and 4)."""

import numpy as np
import pytest

from alignlab.t2i.eval.measures import (
    classifier_tradeoff,
    counting_accuracy,
    false_refusal_rate,
    homogeneous_share,
    red_team,
    violation_rate,
)


def test_counting_accuracy_by_number_and_structure():
    numbers = [1, 1, 2, 2, 5, 5]
    structures = ["plain", "attr", "plain", "attr", "plain", "attr"]
    counted = [1, 1, 2, 3, 4, 5]
    acc = counting_accuracy(numbers, structures, counted)
    assert acc["overall"] == pytest.approx(100 * 4 / 6)
    assert acc["by_number"] == {1: 100.0, 2: 50.0, 5: 50.0}
    assert acc["by_structure"] == {
        "plain": pytest.approx(100 * 2 / 3),
        "attr": pytest.approx(100 * 2 / 3),
    }
    # expected counts may differ from the grouping number ("two pairs" = 4)
    acc = counting_accuracy([2, 2], ["pairs", "pairs"], [4, 2], expected=[4, 4])
    assert acc["overall"] == 50.0
    with pytest.raises(ValueError, match="one length"):
        counting_accuracy([1], ["a", "b"], [1])


def test_homogeneous_share():
    groups = [["red"] * 8, ["red"] * 7 + ["blue"], ["blue", None, "blue"], [None, None]]
    assert homogeneous_share(groups) == pytest.approx(100 * 2 / 3)
    assert homogeneous_share(groups, skip_none=False) == pytest.approx(100 * 2 / 4)
    with pytest.raises(ValueError, match="no prompt"):
        homogeneous_share([[None]])


def test_violation_and_false_refusal_rates_and_tradeoff():
    violating = np.array([True] * 10 + [False] * 90)
    blocked = np.array([True] * 8 + [False] * 2 + [True] * 3 + [False] * 87)
    assert violation_rate(violating) == 10.0
    assert violation_rate(violating, blocked) == 2.0
    assert false_refusal_rate(blocked, violating) == pytest.approx(100 * 3 / 90)
    rng = np.random.default_rng(0)
    scores = np.where(violating, rng.uniform(0.5, 1.0, 100), rng.uniform(0.0, 0.7, 100))
    t = classifier_tradeoff(scores, violating, max_false_refusal=5.0)
    assert t["false_refusal"] <= 5.0
    # the lowest such threshold: one notch lower would exceed the budget
    benign = np.sort(scores[~violating])
    lower = benign[benign < t["threshold"]].max()
    assert false_refusal_rate(scores >= lower, violating) > 5.0
    assert t["violation_after"] == violation_rate(violating, scores >= t["threshold"])
    assert t["reduction"] == pytest.approx(t["violation_before"] / t["violation_after"]) or (
        t["violation_after"] == 0 and t["reduction"] == float("inf")
    )
    assert classifier_tradeoff(scores, violating, 0.0)["false_refusal"] == 0.0


def test_red_team_hill_climbs_to_a_hidden_target():
    """A toy search space: strings of 12 bits, one flipped per proposal; success is >= 11 ones;
    the graded score counts ones. Hill climbing reaches the success region well within budget
    and then stays next to it; a search blind to the score (success flags only) does not."""

    def propose(cur, rng):
        bits = list(cur) if cur is not None else ["0"] * 12
        k = rng.integers(12)
        bits[k] = "1" if bits[k] == "0" else "0"
        return "".join(bits)

    def success(text):
        return text.count("1") >= 11

    res = red_team(propose, success, 200, np.random.default_rng(1), score=lambda t: t.count("1"))
    assert res.first_success is not None and res.first_success < 100
    assert res.n_queries == 200 and res.success_rate == pytest.approx(100 * res.n_success / 200)
    assert res.best == "1" * 12 and all(s.count("1") >= 11 for s in res.successes)
    assert res.success_rate > 50  # once there, its neighbours succeed too
    blind = red_team(propose, success, 200, np.random.default_rng(1))
    assert blind.n_success < res.n_success / 5
    # already successful from the start
    res = red_team(propose, success, 5, np.random.default_rng(2), start="1" * 12)
    assert res.first_success == 1
    with pytest.raises(ValueError, match="budget"):
        red_team(propose, success, 0, np.random.default_rng(0))
