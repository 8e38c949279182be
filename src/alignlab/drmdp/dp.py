"""Dynamic programming on the augmented state x = (s, theta), vectorised over states with numpy.

Backward induction Q_t(x, a) = r_t(x, a) + sum_x' T(x' | x, a) V_{t+1}(x') over the sparse
successor lists of the model, one numpy pass per t. Which objectives this solves exactly:

- real_time, privileged[theta*], natural_shifts, myopic: always (rewards are Markov in (x, t)).
- initial: when theta_0 is deterministic (then it is privileged[theta_0]); an (s, theta, t)-policy
  cannot see theta_0, so a random theta_0 is not a Markov problem.
- final: when transitions and the start are deterministic: one solve per final theta_f with the
  constraint theta_H = theta_f, then the best theta_f (the sum_t R_{theta_H} couples past rewards
  to the future otherwise).
- constrained_real_time and pareto_ud are not DP objectives; see `influence_incentive` for the
  exact constrained value when pi_noop's theta-path is deterministic, and recommender.py.

Greedy policies break ties (within `tol`) toward the no-op, then toward the lowest action index.

Constraints (an `allowed` action mask, an `on_path` state mask, a terminal constraint) are tracked
as boolean feasibility arrays, never as a large negative number mixed into expectations: a state is
feasible at t iff it satisfies the state constraint and some allowed action has every
positive-probability successor feasible at t + 1. Infeasible states and actions get the value
-inf in the returned tables, and a start that cannot meet the constraint gets the value -inf.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .model import DRMDP

DP_OBJECTIVES = ("real_time", "privileged", "initial", "natural_shifts", "myopic", "final")


@dataclasses.dataclass(frozen=True)
class DPSolution:
    """Optimal value from the initial distribution, a greedy policy (H, |S|, |Theta|), the
    value table V_0 (|S|, |Theta|) and, if kept, Q-values (H, |S|, |Theta|, |A|): for every
    objective but myopic a non-contiguous view of an action-major array (backward induction's
    layout; `np.ascontiguousarray` copies it)."""

    objective: str
    value: float
    policy: np.ndarray
    values: np.ndarray
    q: np.ndarray | None


# --- rewards as (x, a) tables -----------------------------------------------------------------
def _row_state_action(model: DRMDP) -> tuple[np.ndarray, np.ndarray]:
    """s and a of every transition row r = x * |A| + a, as (|S||Theta||A|, 1) columns."""
    s_row = np.repeat(model.state_of, model.n_actions)[:, None]
    a_row = np.tile(np.arange(model.n_actions), model.n_aug)[:, None]
    return s_row, a_row


def expected_rewards(model: DRMDP, theta_score: np.ndarray | None = None) -> np.ndarray:
    """rbar[i, x, a] = sum_x' T(x' | x, a) R_{theta_i}(s, a, s') for theta_i in theta_score
    (all thetas by default): the expected one-step reward of (x, a) scored by theta_i."""
    theta_score = np.arange(model.n_thetas) if theta_score is None else np.asarray(theta_score)
    if model.reward.ndim == 3:  # R_theta(s, a): no dependence on s'
        return model.reward[theta_score][:, model.state_of, :]
    s_row, a_row = _row_state_action(model)
    s_next = model.state_of[model.successors]
    out = [
        np.einsum("rk,rk->r", model.probs, model.reward[th][s_row, a_row, s_next])
        for th in theta_score
    ]
    return np.stack(out).reshape(len(theta_score), model.n_aug, model.n_actions)


def real_time_rewards(model: DRMDP) -> np.ndarray:
    """r(x, a) = E[R_{theta(x)}(s, a, s')]: each step scored by the current theta."""
    if model.reward.ndim == 3:
        return model.reward[model.theta_of, model.state_of, :]
    s_row, a_row = _row_state_action(model)
    th_row = np.repeat(model.theta_of, model.n_actions)[:, None]
    r_next = model.reward[th_row, s_row, a_row, model.state_of[model.successors]]
    return np.einsum("rk,rk->r", model.probs, r_next).reshape(model.n_aug, model.n_actions)


def natural_theta_marginals(model: DRMDP) -> np.ndarray:
    """(H + 1, |Theta|): P(theta_t = theta | pi_noop), the forward pass of inaction."""
    d = state_marginals(model, noop_policy(model))
    return d.sum(axis=1)


# --- backward induction -------------------------------------------------------------------------
def backward_induction(
    model: DRMDP,
    rewards,
    terminal: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    keep_q: bool = True,
    tol: float = 1e-9,
    on_path=None,
):
    """Q_t = r_t + P V_{t+1}, V_t = max over feasible a of Q_t, for t = H-1..0.

    rewards: (X, A) array or a callable t -> (X, A) array. terminal: V_H (X,), zero by default;
    -inf entries mark terminal states that violate a constraint. allowed: optional bool mask
    (H, X, A) or (X, A) of permitted actions. on_path: optional callable t -> bool mask (X,) of the
    states allowed at time t (t = 0..H). An action is feasible iff it is allowed and all of its
    positive-probability successors are feasible at t + 1; a state is feasible iff it is allowed
    and has a feasible action. Returns (V_0, policy (H, X), Q (H, X, A) or None), with V_0 = -inf
    at infeasible states and Q = -inf at infeasible actions; the policy is greedy over the
    feasible actions (the no-op where a state has none).
    """
    v, _, policy, q_all = _constrained_induction(
        model, rewards, terminal, allowed, keep_q, tol, on_path
    )
    return v, policy, q_all


def _constrained_induction(model: DRMDP, rewards, terminal, allowed, keep_q, tol, on_path):
    """backward_induction, also returning the (X,) bool feasibility of every state at t = 0.
    Q comes back as an (H, X, A) view of an action-major (H, A, X) array.

    The loop works on action-major tables, q[a, x] (`_action_major`): each action's row is then
    one contiguous vector, so the maximum over actions is an elementwise maximum of A vectors
    rather than a reduction along a short last axis, about 15x faster in numpy. Every q[a, x] is
    the same sum of the same terms as in the (x, a) layout, so values, policies and Q-values are
    bit for bit those of that layout."""
    H, X, A = model.horizon, model.n_aug, model.n_actions
    v = np.zeros(X) if terminal is None else np.array(terminal, np.float64)
    feasible = v > -np.inf
    if on_path is not None:
        feasible &= on_path(H)
    successors, probs = _action_major(model)
    positive = probs > 0  # zero-probability padding never constrains a row
    policy = np.empty((H, X), dtype=np.int64)
    q_all = np.empty((H, A, X)) if keep_q else None  # returned as an (H, X, A) view
    noop = model.noop_index
    fixed = None if callable(rewards) else np.ascontiguousarray(np.asarray(rewards).T)
    for t in reversed(range(H)):
        r = fixed if fixed is not None else rewards(t).T
        q = r + _expect_rows(successors, probs, np.where(feasible, v, 0.0)).reshape(A, X)
        ok = None
        if not feasible.all():
            ok = np.all(feasible[successors] | ~positive, axis=1).reshape(A, X)
        if allowed is not None:
            mask = _mask_at(allowed, t).T
            ok = mask if ok is None else ok & mask
        if ok is not None:
            q = np.where(ok, q, -np.inf)
        best, policy[t] = _best_and_greedy(q, noop, tol)
        feasible = np.ones(X, dtype=bool) if ok is None else ok.any(axis=0)
        if on_path is not None:
            feasible &= on_path(t)
        v = np.where(feasible, best, -np.inf)
        if keep_q:
            q_all[t] = q
    return v, feasible, policy, None if q_all is None else q_all.transpose(0, 2, 1)


def _action_major(model: DRMDP) -> tuple[np.ndarray, np.ndarray]:
    """The transition rows reordered from r = x * |A| + a to r = a * |X| + x: (successors,
    probs), each (|A||X|, k)."""
    X, A, k = model.n_aug, model.n_actions, model.branching
    order = lambda m: np.ascontiguousarray(m.reshape(X, A, k).transpose(1, 0, 2)).reshape(-1, k)  # noqa: E731
    return order(model.successors), order(model.probs)


def _start_value(model: DRMDP, v0: np.ndarray, feasible: np.ndarray) -> float:
    """E[V_0(x_0)] over the initial distribution; -inf if a possible start is infeasible."""
    d0 = model.initial.reshape(-1)
    support = d0 > 0
    if not feasible[support].all():
        return -np.inf
    return float(d0[support] @ v0[support])


def _expect_rows(successors: np.ndarray, probs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sum_j probs[r, j] v(successors[r, j]) for every row r (in whatever order the rows are)."""
    return np.einsum("rk,rk->r", probs, v[successors])


def _mask_at(allowed: np.ndarray, t: int) -> np.ndarray:
    """The (X, A) action mask at time t of a mask given per time (H, X, A) or for all times."""
    return allowed[t] if allowed.ndim == 3 else allowed


def _best_and_greedy(q: np.ndarray, noop: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(max_a q[a, x], argmax_a q[a, x]) of an action-major (A, X) table: near-ties (within
    tol * (1 + |max|)) go to the no-op, then to the lowest index; a state whose every action is
    -inf gets the no-op."""
    best = q.max(axis=0)
    near_best = _near(q, best, tol)
    # the lowest near-best index, by overwriting from the highest; 0 where none is near-best
    # (a NaN or +inf row, whose tolerance is NaN), as argmax of an all-False row gives
    first = np.zeros(q.shape[1], dtype=np.int64)
    for a in range(q.shape[0] - 1, 0, -1):
        first[near_best[a]] = a
    return best, np.where(near_best[noop], noop, first)


def _near(q: np.ndarray, best: np.ndarray, tol: float) -> np.ndarray:
    """The entries of q within tol * (1 + |best|) of best (broadcast)."""
    return q >= best - tol * (1.0 + np.abs(best))


def _near_best(q: np.ndarray, tol: float) -> np.ndarray:
    """Actions within tol * (1 + |max|) of the best, per row of an (X, A) table."""
    return _near(q, q.max(axis=1, keepdims=True), tol)


def _greedy(q: np.ndarray, noop: int, tol: float) -> np.ndarray:
    """argmax_a q[x, a] per row of an (X, A) table, ties as `_best_and_greedy`."""
    return _best_and_greedy(q.T, noop, tol)[1]


def solve_dp(
    model: DRMDP,
    objective: str = "real_time",
    theta_star: str | None = None,
    keep_q: bool = True,
    allowed: np.ndarray | None = None,
    tol: float = 1e-9,
) -> DPSolution:
    """Optimal value and greedy policy of a DP-tractable objective (see the module docstring).

    allowed: optional bool mask (H, |S||Theta|, |A|) restricting actions (e.g. to those that
    cannot influence theta, as constrained_real_time does in recommender.py). Disallowed actions
    get Q = -inf; if no policy can keep to the allowed actions, the value is -inf.
    """
    H, X, A = model.horizon, model.n_aug, model.n_actions
    if objective == "final":
        return _solve_final(model, keep_q, allowed, tol)
    rewards = _objective_rewards(model, objective, theta_star)
    if objective == "myopic":  # horizon 1 at every t: greedy in the immediate reward
        policy = np.empty((H, X), dtype=np.int64)
        q_all = np.empty((H, X, A)) if keep_q else None
        stuck = np.zeros((H, X), dtype=bool)  # states with no allowed action
        for t in range(H):
            q = rewards if allowed is None else np.where(_mask_at(allowed, t), rewards, -np.inf)
            policy[t] = _greedy(q, model.noop_index, tol)
            stuck[t] = np.isneginf(q).all(axis=1)
            if keep_q:
                q_all[t] = q
        policy = policy.reshape(H, model.n_states, model.n_thetas)
        value = evaluate_policy(model, policy, "real_time")  # myopic's value: real-time return
        if allowed is not None:
            reached = state_marginals(model, policy)[:H].reshape(H, X) > 0
            if (reached & stuck).any():
                value = -np.inf  # a reachable state has no allowed action
        return DPSolution(
            objective,
            value,
            policy,
            rewards.max(axis=1).reshape(model.n_states, model.n_thetas),
            None if q_all is None else q_all.reshape(H, model.n_states, model.n_thetas, A),
        )
    v0, feasible, policy, q = _constrained_induction(
        model, rewards, None, allowed, keep_q, tol, None
    )
    return DPSolution(
        objective,
        _start_value(model, v0, feasible),
        policy.reshape(H, model.n_states, model.n_thetas),
        v0.reshape(model.n_states, model.n_thetas),
        None if q is None else q.reshape(H, model.n_states, model.n_thetas, A),
    )


def _objective_rewards(model: DRMDP, objective: str, theta_star: str | None):
    """The per-step reward table (or t -> table) of a Markov objective."""
    if objective in ("real_time", "myopic"):
        return real_time_rewards(model)
    if objective == "privileged":
        if theta_star not in model.thetas:
            raise ValueError(
                f"privileged needs theta_star, one of {list(model.thetas)}; got {theta_star!r}"
            )
        return expected_rewards(model, [model.thetas.index(theta_star)])[0]
    if objective == "initial":
        thetas0 = np.nonzero(model.initial.sum(axis=0))[0]
        if len(thetas0) != 1:
            raise ValueError(
                "initial reward is not a Markov objective when theta_0 is random "
                f"({[model.thetas[i] for i in thetas0]}); "
                "solve per theta_0 with model.with_initial(theta=...)"
            )
        return expected_rewards(model, thetas0)[0]  # = privileged[theta_0]
    if objective == "natural_shifts":
        rbar = expected_rewards(model)
        weights = natural_theta_marginals(model)  # (H + 1, Theta)
        return lambda t: np.tensordot(weights[t], rbar, axes=1)
    raise ValueError(
        f"objective {objective!r} is not solved by DP; DP objectives: {list(DP_OBJECTIVES)} "
        "(constrained_real_time, pareto_ud: use exact.solve_exact)"
    )


def _solve_final(model: DRMDP, keep_q: bool, allowed, tol: float) -> DPSolution:
    """max over theta_f of [max sum_t R_{theta_f} subject to theta_H = theta_f]; exact when the
    path is deterministic, because then a policy's return is that of a single trajectory."""
    if not model.is_deterministic or np.count_nonzero(model.initial) != 1:
        raise ValueError(
            "final reward is solved exactly by DP only for deterministic transitions and a single "
            "(s0, theta0); use exact.solve_exact (or evaluate_policy for a given policy)"
        )
    rbar = expected_rewards(model)
    best = None
    for f in range(model.n_thetas):
        terminal = np.where(model.theta_of == f, 0.0, -np.inf)  # the constraint theta_H = f
        v0, feasible, policy, q = _constrained_induction(
            model, rbar[f], terminal, allowed, keep_q, tol, None
        )
        value = _start_value(model, v0, feasible)  # -inf if theta_H = f is unreachable
        if best is None or _beats(value, best[0], tol):
            best = (value, policy, v0, q)
    value, policy, v0, q = best
    H, S, T, A = model.horizon, model.n_states, model.n_thetas, model.n_actions
    return DPSolution(
        "final",
        value,
        policy.reshape(H, S, T),
        v0.reshape(S, T),
        None if q is None else q.reshape(H, S, T, A),
    )


def _beats(value: float, incumbent: float, tol: float) -> bool:
    """value > incumbent by more than tol * (1 + |incumbent|); anything finite beats -inf."""
    if incumbent == -np.inf:
        return value > incumbent
    return value > incumbent + tol * (1 + abs(incumbent))


# --- evaluating a given policy --------------------------------------------------------------------
def noop_policy(model: DRMDP) -> np.ndarray:
    return np.full(
        (model.horizon, model.n_states, model.n_thetas), model.noop_index, dtype=np.int64
    )


def state_marginals(
    model: DRMDP, policy: np.ndarray, initial: np.ndarray | None = None
) -> np.ndarray:
    """(H + 1, |S|, |Theta|): P(s_t, theta_t | pi), the forward pass."""
    X, A = model.n_aug, model.n_actions
    pol = np.asarray(policy).reshape(model.horizon, X)
    d = np.empty((model.horizon + 1, X))
    d[0] = model.initial.reshape(X) if initial is None else initial.reshape(X)
    for t in range(model.horizon):
        rows = np.arange(X) * A + pol[t]
        mass = d[t][:, None] * model.probs[rows]
        d[t + 1] = np.bincount(model.successors[rows].ravel(), weights=mass.ravel(), minlength=X)
    return d.reshape(model.horizon + 1, model.n_states, model.n_thetas)


def per_step_rewards(model: DRMDP, policy: np.ndarray, rewards) -> np.ndarray:
    """(H,): E[r_t(x_t, pi(x_t))] for a reward table (X, A) or callable t -> table."""
    X = model.n_aug
    d = state_marginals(model, policy).reshape(-1, X)
    pol = np.asarray(policy).reshape(model.horizon, X)
    out = np.empty(model.horizon)
    for t in range(model.horizon):
        r = rewards(t) if callable(rewards) else rewards
        out[t] = d[t] @ r[np.arange(X), pol[t]]
    return out


def evaluate_policy(
    model: DRMDP, policy: np.ndarray, objective: str = "real_time", theta_star: str | None = None
):
    """The value (float) of a deterministic (H, |S|, |Theta|) policy under any objective.

    myopic and constrained_real_time return the real-time return (whether the policy meets the
    constraint is `objectives.influences`); pareto_ud returns the vector (EU_theta)_theta.
    """
    policy = np.asarray(policy)
    if objective in ("real_time", "myopic", "constrained_real_time"):
        return float(per_step_rewards(model, policy, real_time_rewards(model)).sum())
    if objective == "privileged":
        return float(
            per_step_rewards(
                model, policy, _objective_rewards(model, "privileged", theta_star)
            ).sum()
        )
    if objective == "natural_shifts":
        return float(
            per_step_rewards(model, policy, _objective_rewards(model, "natural_shifts", None)).sum()
        )
    if objective == "pareto_ud":
        rbar = expected_rewards(model)
        return np.array(
            [per_step_rewards(model, policy, rbar[th]).sum() for th in range(model.n_thetas)]
        )
    if objective == "initial":  # condition on theta_0, score by R_{theta_0}
        rbar, total = expected_rewards(model), 0.0
        for th0 in np.nonzero(model.initial.sum(axis=0))[0]:
            start = np.zeros_like(model.initial)
            start[:, th0] = model.initial[:, th0]
            d = state_marginals(model, policy, start).reshape(model.horizon + 1, -1)
            pol = policy.reshape(model.horizon, -1)
            total += sum(
                d[t] @ rbar[th0][np.arange(model.n_aug), pol[t]] for t in range(model.horizon)
            )
        return float(total)
    if objective == "final":
        return _evaluate_final(model, policy)
    raise ValueError(f"unknown objective {objective!r}")


def _evaluate_final(model: DRMDP, policy: np.ndarray) -> float:
    """E sum_t R_{theta_H}(x_t, a_t, x_{t+1}) by a backward pass over (x, theta_f):
    P_t(x, f) = P(theta_H = f | x_t = x) and
    G_t(x, f) = E[sum_{u>=t} R_f(x_u, a_u, x_{u+1}) 1{theta_H = f} | x_t = x]."""
    X, A, T = model.n_aug, model.n_actions, model.n_thetas
    pol = policy.reshape(model.horizon, X)
    p_final = (model.theta_of[:, None] == np.arange(T)[None, :]).astype(np.float64)
    g = np.zeros((X, T))
    # R_f(s, a, s') at every successor, for every f: (T, X*A, k)
    s_row, a_row = _row_state_action(model)
    if model.reward.ndim == 3:
        r_succ = np.broadcast_to(model.reward[:, s_row, a_row], (T,) + model.successors.shape)
    else:
        r_succ = model.reward[:, s_row, a_row, model.state_of[model.successors]]
    for t in reversed(range(model.horizon)):
        rows = np.arange(X) * A + pol[t]
        succ, prob = model.successors[rows], model.probs[rows]  # (X, k)
        p_next, g_next = p_final[succ], g[succ]  # (X, k, T)
        r = np.moveaxis(r_succ[:, rows, :], 0, -1)  # (X, k, T)
        g = (prob[:, :, None] * (r * p_next + g_next)).sum(axis=1)
        p_final = (prob[:, :, None] * p_next).sum(axis=1)
    return float(model.initial.reshape(X) @ g.sum(axis=1))


# --- influence incentives (Definition 7) via constrained DP ---------------------------------------
def noop_theta_path(model: DRMDP, include_theta_H: bool = False) -> np.ndarray | None:
    """pi_noop's theta-path (theta_0..theta_{H-1}, or ..theta_H) if deterministic, else None.

    Decided on supports (transitions with positive probability), not on rounded marginals, so
    that pi_noop itself always keeps theta on the returned path.
    """
    X, A = model.n_aug, model.n_actions
    rows = np.arange(X) * A + model.noop_index
    successors, positive = model.successors[rows], model.probs[rows] > 0
    reach = model.initial.reshape(X) > 0
    path = []
    for _ in range(model.horizon + int(include_theta_H)):
        thetas = np.unique(model.theta_of[reach])
        if len(thetas) != 1:
            return None
        path.append(thetas[0])
        nxt = np.zeros(X, dtype=bool)
        nxt[successors[reach][positive[reach]]] = True
        reach = nxt
    return np.array(path, dtype=np.int64)


def influence_incentive(
    model: DRMDP,
    objective: str = "real_time",
    theta_star: str | None = None,
    include_theta_H: bool = False,
    tol: float = 1e-9,
) -> dict:
    """Whether every optimal policy influences (Definition 7), by two DP solves.

    Exact when pi_noop's theta-path is deterministic (e.g. a fixed theta_0 that inaction never
    moves): then pi does not influence iff, with probability 1, theta_t stays on that path, a
    reachability constraint that DP enforces with a boolean feasibility table (a state is
    feasible iff it is on the path and some action keeps every positive-probability successor
    feasible). The incentive exists iff the unconstrained optimum beats the best non-influencing
    value by more than tol * (1 + |V*|); near-ties count as "a non-influencing policy is optimal".
    For myopic, the optimal policies are the greedy ones, so the incentive exists iff no greedy
    policy keeps theta on the path.

    Returns {"incentive", "optimal_value", "best_non_influencing_value",
    "non_influencing_policy"}. best_non_influencing_value is None when no candidate policy is
    non-influencing (for myopic: no greedy policy keeps theta on the path; pi_noop is always a
    candidate for the other objectives), and then incentive is True: every optimal policy
    influences. The non-influencing optimum is exactly the constrained_real_time value when
    objective="real_time". non_influencing_policy is meaningful only when
    best_non_influencing_value is not None.
    """
    path = noop_theta_path(model, include_theta_H)
    if path is None:
        raise ValueError(
            "influence_incentive by DP needs a deterministic theta-path under pi_noop; "
            "use exact.solve_exact"
        )
    best = solve_dp(model, objective, theta_star, keep_q=False, tol=tol).value
    last = len(path)
    on_path = lambda t: model.theta_of == path[t] if t < last else np.ones(model.n_aug, bool)  # noqa: E731
    if objective == "myopic":  # can a policy that is greedy everywhere keep theta on the path?
        r = real_time_rewards(model)
        rewards, allowed = np.zeros_like(r), _near_best(r, tol)
    else:
        rewards, allowed = _objective_rewards(model, objective, theta_star), None
    v0, feasible, policy, _ = _constrained_induction(
        model, rewards, None, allowed, False, tol, on_path
    )
    policy = policy.reshape(model.horizon, model.n_states, model.n_thetas)
    value = _start_value(model, v0, feasible)
    if value == -np.inf:  # no non-influencing candidate: every optimal policy influences
        non_influencing, incentive = None, True
    elif objective == "myopic":  # a greedy policy that does not influence is myopic-optimal
        non_influencing, incentive = evaluate_policy(model, policy), False
    else:
        non_influencing = value
        incentive = best > non_influencing + tol * (1 + abs(best))
    return {
        "incentive": bool(incentive),
        "optimal_value": best,
        "best_non_influencing_value": non_influencing,
        "non_influencing_policy": policy,
    }
