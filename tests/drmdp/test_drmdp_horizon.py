"""Section 3.1: longer horizons increase the incentive to influence."""

import json

import numpy as np
import pytest

from alignlab.drmdp.exact import solve_exact
from alignlab.drmdp.examples import conspiracy
from alignlab.drmdp.horizon import (
    conspiracy_threshold,
    incentive_fraction_by_horizon,
    random_influence_drmdp,
)


def test_conspiracy_threshold_is_three():
    out = conspiracy_threshold(6)
    assert out["threshold"] == 3
    assert out["noop_value"] == [10.0 * h for h in range(1, 7)]
    assert out["influence_value"] == [-100.0 + 100 * (h - 1) for h in range(1, 7)]
    assert out["influence_incentive"] == [False, False, True, True, True, True]
    for h in range(1, 5):  # the DP answer agrees with enumeration
        assert (
            solve_exact(conspiracy(h), "real_time").influence_incentive
            == out["influence_incentive"][h - 1]
        )


def test_incentive_fraction_grows_with_horizon():
    out = incentive_fraction_by_horizon(seed=3, n_models=60, max_horizon=6)
    f = out["fraction"]
    assert f[0] == 0.0  # nothing can influence xi^theta = (theta_0)
    assert f[-1] >= f[1] + 0.15 and f[-1] > 0.3
    assert all(b >= a - 0.05 for a, b in zip(f, f[1:]))
    assert out["count"][-1] == round(f[-1] * 60)


def test_incentive_fraction_is_seeded():
    a = incentive_fraction_by_horizon(seed=1, n_models=20, max_horizon=4)
    json.dumps(a) and json.dumps(conspiracy_threshold(3))
    assert a == incentive_fraction_by_horizon(seed=1, n_models=20, max_horizon=4)
    assert a != incentive_fraction_by_horizon(seed=2, n_models=20, max_horizon=4)


def test_random_influence_model_design():
    m = random_influence_drmdp(np.random.default_rng(0), 3, 3, 3, horizon=4)
    noop_rows = np.arange(m.n_aug) * m.n_actions + m.noop_index
    moved = m.theta_of[m.successors[noop_rows]] != m.theta_of[:, None]
    assert not np.any(m.probs[noop_rows][moved] > 0)  # inaction never moves theta
    exact = random_influence_drmdp(np.random.default_rng(0), 3, 3, 3, horizon=4, exact=True)
    assert np.allclose(exact.probs, m.probs) and np.allclose(exact.reward, m.reward)
    with pytest.raises(ValueError, match="max_horizon"):
        conspiracy_threshold(0)
