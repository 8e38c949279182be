"""The objectives, influence, UD and Pareto optimality, against hand computation."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignlab.drmdp import objectives as obj
from alignlab.drmdp.examples import clickbait, conspiracy, dehydration, writers_curse
from alignlab.drmdp.model import DRMDP, random_drmdp


def constant_policy(model, action):
    a = model.actions.index(action)
    return lambda t, s, theta: a


@pytest.mark.parametrize("horizon", [1, 2, 3, 4, 5])
def test_conspiracy_real_time_by_hand(horizon):
    """Section 3.1: inaction earns 10H, influencing -100 + 100(H - 1)."""
    m = conspiracy(horizon)
    noop = obj.trajectory_distribution(m, constant_policy(m, "noop"))
    influence = obj.trajectory_distribution(m, constant_policy(m, "influence"))
    assert obj.real_time_reward(m, noop) == 10 * horizon
    assert obj.real_time_reward(m, influence) == -100 + 100 * (horizon - 1)
    assert obj.final_reward(m, influence) == 100 * horizon  # all judged by theta_H = influenced
    assert obj.initial_reward(m, influence) == -100 * horizon  # all judged by theta_0 = natural


def test_writers_curse_objectives_by_hand():
    m = writers_curse()  # H = 2, R(s_t)
    influence_then_noop = obj.trajectory_distribution(m, {(0, 0, 0): 1, (1, 1, 1): 0})
    # s = (no_poetry, poetry), theta_H = ambitious: R_amb(no_poetry) + R_amb(poetry) = 1/2 + 1
    assert obj.final_reward(m, influence_then_noop) == Fraction(3, 2)
    # real time: R_amb(no_poetry) + R_unh(poetry) = 1/2 - 10
    assert obj.real_time_reward(m, influence_then_noop) == Fraction(-19, 2)
    assert obj.utility_vector(m, influence_then_noop) == (Fraction(3, 2), Fraction(-19, 2))
    assert obj.influences(m, {(0, 0, 0): 1, (1, 1, 1): 0})


def test_reward_argument_reading_moves_the_scored_state():
    m = writers_curse(reward_argument="s_next")
    dist = obj.trajectory_distribution(m, constant_policy(m, "influence"))
    # R_amb(poetry) + R_unh(poetry) = 1 - 10 with the reward on s_{t+1}
    assert obj.real_time_reward(m, dist) == -9


def test_xi_theta_range_decides_last_step_influence():
    """Clickbait at the last step changes theta_H only (notes: "Range of xi^theta")."""
    m = clickbait()
    last_step = {(0, 0, 0): 0, (1, 0, 0): 1, (1, 0, 1): 1}
    assert not obj.influences(m, last_step)
    assert obj.influences(m, last_step, include_theta_H=True)
    dist = obj.trajectory_distribution(m, last_step)
    assert obj.theta_trajectory_distribution(dist) == {(0, 0): 1}
    assert obj.theta_trajectory_distribution(dist, include_theta_H=True) == {(0, 0, 1): 1}


def drifting_model():
    """Inaction moves theta 0 -> 1 with probability 1/4 each step; 'stay' pins theta at 0."""
    return DRMDP.from_dicts(
        states=("s",),
        thetas=("a", "b"),
        actions=("noop", "stay"),
        transition=lambda s, th, act: (
            {("s", "a"): 1}
            if act == "stay"
            else ({("s", "a"): "3/4", ("s", "b"): "1/4"} if th == "a" else {("s", "b"): 1})
        ),
        reward=lambda th, s, act, s2: {"a": {"noop": 1, "stay": 0}, "b": {"noop": 0, "stay": 4}}[
            th
        ][act],
        initial=("s", "a"),
        horizon=2,
        noop="noop",
    )


def test_natural_shifts_by_hand():
    m = drifting_model()
    natural = obj.natural_theta_marginals(m)
    assert natural[1] == {0: Fraction(3, 4), 1: Fraction(1, 4)}
    # 'stay' always: t=0 scored by theta_0 = a (0); t=1 by 3/4 R_a(stay) + 1/4 R_b(stay) = 1
    stay = obj.trajectory_distribution(m, constant_policy(m, "stay"))
    assert obj.natural_shifts_reward(m, stay) == 1
    # inaction: theta stays a, a, a (9/16), or moves at the second step (3/16) or the first (1/4)
    noop = obj.trajectory_distribution(m, constant_policy(m, "noop"))
    assert sorted(noop.values()) == [Fraction(3, 16), Fraction(1, 4), Fraction(9, 16)]
    assert obj.real_time_reward(m, noop) == 1 + Fraction(3, 4)
    assert obj.influences(m, constant_policy(m, "stay"))


def test_myopic_values_are_expected_immediate_rewards():
    m = dehydration()  # R(s_t): the action does not change the immediate reward
    q = obj.myopic_values(m)
    assert all(len(set(row)) == 1 for row in q)
    assert obj.myopic_values(clickbait())[0].tolist() == [1, 2]


def test_unambiguous_desirability_and_pareto():
    assert obj.is_unambiguously_desirable((2, 3), (2, 1))
    assert not obj.is_unambiguously_desirable((5, 0), (2, 1))
    assert obj.dominates((2, 3), (2, 1)) and not obj.dominates((2, 1), (2, 1))
    assert obj.pareto_optimal([(2, 3), (2, 1), (3, 0), (2, 3)]) == [True, False, True, True]


def test_unknown_objective_and_missing_theta_star():
    m = conspiracy()
    with pytest.raises(ValueError, match="unknown objective 'kindness'"):
        obj.check_objective("kindness", m, None)
    with pytest.raises(ValueError, match=r"theta_star, one of \['natural', 'influenced'\]"):
        obj.check_objective("privileged", m, None)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), horizon=st.integers(0, 3))
def test_trajectory_distribution_is_a_distribution(seed, horizon):
    rng = np.random.default_rng(seed)
    m = random_drmdp(rng, 2, 2, 2, horizon, branching=2, exact=True)
    policy = rng.integers(0, 2, size=(max(horizon, 1), 2, 2))
    dist = obj.trajectory_distribution(m, policy)
    assert sum(dist.values()) == 1
    assert all(len(xi.actions) == horizon and len(xi.thetas) == horizon + 1 for xi in dist)
    # privileged[theta] is the same sum as real time when there is a single theta ... and EU is linear
    assert obj.utility_vector(m, dist) == tuple(
        obj.privileged_reward(m, dist, th) for th in range(2)
    )
