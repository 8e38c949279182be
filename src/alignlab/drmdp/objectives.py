"""The eight DR-MDP objectives, influence and unambiguous desirability, in exact arithmetic.

Everything here is a sum over the exact distribution of trajectories
xi = (s_t, theta_t, a_t)_{t<H} followed by (s_H, theta_H) under a deterministic
(s, theta, t)-policy, so each function reads like the paper's formula (notes' objective table,
Definitions 5-10). Probabilities and values are `Fraction`s: ties are exact.

| objective               | maximise                                                          |
|-------------------------|-------------------------------------------------------------------|
| real_time               | E sum_t R_{theta_t}(s_t, a_t, s_{t+1})                            |
| final                   | E sum_t R_{theta_H}(s_t, a_t, s_{t+1})                            |
| initial                 | E sum_t R_{theta_0}(s_t, a_t, s_{t+1})                            |
| natural_shifts          | E sum_t sum_theta P(theta_t = theta | pi_noop) R_theta(...)       |
| constrained_real_time   | real_time subject to P(xi^theta | pi) = P(xi^theta | pi_noop)     |
| myopic                  | at each t, argmax_a E[R_{theta_t}(s_t, a, s_{t+1})]               |
| privileged[theta*]      | E sum_t R_{theta*}(s_t, a_t, s_{t+1})                             |
| pareto_ud               | Pareto-optimal (by EU_theta, all theta) among UD policies         |

xi^theta, the reward-parameter trajectory of Definition 5, is (theta_0 .. theta_{H-1}) by default;
`include_theta_H=True` reads it as (theta_0 .. theta_H). The choice matters for the constraint of
constrained_real_time and for what counts as influence (Definition 6).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .model import DRMDP, ExactTables

OBJECTIVES = (
    "privileged",
    "real_time",
    "final",
    "initial",
    "natural_shifts",
    "constrained_real_time",
    "myopic",
    "pareto_ud",
)

# A deterministic (s, theta, t)-policy: {(t, s, theta): a} on indices, an array (H, |S|, |Theta|)
# or a callable (t, s, theta) -> a.
Policy = Mapping[tuple[int, int, int], int] | np.ndarray | Callable[[int, int, int], int]


class Trajectory(NamedTuple):
    """xi: s_0..s_H, theta_0..theta_H and a_0..a_{H-1} (indices)."""

    states: tuple[int, ...]
    thetas: tuple[int, ...]
    actions: tuple[int, ...]


Distribution = dict[Trajectory, Fraction]


def check_objective(objective: str, model: DRMDP, theta_star: str | None) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid objectives: {list(OBJECTIVES)}")
    if objective == "privileged" and theta_star not in model.thetas:
        raise ValueError(
            f"privileged needs theta_star, one of {list(model.thetas)}; got {theta_star!r}"
        )


def exact_tables(model: DRMDP) -> ExactTables:
    """The model's exact tables; float-only models are read exactly (binary fractions, rows
    renormalised so they sum to exactly 1)."""
    if model.exact is not None:
        return model.exact
    probs = np.vectorize(Fraction, otypes=[object])(model.probs)
    probs = probs / probs.sum(axis=1, keepdims=True)
    initial = np.vectorize(Fraction, otypes=[object])(model.initial)
    return ExactTables(
        probs, np.vectorize(Fraction, otypes=[object])(model.reward), initial / initial.sum()
    )


def policy_function(policy: Policy) -> Callable[[int, int, int], int]:
    if callable(policy):
        return policy
    if isinstance(policy, np.ndarray):
        return lambda t, s, theta: int(policy[t, s, theta])
    return lambda t, s, theta: policy[(t, s, theta)]


def noop_policy(model: DRMDP) -> Callable[[int, int, int], int]:
    """pi_noop: always the designated inaction."""
    return lambda t, s, theta: model.noop_index


# --- the trajectory distribution ----------------------------------------------------------------
def trajectory_distribution(model: DRMDP, policy: Policy) -> Distribution:
    """P(xi | pi) for every trajectory with positive probability, exactly."""
    ex, pi = exact_tables(model), policy_function(policy)
    n_th, n_a = model.n_thetas, model.n_actions
    frontier: dict[Trajectory, Fraction] = {}
    for s, theta in zip(*np.nonzero(model.initial)):
        frontier[Trajectory((int(s),), (int(theta),), ())] = ex.initial[s, theta]
    for t in range(model.horizon):
        extended: dict[Trajectory, Fraction] = defaultdict(Fraction)
        for xi, p in frontier.items():
            s, theta = xi.states[-1], xi.thetas[-1]
            a = pi(t, s, theta)
            row = (s * n_th + theta) * n_a + a
            for x_next, q in zip(model.successors[row], ex.probs[row]):
                if q:
                    s2, theta2 = divmod(int(x_next), n_th)
                    extended[
                        Trajectory(xi.states + (s2,), xi.thetas + (theta2,), xi.actions + (a,))
                    ] += p * q
        frontier = extended
    return dict(frontier)


def reward(model: DRMDP, theta: int, xi: Trajectory, t: int) -> Fraction:
    """R_theta(s_t, a_t, s_{t+1}) along xi, scored by the given theta."""
    table = exact_tables(model).reward
    s, a, s_next = xi.states[t], xi.actions[t], xi.states[t + 1]
    return table[theta, s, a, s_next] if table.ndim == 4 else table[theta, s, a]


def expectation(dist: Distribution, value: Callable[[Trajectory], Fraction]) -> Fraction:
    return sum((p * value(xi) for xi, p in dist.items()), Fraction(0))


# --- the objectives (notes' table; "Table 1, PDF p.7") -------------------------------------------
def real_time_reward(model: DRMDP, dist: Distribution) -> Fraction:
    """E sum_t R_{theta_t}(s_t, a_t, s_{t+1}): each step scored by the preferences held then."""
    return expectation(dist, lambda xi: sum(reward(model, xi.thetas[t], xi, t) for t in _steps(xi)))


def final_reward(model: DRMDP, dist: Distribution) -> Fraction:
    """E sum_t R_{theta_H}(s_t, a_t, s_{t+1}): everything judged by the final preferences."""
    return expectation(
        dist, lambda xi: sum(reward(model, xi.thetas[-1], xi, t) for t in _steps(xi))
    )


def initial_reward(model: DRMDP, dist: Distribution) -> Fraction:
    """E sum_t R_{theta_0}(s_t, a_t, s_{t+1}): preferences frozen at t = 0."""
    return expectation(dist, lambda xi: sum(reward(model, xi.thetas[0], xi, t) for t in _steps(xi)))


def privileged_reward(model: DRMDP, dist: Distribution, theta_star: int) -> Fraction:
    """E sum_t R_{theta*}(s_t, a_t, s_{t+1}) for a normatively chosen theta*; also EU_theta*."""
    return expectation(dist, lambda xi: sum(reward(model, theta_star, xi, t) for t in _steps(xi)))


expected_utility = privileged_reward  # EU_theta(pi) of Definition 9


def natural_theta_marginals(model: DRMDP) -> list[dict[int, Fraction]]:
    """P(theta_t = theta | pi_noop) for t = 0..H: how preferences evolve under inaction."""
    dist = trajectory_distribution(model, noop_policy(model))
    marginals: list[dict[int, Fraction]] = [defaultdict(Fraction) for _ in range(model.horizon + 1)]
    for xi, p in dist.items():
        for t, theta in enumerate(xi.thetas):
            marginals[t][theta] += p
    return [dict(m) for m in marginals]


def natural_shifts_reward(
    model: DRMDP, dist: Distribution, natural: list[dict[int, Fraction]] | None = None
) -> Fraction:
    """E sum_t sum_theta P(theta_t = theta | pi_noop) R_theta(s_t, a_t, s_{t+1})."""
    natural = natural_theta_marginals(model) if natural is None else natural

    def value(xi: Trajectory) -> Fraction:
        return sum(
            w * reward(model, theta, xi, t) for t in _steps(xi) for theta, w in natural[t].items()
        )

    return expectation(dist, value)


def myopic_values(model: DRMDP) -> np.ndarray:
    """E[R_{theta}(s, a, s')] for every (s, theta) (rows) and a (columns): the myopic criterion."""
    ex = exact_tables(model)
    out = np.full((model.n_aug, model.n_actions), Fraction(0), dtype=object)
    for x in range(model.n_aug):
        s, theta = divmod(x, model.n_thetas)
        for a in range(model.n_actions):
            row = x * model.n_actions + a
            for x_next, q in zip(model.successors[row], ex.probs[row]):
                if q:
                    s_next = int(x_next) // model.n_thetas
                    r = (
                        ex.reward[theta, s, a, s_next]
                        if ex.reward.ndim == 4
                        else ex.reward[theta, s, a]
                    )
                    out[x, a] += q * r
    return out


# --- influence (Definitions 5-7) -----------------------------------------------------------------
def theta_trajectory_distribution(
    dist: Distribution, include_theta_H: bool = False
) -> dict[tuple, Fraction]:
    """P(xi^theta | pi) with xi^theta = (theta_0..theta_{H-1}), or (theta_0..theta_H)."""
    out: dict[tuple, Fraction] = defaultdict(Fraction)
    for xi, p in dist.items():
        out[xi.thetas if include_theta_H else xi.thetas[:-1]] += p
    return dict(out)


def influences(model: DRMDP, policy: Policy, include_theta_H: bool = False) -> bool:
    """Definition 6: pi influences iff P(xi^theta | pi) != P(xi^theta | pi_noop)."""
    mine = theta_trajectory_distribution(trajectory_distribution(model, policy), include_theta_H)
    noop = theta_trajectory_distribution(
        trajectory_distribution(model, noop_policy(model)), include_theta_H
    )
    return mine != noop


# --- unambiguous desirability and Pareto optimality (Definitions 9-10) --------------------------
def utility_vector(model: DRMDP, dist: Distribution) -> tuple[Fraction, ...]:
    """(EU_theta(pi))_theta: the policy's expected return under every fixed theta."""
    return tuple(expected_utility(model, dist, theta) for theta in range(model.n_thetas))


def is_unambiguously_desirable(eu: tuple[Fraction, ...], eu_noop: tuple[Fraction, ...]) -> bool:
    """Definition 9: EU_theta(pi) >= EU_theta(pi_noop) for every theta."""
    return all(u >= v for u, v in zip(eu, eu_noop))


def dominates(u: tuple, v: tuple) -> bool:
    """u Pareto-dominates v: at least as good for every theta, strictly better for one."""
    return all(a >= b for a, b in zip(u, v)) and any(a > b for a, b in zip(u, v))


def pareto_optimal(vectors: list[tuple]) -> list[bool]:
    """Definition 10 within the given set: no member dominates it."""
    distinct = set(vectors)
    return [not any(dominates(w, v) for w in distinct) for v in vectors]


def _steps(xi: Trajectory) -> range:
    return range(len(xi.actions))
