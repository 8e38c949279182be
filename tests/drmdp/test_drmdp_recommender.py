"""The recommender DR-MDP: which objectives manipulate preferences."""

import json

import numpy as np
import pytest

from alignlab.drmdp import dp
from alignlab.drmdp.exact import ExactSolver
from alignlab.drmdp.recommender import noop_kernel_mask, recommender_drmdp, recommender_study


@pytest.fixture(scope="module")
def study():
    return recommender_study()


def test_model_is_valid_and_inaction_equals_showing_the_favourite():
    m = recommender_drmdp()
    assert (m.n_states, m.n_thetas, m.n_actions) == (12, 16, 13)
    theta = "taste03"  # y = 0.2: favourite category round(0.2 * 11) = 2
    assert m.transition("c00", theta, "organic") == m.transition("c00", theta, "show_c02")
    up = m.transition("c00", theta, "show_c04")
    assert up[("c04", "taste04")] == pytest.approx(0.5 + 0.5 * 0.02)


def test_real_time_manipulates_and_constrained_does_not(study):
    o = study["objectives"]
    assert o["real_time"]["drift"] > o["constrained_real_time"]["drift"] + 0.2
    assert o["constrained_real_time"]["drift"] == pytest.approx(o["organic"]["drift"], abs=1e-9)
    assert o["real_time"]["mean_theta"][-1] > o["real_time"]["mean_theta"][0] + 0.2
    assert (
        "real_time" in study["manipulating"]
        and "constrained_real_time" not in study["manipulating"]
    )
    assert "initial" not in study["manipulating"] and "myopic" not in study["manipulating"]


def test_optima_and_what_is_given_up(study):
    o = study["objectives"]
    assert max(r["real_time_reward"] for r in o.values()) == pytest.approx(
        o["real_time"]["real_time_reward"]
    )
    assert max(r["initial_reward"] for r in o.values()) == pytest.approx(
        o["initial"]["initial_reward"]
    )
    assert (
        o["real_time"]["initial_reward_given_up"] > 20
        and o["constrained_real_time"]["real_time_reward_given_up"] > 5
    )
    assert len(o["real_time"]["mean_theta"]) == 31 and len(o["real_time"]["reward_per_step"]) == 30
    assert sum(o["real_time"]["reward_per_step"]) == pytest.approx(
        o["real_time"]["real_time_reward"]
    )
    assert study == recommender_study()  # deterministic
    json.dumps(study)


def test_constrained_mask_is_exact_on_a_small_recommender():
    """Masked DP equals the enumerated constrained real-time optimum (P(xi^theta) = noop's)."""
    m = recommender_drmdp(n_categories=2, n_levels=3, horizon=2, theta0_level=0, pull=(0.5,))
    solver = ExactSolver(m)
    for include_theta_H in (False, True):
        exact = solver.solve("constrained_real_time", include_theta_H=include_theta_H)
        masked = dp.solve_dp(m, "real_time", allowed=noop_kernel_mask(m, include_theta_H))
        assert masked.value == pytest.approx(float(exact.optimal_value))
        policy = tuple(int(masked.policy[t, s, th]) for t, s, th in exact.points)
        assert policy in exact.policies
    assert noop_kernel_mask(m)[-1].all() and not noop_kernel_mask(m, True)[-1].all()
    assert np.array_equal(noop_kernel_mask(m)[0][:, 0], np.ones(m.n_aug, bool))
