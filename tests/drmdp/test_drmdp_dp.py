"""Dynamic programming against the enumeration reference."""

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignlab.drmdp import dp
from alignlab.drmdp.exact import ExactSolver, count_policies, solve_exact
from alignlab.drmdp.examples import EXAMPLES, conspiracy
from alignlab.drmdp.horizon import random_influence_drmdp
from alignlab.drmdp.model import DRMDP, random_drmdp


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


def check_influence_incentive(model, include_theta_H):
    """DP's influence_incentive against enumeration for myopic and real_time; returns whether
    the myopic objective has an influence incentive."""
    solver = ExactSolver(model, max_policies=1000)
    for objective in ("real_time", "myopic"):
        dp_answer = dp.influence_incentive(model, objective, include_theta_H=include_theta_H)
        exact = solver.solve(objective, include_theta_H=include_theta_H)
        assert dp_answer["incentive"] == exact.influence_incentive, objective
        if objective == "myopic":
            myopic_incentive = exact.influence_incentive
            # None exactly when no greedy policy keeps theta on pi_noop's path
            assert (dp_answer["best_non_influencing_value"] is None) == myopic_incentive
    crt = solver.solve("constrained_real_time", include_theta_H=include_theta_H)
    rt = dp.influence_incentive(model, "real_time", include_theta_H=include_theta_H)
    assert rt["best_non_influencing_value"] == pytest.approx(float(crt.optimal_value), abs=1e-9)
    return myopic_incentive


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), horizon=st.integers(1, 3), include_theta_H=st.booleans())
def test_influence_incentive_matches_enumeration(seed, horizon, include_theta_H):
    model = random_influence_drmdp(np.random.default_rng(seed), 2, 2, 2, horizon, exact=True)
    check_influence_incentive(model, include_theta_H)


