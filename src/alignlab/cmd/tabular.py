"""Finite stochastic MDPs with a fixed behaviour policy, and their exact discounted occupancies.

The notes' "Scaled-down settings" ask for a small stochastic MDP in which the successor distance
can be computed exactly from (I - gamma P_pi)^-1. Everything here is numpy and exact up to
floating point:

- `TabularMDP`        P[s, a, s'], the behaviour policy pi[s, a] (which made the data), mu0[s]
- `random_mdp`        random stochastic MDPs whose chain under pi is irreducible (finite d_SD)
- `discounted_occupancy` / `discounted_occupancy_sa`
                      p_gamma(s_f = g | s) and p_gamma(s_f = g | s, a), with or without k = 0
- `sample_episodes`   offline episodes (states, one-hot obs, actions) from pi

Convention (the one that makes d_SD a quasimetric, see distances.py): the discounted future
state s_f = s_K with K ~ Geometric(1 - gamma) on {0, 1, 2, ...}, so the current state counts:

    p_gamma(g | s) = (1 - gamma) sum_{k>=0} gamma^k P_pi^k(s, g) = (1 - gamma) M(s, g),
    M = (I - gamma P_pi)^-1.

`include_current=False` gives the strictly-future occupancy, K on {1, 2, ...}:
(1 - gamma) sum_{k>=1} gamma^(k-1) P_pi^k = (1 - gamma) P_pi M. Both are normalised (rows sum
to 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class TabularMDP:
    """A finite MDP with a fixed behaviour policy: the data-generating process of the notes.

    P[s, a, s'] = P(s' | s, a); pi[s, a] = pi(a | s), the policy whose occupancy the contrastive
    critic learns (the dataset's policy); start[s] = mu0(s), uniform when not given.
    """

    P: np.ndarray
    pi: np.ndarray
    start: np.ndarray | None = None

    def __post_init__(self):
        P = np.asarray(self.P, dtype=np.float64)
        pi = np.asarray(self.pi, dtype=np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S); got {P.shape}")
        if pi.shape != P.shape[:2]:
            raise ValueError(f"pi must have shape {P.shape[:2]} (S, A); got {pi.shape}")
        for name, rows in (("P", P), ("pi", pi)):
            if (rows < 0).any() or not np.allclose(rows.sum(-1), 1.0, atol=1e-9):
                raise ValueError(f"{name} must be non-negative with rows summing to 1")
        start = np.full(P.shape[0], 1.0 / P.shape[0]) if self.start is None else self.start
        start = np.asarray(start, dtype=np.float64)
        if start.shape != (P.shape[0],) or not np.isclose(start.sum(), 1.0):
            raise ValueError(f"start must be a distribution over {P.shape[0]} states")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "pi", pi)
        object.__setattr__(self, "start", start)

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def with_policy(self, pi: np.ndarray) -> TabularMDP:
        return TabularMDP(self.P, pi, self.start)


def transition_matrix(mdp: TabularMDP) -> np.ndarray:
    """P_pi[s, s'] = sum_a pi(a | s) P(s' | s, a): the state chain the data follows."""
    return np.einsum("sa,sat->st", mdp.pi, mdp.P)


def successor_matrix(P_pi: np.ndarray, gamma: float) -> np.ndarray:
    """M = sum_{k>=0} (gamma P_pi)^k = (I - gamma P_pi)^-1 (unnormalised, k = 0 included)."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1); got {gamma}")
    n = P_pi.shape[0]
    return np.linalg.solve(np.eye(n) - gamma * P_pi, np.eye(n))


def discounted_occupancy(
    mdp: TabularMDP, gamma: float, *, include_current: bool = True
) -> np.ndarray:
    """p_gamma(s_f = g | s_0 = s) under pi, shape (S, S), rows summing to 1.

    include_current=True: (1 - gamma) M (the notes' d_SD convention); False: (1 - gamma) P_pi M.
    """
    P_pi = transition_matrix(mdp)
    M = successor_matrix(P_pi, gamma)
    return (1.0 - gamma) * (M if include_current else P_pi @ M)


