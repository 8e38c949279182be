"""Exact temporal distances: d_SD is a quasimetric under stochastic dynamics; the others are not."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignlab.cmd.distances import (
    check_quasimetric,
    conditional_hitting_time,
    critic_successor_distance,
    discounted_time_gap,
    exact_distances,
    expected_hitting_time,
    mean_time_gap,
    pair_successor_distance,
    successor_distance,
    successor_distance_sa,
)
from alignlab.cmd.tabular import (
    TabularMDP,
    discounted_occupancy,
    discounted_occupancy_sa,
    random_mdp,
    sample_episodes,
    transition_matrix,
)

TOL = 1e-9

random_mdps = st.builds(
    lambda seed, n, a, b, gamma: (
        random_mdp(np.random.default_rng(seed), n, a, min(b, n)),
        gamma,
    ),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 30),
    a=st.integers(1, 4),
    b=st.integers(1, 4),
    gamma=st.sampled_from([0.3, 0.5, 0.9, 0.99]),
)


def population(n_mdps=30):
    """A fixed population of random stochastic MDPs (seeds 0..n-1), gamma = 0.9."""
    out = []
    for seed in range(n_mdps):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(3, 21))
        out.append(random_mdp(rng, n, int(rng.integers(1, 5)), int(rng.integers(1, 5))))
    return out


def chain_mdp(P_pi: np.ndarray, start: int = 0) -> TabularMDP:
    """A one-action MDP whose chain is P_pi."""
    n = len(P_pi)
    return TabularMDP(P_pi[:, None, :], np.ones((n, 1)), np.eye(n)[start])


def lucky_shortcut(eps=0.1, length=5) -> TabularMDP:
    """s -> w -> g with probability eps, else s -> c_1 -> ... -> c_length -> g; g absorbing."""
    n = length + 3  # s = 0, w = 1, chain 2 .. length+1, g = length+2
    P = np.zeros((n, n))
    P[0, 1], P[0, 2] = eps, 1 - eps
    P[1, n - 1] = 1.0
    for c in range(2, n - 1):
        P[c, c + 1] = 1.0
    P[n - 1, n - 1] = 1.0
    return chain_mdp(P)


# ---- d_SD is a quasimetric ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(random_mdps)
def test_successor_distance_is_a_quasimetric(case):
    mdp, gamma = case
    D = successor_distance(discounted_occupancy(mdp, gamma))
    check = check_quasimetric(D, TOL)
    assert check.ok, check
    assert np.isfinite(D).all()  # random_mdp plants a Hamiltonian cycle: everything reachable
    off = ~np.eye(mdp.n_states, dtype=bool)
    assert (D[off] >= -np.log(gamma) - 1e-9).all()  # T_g >= 1 away from g


@settings(max_examples=30, deadline=None)
@given(random_mdps)
def test_successor_distance_is_minus_log_hitting_discount(case):
    """The proof's decomposition: exp(-d_SD(s, g)) = E_s[gamma^T_g], solved per goal."""
    mdp, gamma = case
    P_pi = transition_matrix(mdp)
    D = successor_distance(discounted_occupancy(mdp, gamma))
    for g in range(mdp.n_states):
        # h(g) = 1, h(s) = gamma sum_s' P(s, s') h(s') elsewhere
        A = np.eye(mdp.n_states) - gamma * P_pi
        A[g] = np.eye(mdp.n_states)[g]
        h = np.linalg.solve(A, np.eye(mdp.n_states)[g])
        np.testing.assert_allclose(np.exp(-D[:, g]), h, rtol=1e-8, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(random_mdps)
def test_state_action_forms(case):
    mdp, gamma = case
    S, A = mdp.n_states, mdp.n_actions
    occ, occ_sa = discounted_occupancy(mdp, gamma), discounted_occupancy_sa(mdp, gamma)
    D = successor_distance(occ)
    np.testing.assert_allclose(np.einsum("sa,sag->sg", mdp.pi, occ_sa), occ, atol=1e-12)
    # d_SD(s, a; g): -log E[gamma^T_g | s, a] away from g, and it averages back to d_SD(s, g)
    D_sa = successor_distance_sa(occ_sa, occ)
    off = ~np.eye(S, dtype=bool)[:, None, :].repeat(A, axis=1)
    assert (D_sa[off] >= -np.log(gamma) - 1e-9).all()
    soft_min = -np.log(np.einsum("sa,sag->sg", mdp.pi, np.exp(-D_sa)))
    np.testing.assert_allclose(soft_min, D, atol=1e-8)
    # on state-action pairs the same definition is a quasimetric
    D_pair = pair_successor_distance(mdp, gamma).reshape(S * A, S * A)
    assert check_quasimetric(D_pair, TOL).ok
    # the critic target: nested soft-min (a ~ pi(s)) / soft-max (a_g ~ pi(g)) gives d_SD
    T = critic_successor_distance(occ_sa)
    inner = -np.log(np.einsum("sa,sagb->sgb", mdp.pi, np.exp(-T)))
    np.testing.assert_allclose(np.log(np.einsum("gb,sgb->sg", mdp.pi, np.exp(inner))), D, atol=1e-8)
    # ... and away from g it is d_SD(s, a; g) plus a function of (g, a_g) only
    shift = T - D_sa[..., None]
    for g in range(S):
        others = np.delete(shift[:, :, g, :], g, axis=0)
        np.testing.assert_allclose(others, np.broadcast_to(others[:1, :1], others.shape), atol=1e-8)


def test_deterministic_cycle_gives_steps_times_minus_log_gamma():
    n, gamma = 6, 0.8
    mdp = chain_mdp(np.roll(np.eye(n), 1, axis=1))  # s -> s + 1 mod n
    D = successor_distance(discounted_occupancy(mdp, gamma))
    steps = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
    np.testing.assert_allclose(D, -np.log(gamma) * steps, atol=1e-12)
    np.testing.assert_allclose(expected_hitting_time(transition_matrix(mdp)), steps, atol=1e-9)


def test_the_current_state_term_matters():
    """The strictly future occupancy (k >= 1) breaks non-negativity and the triangle."""
    mdp = random_mdp(np.random.default_rng(0), 8, 2, 2)
    occ_strict = discounted_occupancy(mdp, 0.9, include_current=False)
    np.testing.assert_allclose(occ_strict.sum(1), 1.0)
    check = check_quasimetric(successor_distance(occ_strict), TOL)
    assert check.n_negative > 0 and check.n_triangle > 0


# ---- the alternatives do violate -------------------------------------------------------------


def test_alternatives_violate_on_a_fixed_population():
    counts = {}
    for mdp in population():
        for name, D in exact_distances(mdp, 0.9).items():
            c = check_quasimetric(D, TOL)
            n = counts.setdefault(name, np.zeros(3, dtype=int))
            n += [c.n_negative > 0, c.n_diagonal > 0, c.n_triangle > 0]
    assert counts["successor_distance"].tolist() == [0, 0, 0]
    assert counts["expected_hitting_time"].tolist() == [0, 0, 0]  # a quasimetric too
    assert counts["neg_log_occupancy"][1] == 30  # -log p(g | g) > 0: never zero on the diagonal
    assert counts["successor_distance_strict"][0] > 0 and counts["successor_distance_strict"][2] > 0
    assert counts["conditional_hitting_time"][2] > 0
    assert counts["discounted_time_gap"][1] == 30


def test_lucky_shortcut_breaks_conditional_time_but_not_d_SD():
    """Rarely s -> w -> g (2 steps), usually s -> chain -> g (6 steps); g absorbing."""
    mdp = lucky_shortcut(eps=0.1, length=5)
    s, w, g, gamma = 0, 1, mdp.n_states - 1, 0.9
    P_pi = transition_matrix(mdp)
    cond = conditional_hitting_time(P_pi, gamma)
    assert cond[s, w] == pytest.approx(1) and cond[w, g] == pytest.approx(1)
    assert cond[s, g] > cond[s, w] + cond[w, g] + 2  # the triangle fails by a lot
    assert not check_quasimetric(cond, TOL).ok
    assert check_quasimetric(successor_distance(discounted_occupancy(mdp, gamma)), TOL).ok
    hit = expected_hitting_time(P_pi)
    assert hit[s, g] == pytest.approx(0.1 * 2 + 0.9 * 6) and np.isinf(hit[g, s])
    assert check_quasimetric(hit, TOL).ok
    # the data's mean time gap conditions on w being visited at all: it fails too
    episodes = sample_episodes(mdp, np.random.default_rng(0), 400, 10, one_hot=False)
    gap = mean_time_gap(episodes, mdp.n_states)
    assert gap[s, w] == 1 and gap[w, g] == 1 and gap[s, g] == pytest.approx(5.6, abs=0.3)
    assert check_quasimetric(gap, TOL).n_triangle > 0


def test_time_gaps_on_a_deterministic_cycle():
    n = 5
    mdp = chain_mdp(np.roll(np.eye(n), 1, axis=1))
    episodes = sample_episodes(mdp, np.random.default_rng(0), 3, 12, one_hot=False)
    steps = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
    np.testing.assert_array_equal(mean_time_gap(episodes, n), steps)
    all_pairs = mean_time_gap(episodes, n, first_visit=False)
    assert (all_pairs >= steps).all() and (np.diag(all_pairs) > 0).all()
    gap = discounted_time_gap(transition_matrix(mdp), 0.5)
    assert (np.diag(gap) > 0).all()  # revisits every n steps
    np.testing.assert_allclose(conditional_hitting_time(transition_matrix(mdp), 0.5), steps)


# ---- check_quasimetric -----------------------------------------------------------------------


def test_check_quasimetric_counts_hand_made_violations():
    c = check_quasimetric(np.array([[0, 1, 5], [1, 0, 1], [5, 1, 0.0]]))
    assert (c.n_negative, c.n_diagonal, c.n_triangle) == (0, 0, 2)  # 0 -> 2 and 2 -> 0 via 1
    assert c.n_triples == 27 and c.frac_triangle == pytest.approx(2 / 27)
    assert c.max_triangle_excess == pytest.approx(3.0)
    c = check_quasimetric(np.array([[0.5, -1], [2, 0.0]]))
    assert (c.n_negative, c.n_diagonal, c.n_triangle) == (1, 1, 0)
    assert c.frac_diagonal == 0.5 and not c.ok


def test_check_quasimetric_unknown_and_unreachable_entries():
    c = check_quasimetric(np.array([[0, 1, 5], [1, 0, 1], [np.nan, 1, 0]]))
    assert (c.n_triangle, c.n_triples, c.n_entries) == (1, 20, 8)  # triples with NaN skipped
    assert check_quasimetric(np.array([[0, np.inf], [1, 0.0]])).ok  # unreachable is fine
    c = check_quasimetric(np.array([[0, 1, np.inf], [1, 0, 1], [1, 1, 0.0]]))
    assert c.n_triangle == 1  # inf > 1 + 1


def test_check_quasimetric_tolerance_and_chunking():
    D = np.array([[0, 1, 2 + 1e-12], [1, 0, 1], [1, 1, 0.0]])
    assert check_quasimetric(D, 1e-9).ok and check_quasimetric(D, 0.0).n_triangle == 1
    R = np.random.default_rng(0).random((23, 23))
    assert check_quasimetric(R) == check_quasimetric(R, chunk=100)
    with pytest.raises(ValueError, match="square"):
        check_quasimetric(np.zeros((2, 3)))


# ---- tabular MDPs ----------------------------------------------------------------------------


def test_random_mdp_support_and_reachability():
    mdp = random_mdp(np.random.default_rng(3), 12, 3, 2)
    assert ((mdp.P > 0).sum(-1) <= 2).all() and ((mdp.P > 0).sum(-1) >= 1).all()
    assert (mdp.pi > 0).all()
    assert (discounted_occupancy(mdp, 0.5) > 0).all()  # irreducible under pi
    again = random_mdp(np.random.default_rng(3), 12, 3, 2)
    np.testing.assert_array_equal(mdp.P, again.P)
    with pytest.raises(ValueError, match="branching"):
        random_mdp(np.random.default_rng(0), 3, 2, 4)
    with pytest.raises(ValueError, match="rows summing to 1"):
        TabularMDP(np.ones((2, 1, 2)), np.ones((2, 1)))


def test_sampled_episodes_match_the_exact_occupancy():
    """Monte Carlo (1 - gamma) sum_t gamma^t [s_t = g] from s_0 agrees with (1 - gamma) M."""
    base = random_mdp(np.random.default_rng(1), 6, 2, 2)
    mdp = TabularMDP(base.P, base.pi, np.eye(6)[0])
    gamma, T = 0.8, 60
    episodes = sample_episodes(mdp, np.random.default_rng(2), 4000, T)
    assert episodes[0]["obs"].shape == (T + 1, 6) and episodes[0]["actions"].shape == (T,)
    np.testing.assert_array_equal(episodes[0]["obs"].argmax(1), episodes[0]["states"])
    states = np.stack([e["states"] for e in episodes])
    weights = (1 - gamma) * gamma ** np.arange(T + 1)
    estimate = np.array([(weights * (states == g)).sum(1).mean() for g in range(6)])
    np.testing.assert_allclose(estimate, discounted_occupancy(mdp, gamma)[0], atol=0.02)
    again = sample_episodes(mdp, np.random.default_rng(2), 4000, T)
    np.testing.assert_array_equal(states, np.stack([e["states"] for e in again]))
