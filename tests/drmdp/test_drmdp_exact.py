"""The enumeration reference solver."""

import numpy as np
import pytest

from alignlab.drmdp.exact import ExactSolver, count_policies, decision_points, solve_exact
from alignlab.drmdp.examples import clickbait, conspiracy, dehydration, writers_curse
from alignlab.drmdp.model import random_drmdp


def test_decision_points_are_the_reachable_ones():
    m = conspiracy(3)
    assert decision_points(m) == ((0, 0, 0), (1, 0, 0), (1, 0, 1), (2, 0, 0), (2, 0, 1))
    assert count_policies(m) == 32
    assert len(decision_points(dehydration())) == 4  # (1,2) at t=0; (1,2), (2,3), (3,4) at t=1


@pytest.mark.parametrize(
    "horizon, behaviour, value", [(2, ("noop",) * 2, 20), (3, ("influence",) * 3, 100)]
)
def test_conspiracy_real_time_switches_at_three(horizon, behaviour, value):
    sol = solve_exact(conspiracy(horizon), "real_time")
    assert sol.behaviours() == [behaviour] and sol.optimal_value == value
    assert sol.influence_incentive == (horizon >= 3)


def test_optimal_set_keeps_exact_ties_and_off_path_choices():
    sol = solve_exact(conspiracy(3), "real_time")
    assert len(sol.policies) == 4  # two off-path points, each free
    assert all(v == 100 for v in sol.values)
    assert sol.policy_dict(0)[(0, "bob", "natural")] == "influence"
    assert sol.policy_array(0).shape == (3, 1, 2)


def test_vacuous_and_constrained():
    solver = ExactSolver(writers_curse())
    assert solver.solve("myopic").vacuous  # R(s_t): no action changes the immediate reward
    assert not solver.solve("real_time").vacuous
    crt = solver.solve("constrained_real_time")
    assert crt.n_feasible < crt.n_policies and not any(crt.influences)


def test_constrained_range_reading():
    solver = ExactSolver(clickbait())
    assert solver.solve("constrained_real_time").behaviours() == [("news", "clickbait")]
    assert solver.solve("constrained_real_time", include_theta_H=True).behaviours() == [
        ("news", "news")
    ]


def test_pareto_ud_in_dehydration():
    sol = solve_exact(dehydration(), "pareto_ud")
    firsts = {b[0] for b in sol.behaviours()}
    assert firsts == {"a3", "a4"} and sol.influence_incentive
    assert solve_exact(dehydration(r3_at_2=-5), "pareto_ud").behaviours()[0][0] == "a4"


def test_policy_limit_is_a_clear_error():
    with pytest.raises(ValueError, match="exceed max_policies=10"):
        ExactSolver(conspiracy(3), max_policies=10)
    with pytest.raises(ValueError, match="unknown objective"):
        solve_exact(conspiracy(2), "best")


def test_behaviours_need_a_deterministic_model():
    model = random_drmdp(np.random.default_rng(0), 2, 2, 2, 2, branching=2, exact=True)
    with pytest.raises(ValueError, match="possible trajectories"):
        solve_exact(model, "real_time").behaviours()
