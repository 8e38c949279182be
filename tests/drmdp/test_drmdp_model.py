"""DRMDP construction and validation (Definition 1)."""

from fractions import Fraction

import numpy as np
import pytest

from alignlab.drmdp.model import DRMDP, Labelling, random_drmdp, sparse_from_dense

BASE = dict(
    states=("a", "b"),
    thetas=("x", "y"),
    actions=("noop", "go"),
    transition=lambda s, th, a: (
        {(s, th): 1} if a == "noop" else {("b", "y"): "1/3", ("a", "x"): "2/3"}
    ),
    reward=lambda th, s, a, s2: 1 if th == "x" else -1,
    initial=("a", "x"),
    horizon=2,
    noop="noop",
)


def build(**overrides):
    return DRMDP.from_dicts(**{**BASE, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(transition=lambda s, th, a: {(s, th): "1/2", ("b", "y"): "1/3"}),
            "(s='a', θ='x', a='noop') sum to 5/6",
        ),
        (
            dict(transition=lambda s, th, a: {(s, th): "3/2", ("b", "y"): "-1/2"}),
            "negative transition probability -1/2",
        ),
        (
            dict(transition=lambda s, th, a: {("c", th): 1}),
            "unknown state 'c'; valid states: ['a', 'b']",
        ),
        (
            dict(transition=lambda s, th, a: {(s, "z"): 1}),
            "unknown theta 'z'; valid thetas: ['x', 'y']",
        ),
        (
            dict(transition={("a", "x", "jump"): {("a", "x"): 1}}),
            "unknown action 'jump'; valid actions: ['noop', 'go']",
        ),
        (
            dict(transition={("a", "x", "noop"): {("a", "x"): 1}}),
            "no transition given for (s='a', θ='x', a='go')",
        ),
        (dict(horizon=-1), "horizon must be non-negative, got -1"),
        (dict(horizon=1.5), "horizon must be an integer"),
        (dict(noop="stay"), "noop 'stay' is not an action; valid actions: ['noop', 'go']"),
        (dict(initial={("a", "x"): "1/2"}), "initial distribution sums to 1/2, not 1"),
        (dict(initial={("a", "q"): 1}), "unknown theta 'q'"),
        (dict(reward={("x", "a", "fly", "a"): 1}), "unknown action 'fly'"),
        (dict(states=("a", "a")), "duplicate names in states"),
    ],
)
def test_validation_names_the_problem(overrides, message):
    with pytest.raises(ValueError) as err:
        build(**overrides)
    assert message in str(err.value)


def test_float_rows_must_sum_to_one():
    successors = np.zeros((8, 1), dtype=np.int64)
    reward = np.zeros((2, 2, 2))
    initial = np.array([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"\(s='s0', θ='theta0', a='a0'\) sum to 0.9"):
        DRMDP.from_arrays(successors, np.full((8, 1), 0.9), reward, initial, horizon=1)
    with pytest.raises(ValueError, match="successor indices"):
        DRMDP.from_arrays(successors + 7, np.ones((8, 1)), reward, initial, horizon=1)


def test_exact_tables_and_float_arrays_agree():
    m = build()
    assert m.exact is not None and m.exact.probs.sum(axis=1).tolist() == [1] * 8
    assert m.transition("a", "x", "go") == pytest.approx({("b", "y"): 1 / 3, ("a", "x"): 2 / 3})
    assert m.exact.reward[1, 0, 0, 0] == Fraction(-1) and m.reward[1, 0, 0, 0] == -1.0
    assert not m.is_deterministic and m.n_aug == 4 and m.noop_index == 0


def test_floats_are_read_as_their_decimal_value():
    m = build(
        transition=lambda s, th, a: {
            (s, th): 0.1,
            ("b", "y") if (s, th) != ("b", "y") else ("a", "x"): 0.9,
        }
    )
    assert Fraction(1, 10) in set(m.exact.probs.ravel())


def test_variants_keep_everything_else():
    m = build()
    assert m.with_horizon(5).horizon == 5 and m.with_horizon(5).exact is m.exact
    started = m.with_initial(theta="y")
    assert started.initial_point == ("a", "y") and started.exact.initial[0, 1] == 1
    with pytest.raises(ValueError, match="horizon must be non-negative"):
        m.with_horizon(-2)
    with pytest.raises(ValueError, match="unknown theta"):
        m.with_initial(theta="nope")


def test_arrays_are_read_only():
    m = build()
    with pytest.raises(ValueError):
        m.probs[0, 0] = 0.5


def test_sparse_from_dense_round_trip():
    rng = np.random.default_rng(0)
    dense = rng.random((3, 2, 2, 3, 2)) * (rng.random((3, 2, 2, 3, 2)) < 0.4)
    dense[..., 0, 0] += 1e-3  # every row has a successor
    dense /= dense.sum(axis=(-2, -1), keepdims=True)
    successors, probs = sparse_from_dense(dense)
    back = np.zeros((12, 6))
    np.add.at(
        back, (np.repeat(np.arange(12), successors.shape[1]), successors.ravel()), probs.ravel()
    )
    assert np.allclose(back, dense.reshape(12, 6))
    m = DRMDP.from_arrays(dense, None, np.zeros((2, 3, 2)), np.eye(3, 2) / 2, horizon=2)
    assert m.successors.shape == successors.shape


def test_random_drmdp_is_seeded_and_valid():
    a = random_drmdp(np.random.default_rng(7), 50, 4, 3, 10, branching=3)
    b = random_drmdp(np.random.default_rng(7), 50, 4, 3, 10, branching=3)
    c = random_drmdp(np.random.default_rng(8), 50, 4, 3, 10, branching=3)
    assert np.array_equal(a.successors, b.successors) and np.array_equal(a.probs, b.probs)
    assert not np.array_equal(a.probs, c.probs)
    assert a.exact is None and a.successors.shape == (50 * 4 * 3, 3)
    exact = random_drmdp(np.random.default_rng(1), 2, 2, 2, 3, exact=True)
    assert exact.exact is not None and all(s == 1 for s in exact.exact.probs.sum(axis=1))
    assert random_drmdp(np.random.default_rng(1), 3, 2, 2, 3, branching=1).is_deterministic


def test_labelling_judges_first_departure_from_inaction():
    labels = Labelling({"noop": "✓", "a3": "?", "a4": "✗"}, privileged={"3": {"a4": "?"}})
    assert labels.judge(("noop", "noop"), "noop") == "✓"
    assert labels.judge(("noop", "a4", "a3"), "noop") == "✗"
    assert labels.judge(("a4", "noop"), "noop", theta_star="3") == "?"
    assert labels.judge(("zap",), "noop") == "unlabelled"