def test_influence_incentive_matches_enumeration_on_stochastic_random_models():
    # random_influence_drmdp makes the no-op strictly greedy (so no myopic incentive); these
    # random_drmdp models have greedy actions that leave pi_noop's theta-path with some
    # probability, the case a sentinel value of -1e30 mixed into expectations got wrong
    n_checked, n_myopic_incentives = 0, 0
    for seed in range(60):
        model = random_drmdp(
            np.random.default_rng(seed),
            n_states=1 + seed % 2,
            n_thetas=2,
            n_actions=2,
            horizon=1 + (seed // 2) % 3,
            branching=2,
            exact=True,
        )
        if count_policies(model) > 512 or dp.noop_theta_path(model, True) is None:
            continue  # too big to enumerate, or not a case DP decides
        for include_theta_H in (False, True):
            n_myopic_incentives += check_influence_incentive(model, include_theta_H)
            n_checked += 1
    assert n_checked >= 20 and 0 < n_myopic_incentives < n_checked


def leave_with_probability(p):
    """One state, theta in {a, b}, H = 2: x earns 1 and moves a -> b with probability p, the
    no-op earns 0 and keeps theta."""

    def transition(s, theta, a):
        if a == "x" and theta == "a" and p < 1:
            return {("s", "a"): 1 - p, ("s", "b"): p}
        return {("s", "b" if a == "x" else theta): 1}

    return DRMDP.from_dicts(
        states=("s",),
        thetas=("a", "b"),
        actions=("noop", "x"),
        transition=transition,
        reward=lambda theta, s, a, s_next: 1 if a == "x" else 0,
        initial=("s", "a"),
        horizon=2,
        noop="noop",
    )


@pytest.mark.parametrize("include_theta_H", [False, True])
def test_influence_incentive_when_the_greedy_action_rarely_influences(include_theta_H):
    # regression: x leaves the path with probability 1/10, so its sentinel-mixed value was
    # -1e29 > -1e30 / 2 and the influencing greedy policy passed as non-influencing
    model = leave_with_probability(Fraction(1, 10))
    for objective in ("myopic", "real_time"):
        exact = solve_exact(model, objective, include_theta_H=include_theta_H)
        result = dp.influence_incentive(model, objective, include_theta_H=include_theta_H)
        assert exact.influence_incentive and result["incentive"], objective
        assert result["optimal_value"] == pytest.approx(2.0)
    myopic = dp.influence_incentive(model, "myopic", include_theta_H=include_theta_H)
    assert myopic["best_non_influencing_value"] is None
    real_time = dp.influence_incentive(model, "real_time", include_theta_H=include_theta_H)
    crt = solve_exact(model, "constrained_real_time", include_theta_H=include_theta_H)
    # noop first; at t = 1 x is free unless theta_H is part of the path
    assert real_time["best_non_influencing_value"] == float(crt.optimal_value)
    assert real_time["best_non_influencing_value"] == (0.0 if include_theta_H else 1.0)
    assert (real_time["non_influencing_policy"][0] == model.noop_index).all()
    check_influence_incentive(model, include_theta_H)


@pytest.mark.parametrize("p", [Fraction(1, 1000), Fraction(1, 2), Fraction(1)])
def test_influence_incentive_when_no_non_influencing_policy_exists(p):
    # the only greedy action always risks leaving the path: every myopic policy influences
    model = leave_with_probability(p)
    exact = solve_exact(model, "myopic")
    assert exact.influence_incentive and all(exact.influences)
    result = dp.influence_incentive(model, "myopic")
    assert result["incentive"] and result["best_non_influencing_value"] is None
    assert result["optimal_value"] == pytest.approx(2.0)


def test_constraints_never_leak_a_sentinel_value():
    model = leave_with_probability(Fraction(1, 10))
    rewards = dp.real_time_rewards(model)
    # no state may be on the path at t = 1: nothing is feasible, and says so with -inf
    v0, _, q = dp.backward_induction(model, rewards, on_path=lambda t: np.full(model.n_aug, t != 1))
    assert np.isneginf(v0).all() and np.isneginf(q[0]).all()
    # only x allowed at t = 0, but x's successor b has no allowed action at t = 1
    allowed = np.ones((2, model.n_aug, model.n_actions), dtype=bool)
    allowed[0, :, model.noop_index] = False
    allowed[1, model.index("s", "b")] = False
    v0, policy, q = dp.backward_induction(model, rewards, allowed=allowed)
    assert np.isneginf(v0).all() and np.isneginf(q[0]).all()
    for objective in ("real_time", "myopic"):
        assert dp.solve_dp(model, objective, allowed=allowed).value == -np.inf
    # an unreachable final theta is skipped, not scored
    conspiracy_model = conspiracy(3)
    never_influence = np.ones((3, conspiracy_model.n_aug, 2), dtype=bool)
    never_influence[..., conspiracy_model.actions.index("influence")] = False
    final = dp.solve_dp(conspiracy_model, "final", allowed=never_influence)
    assert final.value == 30 and (final.policy == conspiracy_model.noop_index).all()
    stuck = never_influence.copy()
    stuck[1] = False
    assert dp.solve_dp(conspiracy_model, "final", allowed=stuck).value == -np.inf


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


def test_greedy_ties_go_to_the_noop_then_the_lowest_index_in_both_layouts():
    inf = np.inf
    q = np.array(
        [
            [1.0, 3.0, 2.0, 3.0],  # a tie between 1 and 3, not the no-op: the lowest index
            [5.0, 1.0, 5.0 - 1e-12, 5.0],  # near-ties 0, 2, 3 with the no-op (2) among them
            [-inf, -inf, -inf, -inf],  # no feasible action: the no-op
            [-inf, 0.0, -inf, -1.0],  # one finite best
            [1.0, np.nan, 2.0, 0.0],  # NaN, then +inf: the tolerance is NaN, nothing is
            [1.0, inf, 0.0, 2.0],  # near-best, and argmax of an all-False row gives 0
        ]
    )
    noop = 2
    assert dp._greedy(q, noop, 1e-9).tolist() == [1, 2, 2, 1, 0, 0]
    best, policy = dp._best_and_greedy(np.ascontiguousarray(q.T), noop, 1e-9)
    assert policy.tolist() == [1, 2, 2, 1, 0, 0]
    np.testing.assert_array_equal(best, [3.0, 5.0, -inf, 0.0, np.nan, inf])
    # the state-major rule these replace, row by row
    near = q >= q.max(axis=1, keepdims=True) - 1e-9 * (1 + np.abs(q.max(axis=1, keepdims=True)))
    assert np.where(near[:, noop], noop, near.argmax(axis=1)).tolist() == [1, 2, 2, 1, 0, 0]


def test_q_values_come_back_state_major_and_equal_r_plus_expected_v():
    model = random_drmdp(np.random.default_rng(3), 6, 3, 4, 5, branching=3)
    sol = dp.solve_dp(model, "real_time", keep_q=True)
    H, S, T, A = model.horizon, model.n_states, model.n_thetas, model.n_actions
    q = sol.q.reshape(H, S * T, A)
    r = dp.real_time_rewards(model)
    v_next = np.zeros(S * T)
    for t in reversed(range(H)):  # the Bellman equation, row by row in the (x, a) layout
        expect = [model.probs[x * A + a] @ v_next[model.successors[x * A + a]]
                  for x in range(S * T) for a in range(A)]  # fmt: skip
        np.testing.assert_allclose(q[t], r + np.reshape(expect, (S * T, A)), rtol=0, atol=1e-12)
        chosen = q[t][np.arange(S * T), sol.policy[t].reshape(-1)]
        np.testing.assert_allclose(chosen, q[t].max(axis=1), rtol=0, atol=1e-9)  # greedy
        v_next = q[t].max(axis=1)
    np.testing.assert_array_equal(sol.values.reshape(-1), v_next)