def discounted_occupancy_sa(
    mdp: TabularMDP, gamma: float, *, include_current: bool = True
) -> np.ndarray:
    """p_gamma(s_f = g | s_0 = s, a_0 = a) under pi after a, shape (S, A, S), rows sum to 1.

    With k = 0: (1 - gamma) [delta_sg + gamma sum_s' P(s'|s,a) M(s', g)], whose pi-average over
    a is `discounted_occupancy` (since M = I + gamma P_pi M). Without: (1 - gamma) P(.|s,a) M.
    """
    M = successor_matrix(transition_matrix(mdp), gamma)
    after = np.einsum("sat,tg->sag", mdp.P, M)  # sum_{k>=1} gamma^(k-1) P(s_k = g | s, a)
    if not include_current:
        return (1.0 - gamma) * after
    now = np.eye(mdp.n_states)[:, None, :]  # s_0 = s, whatever a is
    return (1.0 - gamma) * (now + gamma * after)


def _mix(rng: np.random.Generator, shape: tuple[int, ...], alpha: float, floor: float):
    """Dirichlet(alpha) rows mixed with uniform: every supported entry >= floor / k."""
    p = rng.dirichlet(np.full(shape[-1], alpha), size=shape[:-1])
    return (1.0 - floor) * p + floor / shape[-1]


def random_mdp(
    rng: np.random.Generator,
    n_states: int,
    n_actions: int,
    branching: int,
    *,
    alpha: float = 1.0,
    policy_alpha: float = 1.0,
    floor: float = 0.1,
) -> TabularMDP:
    """A random stochastic MDP whose chain under the behaviour policy is irreducible.

    Each (s, a) moves to `branching` distinct random successors with Dirichlet(alpha)
    probabilities; pi(. | s) is Dirichlet(policy_alpha) over all actions. Both are mixed with
    `floor` of uniform mass so no supported probability is vanishingly small.

    Reachability: a random Hamiltonian cycle s -> next(s) is planted in the support of one random
    action at every state. pi has full support, so P_pi(s, next(s)) > 0, the chain is
    irreducible, p_gamma(g | s) > 0 for every (s, g) and every distance here is finite.
    """
    if not 1 <= branching <= n_states:
        raise ValueError(f"branching must be in [1, n_states={n_states}]; got {branching}")
    S, A = n_states, n_actions
    successors = np.argsort(rng.random((S, A, S)), axis=-1)[..., :branching]
    order = rng.permutation(S)
    cycle_next = np.empty(S, dtype=np.int64)
    cycle_next[order] = np.roll(order, -1)
    planted = rng.integers(A, size=S)
    # put next(s) in slot 0 of (s, planted[s]) unless it is already a successor there
    for s in range(S):
        if cycle_next[s] not in successors[s, planted[s]]:
            successors[s, planted[s], 0] = cycle_next[s]
    P = np.zeros((S, A, S))
    probs = _mix(rng, (S, A, branching), alpha, floor)
    np.put_along_axis(P, successors, probs, axis=-1)
    pi = _mix(rng, (S, A), policy_alpha, floor)
    return TabularMDP(P, pi)


def sample_episodes(
    mdp: TabularMDP,
    rng: np.random.Generator,
    n_episodes: int,
    length: int,
    *,
    one_hot: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Offline data: `n_episodes` episodes of `length` steps from mu0 under pi (vectorised).

    Each episode is a dict with "states" (T+1,) int64, "actions" (T,) int64 and, when `one_hot`,
    "obs" (T+1, S) float32 one-hot observations; the action at the last state is not recorded.
    """
    S = mdp.n_states
    states = np.empty((n_episodes, length + 1), dtype=np.int64)
    actions = np.empty((n_episodes, length), dtype=np.int64)
    states[:, 0] = _categorical(rng, np.broadcast_to(mdp.start, (n_episodes, S)))
    for t in range(length):
        actions[:, t] = _categorical(rng, mdp.pi[states[:, t]])
        states[:, t + 1] = _categorical(rng, mdp.P[states[:, t], actions[:, t]])
    eye = np.eye(S, dtype=np.float32)
    episodes = []
    for s, a in zip(states, actions):
        ep = {"states": s, "actions": a}
        if one_hot:
            ep["obs"] = eye[s]
        episodes.append(ep)
    return episodes


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of `probs` by inverting the CDF."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(-1), probs.shape[-1] - 1)
