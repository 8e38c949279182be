"""Dynamic programming against the enumeration reference."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignlab.drmdp import dp
from alignlab.drmdp.exact import ExactSolver
from alignlab.drmdp.examples import EXAMPLES, conspiracy
from alignlab.drmdp.horizon import random_influence_drmdp
from alignlab.drmdp.model import random_drmdp


@st.composite
def small_models(draw):
    """Random stochastic models with at most 512 deterministic (s, theta, t)-policies."""
    horizon = draw(st.integers(1, 3))
    n_actions = draw(st.integers(2, 3 if horizon <= 2 else 2))  # 3 actions at H = 3: 3^9 policies
    return random_drmdp(
        np.random.default_rng(draw(st.integers(0, 10**6))),
        n_states=draw(st.integers(1, 2)),
        n_thetas=draw(st.integers(1, 2)),
        n_actions=n_actions,
        horizon=horizon,
        branching=draw(st.integers(1, 2)),
        exact=True,
        reward_on_next_state=draw(st.booleans()),
    )


def in_optimal_set(solution, policy):
    return tuple(int(policy[t, s, th]) for t, s, th in solution.points) in solution.policies


def check_agreement(model, objective, theta_star=None):
    exact = ExactSolver(model, max_policies=1000).solve(objective, theta_star)
    sol = dp.solve_dp(model, objective, theta_star)
    assert in_optimal_set(exact, sol.policy), (objective, theta_star)
    if objective == "myopic":  # greedy ties may hold different real-time returns
        assert any(sol.value == pytest.approx(float(v), abs=1e-9) for v in exact.values)
    else:
        assert sol.value == pytest.approx(float(exact.optimal_value), abs=1e-9)
    assert dp.evaluate_policy(model, sol.policy, objective, theta_star) == pytest.approx(
        sol.value, abs=1e-9
    )


@settings(max_examples=25, deadline=None)
@given(model=small_models())
def test_dp_matches_enumeration_on_random_stochastic_models(model):
    for objective in ("real_time", "initial", "natural_shifts", "myopic"):
        check_agreement(model, objective)
    check_agreement(model, "privileged", model.thetas[-1])
    if model.is_deterministic:
        check_agreement(model, "final")


@settings(max_examples=15, deadline=None)
@given(model=small_models())
def test_policy_evaluator_matches_exact_values(model):
    solver = ExactSolver(model, max_policies=1000)
    for i in range(0, len(solver.policies), max(1, len(solver.policies) // 4)):
        policy = np.full((model.horizon, model.n_states, model.n_thetas), model.noop_index)
        for (t, s, th), a in zip(solver.points, solver.policies[i]):
            policy[t, s, th] = a
        for objective in ("real_time", "final", "initial", "natural_shifts"):
            expected = float(solver.evaluations(objective)[i])
            assert dp.evaluate_policy(model, policy, objective) == pytest.approx(expected, abs=1e-9)
        eu = dp.evaluate_policy(model, policy, "pareto_ud")
        assert eu == pytest.approx([float(v) for v in solver.evaluations("pareto_ud")[i]], abs=1e-9)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_dp_on_the_paper_examples(name):
    model = EXAMPLES[name]()
    for objective in ("real_time", "initial", "natural_shifts", "myopic", "final"):
        check_agreement(model, objective)
    for theta in model.thetas:
        check_agreement(model, "privileged", theta)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), horizon=st.integers(1, 3), include_theta_H=st.booleans())
def test_influence_incentive_matches_enumeration(seed, horizon, include_theta_H):
    model = random_influence_drmdp(np.random.default_rng(seed), 2, 2, 2, horizon, exact=True)
    solver = ExactSolver(model, max_policies=1000)
    for objective in ("real_time", "myopic"):
        dp_answer = dp.influence_incentive(model, objective, include_theta_H=include_theta_H)
        exact = solver.solve(objective, include_theta_H=include_theta_H)
        assert dp_answer["incentive"] == exact.influence_incentive
    crt = solver.solve("constrained_real_time", include_theta_H=include_theta_H)
    rt = dp.influence_incentive(model, "real_time", include_theta_H=include_theta_H)
    assert rt["best_non_influencing_value"] == pytest.approx(float(crt.optimal_value), abs=1e-9)


def test_dp_refuses_what_it_cannot_solve_exactly():
    stochastic = random_drmdp(np.random.default_rng(0), 3, 2, 2, 3, branching=2)
    with pytest.raises(ValueError, match="deterministic transitions"):
        dp.solve_dp(stochastic, "final")
    initial = np.zeros_like(stochastic.initial)
    initial[0] = 0.5  # theta_0 is theta0 or theta1
    with pytest.raises(ValueError, match="theta_0 is random"):
        dp.solve_dp(replace(stochastic, initial=initial), "initial")
    with pytest.raises(ValueError, match="not solved by DP"):
        dp.solve_dp(stochastic, "pareto_ud")
    with pytest.raises(ValueError, match="theta_star"):
        dp.solve_dp(stochastic, "privileged")


def test_ties_go_to_inaction():
    # Writer's Curse, R(s_t): the last action never matters, so the greedy policy rests
    sol = dp.solve_dp(EXAMPLES["writers_curse"](), "real_time")
    assert (sol.policy[-1] == 0).all()


def test_large_sparse_model_solves_and_agrees_with_the_evaluator():
    model = random_drmdp(np.random.default_rng(3), 200, 5, 4, 20, branching=3)
    sol = dp.solve_dp(model, "real_time")
    assert sol.q.shape == (20, 200, 5, 4) and sol.policy.shape == (20, 200, 5)
    assert dp.evaluate_policy(model, sol.policy) == pytest.approx(sol.value)
    # optimal beats a random policy and the value table is the max of Q at t = 0
    random_policy = np.random.default_rng(0).integers(0, 4, size=sol.policy.shape)
    assert dp.evaluate_policy(model, random_policy) < sol.value
    assert np.allclose(sol.values, sol.q[0].max(axis=-1))
    marg = dp.state_marginals(model, sol.policy)
    assert np.allclose(marg.sum(axis=(1, 2)), 1.0)


def test_conspiracy_noop_path_and_incentive():
    model = conspiracy(3)
    assert dp.noop_theta_path(model).tolist() == [0, 0, 0]
    result = dp.influence_incentive(model)
    assert (
        result["incentive"]
        and result["optimal_value"] == 100
        and result["best_non_influencing_value"] == 30
    )
