"""The reference solver: exhaustive enumeration of deterministic (s, theta, t)-policies.

The notes' recipe ("Scaled-down settings"): enumerate every deterministic policy on the decision
points (t, s, theta) that some policy can reach, evaluate each objective exactly with Fractions,
and return the full set of optimal policies (exact ties), so we can ask whether *every* optimal
policy influences (Definition 7) and whether the objective is vacuous (every policy optimal).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from fractions import Fraction

import numpy as np

from . import objectives as obj
from .model import DRMDP

MAX_POLICIES = 2_000_000

Point = tuple[int, int, int]  # a decision point (t, s, theta)


def decision_points(model: DRMDP) -> tuple[Point, ...]:
    """Every (t, s, theta), t < H, reachable from the initial support under some policy."""
    frontier = {(int(s), int(th)) for s, th in zip(*np.nonzero(model.initial))}
    points: list[Point] = []
    for t in range(model.horizon):
        points += [(t, s, th) for s, th in sorted(frontier)]
        rows = [
            (s * model.n_thetas + th) * model.n_actions + a
            for s, th in frontier
            for a in range(model.n_actions)
        ]
        nxt = model.successors[rows][model.probs[rows] > 0]
        frontier = {divmod(int(x), model.n_thetas) for x in nxt}
    return tuple(points)


def count_policies(model: DRMDP) -> int:
    return model.n_actions ** len(decision_points(model))


@dataclasses.dataclass(frozen=True)
class ExactSolution:
    """The exact optimal set of one objective.

    `policies[i]` is a tuple of action indices, one per decision point in `points`. `values[i]`
    is the objective's value (for myopic: the real-time return; for pareto_ud: the EU vector).
    """

    model: DRMDP
    objective: str
    theta_star: str | None
    include_theta_H: bool
    points: tuple[Point, ...]
    policies: tuple[tuple[int, ...], ...]
    values: tuple
    influences: tuple[bool, ...]
    n_policies: int
    n_feasible: int

    @property
    def optimal_value(self):
        """The common value of the optimal policies (None for pareto_ud or if values differ)."""
        return self.values[0] if len(set(self.values)) == 1 else None

    @property
    def influence_incentive(self) -> bool:
        """Definition 7: every optimal policy influences."""
        return all(self.influences)

    @property
    def vacuous(self) -> bool:
        """Every policy is optimal: the objective says nothing."""
        return len(self.policies) == self.n_policies

    def policy_dict(self, i: int = 0) -> dict[tuple[int, str, str], str]:
        """{(t, s, theta): a} by name for optimal policy i."""
        m = self.model
        return {
            (t, m.states[s], m.thetas[th]): m.actions[a]
            for (t, s, th), a in zip(self.points, self.policies[i])
        }

    def policy_array(self, i: int = 0) -> np.ndarray:
        """(H, |S|, |Theta|) array of optimal policy i (no-op off the decision points)."""
        m = self.model
        out = np.full((m.horizon, m.n_states, m.n_thetas), m.noop_index, dtype=np.int64)
        for (t, s, th), a in zip(self.points, self.policies[i]):
            out[t, s, th] = a
        return out

    def behaviours(self) -> list[tuple[str, ...]]:
        """The distinct on-path action sequences of the optimal set (deterministic models),
        inaction-first: fewest departures from the no-op, then by action order."""
        return sorted(
            {on_path_actions(self.model, dict(zip(self.points, p))) for p in self.policies},
            key=self._order,
        )

    def _order(self, actions: tuple[str, ...]) -> tuple:
        m = self.model
        return (sum(a != m.noop for a in actions), [m.actions.index(a) for a in actions])


def on_path_actions(model: DRMDP, policy: obj.Policy) -> tuple[str, ...]:
    """The action sequence a deterministic policy plays from the start of a deterministic model."""
    dist = obj.trajectory_distribution(model, policy)
    if len(dist) != 1:
        raise ValueError(
            f"{model.name}: a policy has {len(dist)} possible trajectories; on-path action sequences need a deterministic model and start"
        )
    (xi,) = dist
    return tuple(model.actions[a] for a in xi.actions)


class ExactSolver:
    """Enumerates every policy once and caches its exact evaluation for all objectives."""

    def __init__(self, model: DRMDP, max_policies: int = MAX_POLICIES):
        self.model = model
        self.points = decision_points(model)
        self.n_policies = model.n_actions ** len(self.points)
        if self.n_policies > max_policies:
            raise ValueError(
                f"{model.name}: {self.n_policies:.3g} deterministic policies ({model.n_actions} actions "
                f"at {len(self.points)} reachable (s, θ, t)) exceed max_policies={max_policies:.3g}; "
                "use alignlab.drmdp.dp for large models"
            )
        self.policies = list(itertools.product(range(model.n_actions), repeat=len(self.points)))
        noop = tuple(model.noop_index for _ in self.points)
        self.noop = self.policies.index(noop) if self.points else 0
        self._cache: dict[tuple, tuple] = {}

    # --- per-policy exact evaluations ----------------------------------------------------------
    @functools.cached_property
    def distributions(self) -> list[obj.Distribution]:
        return [
            obj.trajectory_distribution(self.model, dict(zip(self.points, p)))
            for p in self.policies
        ]

    def evaluations(self, objective: str, theta_star: str | None = None) -> tuple:
        """The objective's exact value of every policy (cached)."""
        key = ("evaluations", objective, theta_star)
        if key not in self._cache:
            self._cache[key] = self._evaluate(objective, theta_star)
        return self._cache[key]

    def _evaluate(self, objective: str, theta_star: str | None) -> tuple:
        m, dists = self.model, self.distributions
        if objective in ("real_time", "constrained_real_time", "myopic"):
            return tuple(obj.real_time_reward(m, d) for d in dists)
        if objective == "final":
            return tuple(obj.final_reward(m, d) for d in dists)
        if objective == "initial":
            return tuple(obj.initial_reward(m, d) for d in dists)
        if objective == "natural_shifts":
            natural = obj.natural_theta_marginals(m)
            return tuple(obj.natural_shifts_reward(m, d, natural) for d in dists)
        if objective == "privileged":
            theta = m.thetas.index(theta_star)
            return tuple(obj.privileged_reward(m, d, theta) for d in dists)
        if objective == "pareto_ud":
            return tuple(obj.utility_vector(m, d) for d in dists)
        raise ValueError(
            f"unknown objective {objective!r}; valid objectives: {list(obj.OBJECTIVES)}"
        )

    def influences(self, include_theta_H: bool = False) -> tuple[bool, ...]:
        """Definition 6 for every policy (cached)."""
        key = ("influences", include_theta_H)
        if key not in self._cache:
            xs = [obj.theta_trajectory_distribution(d, include_theta_H) for d in self.distributions]
            self._cache[key] = tuple(x != xs[self.noop] for x in xs)
        return self._cache[key]

    # --- the optimal set -----------------------------------------------------------------------
    def solve(
        self, objective: str, theta_star: str | None = None, include_theta_H: bool = False
    ) -> ExactSolution:
        """The full set of optimal policies of one objective, with exact ties."""
        obj.check_objective(objective, self.model, theta_star)
        values = self.evaluations(objective, theta_star if objective == "privileged" else None)
        influences = self.influences(include_theta_H)
        feasible = list(range(len(self.policies)))
        if objective == "constrained_real_time":
            feasible = [
                i for i in feasible if not influences[i]
            ]  # P(xi^theta|pi) = P(xi^theta|pi_noop)
        if objective == "myopic":
            optimal = [i for i in feasible if self._is_greedy(self.policies[i])]
        elif objective == "pareto_ud":
            feasible = [
                i for i in feasible if obj.is_unambiguously_desirable(values[i], values[self.noop])
            ]
            pareto = obj.pareto_optimal([values[i] for i in feasible])
            optimal = [i for i, keep in zip(feasible, pareto) if keep]
        else:
            best = max(values[i] for i in feasible)
            optimal = [i for i in feasible if values[i] == best]
        return ExactSolution(
            model=self.model,
            objective=objective,
            theta_star=theta_star if objective == "privileged" else None,
            include_theta_H=include_theta_H,
            points=self.points,
            policies=tuple(self.policies[i] for i in optimal),
            values=tuple(values[i] for i in optimal),
            influences=tuple(influences[i] for i in optimal),
            n_policies=self.n_policies,
            n_feasible=len(feasible),
        )

    @functools.cached_property
    def _greedy_actions(self) -> list[set[int]]:
        """argmax_a E[R_{theta}(s, a, s')] at every decision point (the myopic criterion)."""
        q = obj.myopic_values(self.model)
        out = []
        for _, s, th in self.points:
            row = q[s * self.model.n_thetas + th]
            out.append({a for a, v in enumerate(row) if v == max(row)})
        return out

    def _is_greedy(self, policy: tuple[int, ...]) -> bool:
        return all(a in ok for a, ok in zip(policy, self._greedy_actions))


def solve_exact(
    model: DRMDP,
    objective: str,
    theta_star: str | None = None,
    include_theta_H: bool = False,
    max_policies: int = MAX_POLICIES,
) -> ExactSolution:
    """Exact optimal set of `objective` by enumeration (see ExactSolver)."""
    return ExactSolver(model, max_policies).solve(objective, theta_star, include_theta_H)


def value_to_json(value) -> dict | list:
    """Fraction (or tuple of Fractions) -> {"exact": "p/q", "float": x}."""
    if isinstance(value, tuple):
        return [value_to_json(v) for v in value]
    value = Fraction(value)
    return {"exact": str(value), "float": float(value)}
