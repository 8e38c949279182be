"""A recommender DR-MDP: user preferences drift toward what is shown, and extreme users engage more.

The model (our design, in the spirit of the paper's Clickbait example at realistic size):
- Content: n_categories categories on an "extremeness" axis, x_c = c / (n_categories - 1).
- Preference theta: n_levels taste levels, y_l = l / (n_levels - 1); the user's favourite
  category is c*(l), the category nearest y_l.
- State s: the category shown at the last step. Actions: "organic" (a_noop: the AI does not
  curate and the user browses to c*(theta) on their own) or "show_cXX".
- Engagement R_theta(s, a, s') = (1 + engagement_gain * y_theta) * exp(-(x_{s'} - y_theta)^2 /
  (2 taste_width^2)): the best match scores most, and more extreme users engage more.
- Preference dynamics: showing a category g = 1, 2, 3 steps from c*(theta) pulls theta one level
  toward it with probability pull[g - 1] (content too far away, g >= 4, is ignored); otherwise
  theta drifts naturally by +-1 level with probability natural_drift each. Showing c*(theta)
  has exactly the no-op's theta-kernel.

constrained_real_time is solved exactly by DP restricted to the actions whose theta-kernel equals
the no-op's at the current theta (free at the last step, whose theta_H is outside xi^theta).
Why exact here: s' is the category shown, a function of (theta, a), so along any trajectory the
state, hence the action, is determined by the theta-history; P(xi^theta | pi) then equals
P(xi^theta | pi_noop) iff every action at a reachable (s, theta, t < H - 1) has the no-op's
theta-kernel. Final reward and ParetoUD are not DP-tractable on this stochastic model (dp.py)
and are reported as not solved.
"""

from __future__ import annotations

import numpy as np

from . import dp
from .model import DRMDP

SOLVED = ("real_time", "initial", "natural_shifts", "privileged", "myopic", "constrained_real_time")
NOT_SOLVED = {
    "final": "sum_t R_{theta_H} couples past rewards to the random final theta: not a Markov objective "
    "on this stochastic model, and the enumeration is astronomically large",
    "pareto_ud": "a Pareto set over 16-dimensional utility vectors among unambiguously desirable policies: "
    "needs enumeration",
}


def recommender_drmdp(
    n_categories: int = 12,
    n_levels: int = 16,
    horizon: int = 30,
    theta0_level: int = 3,
    engagement_gain: float = 2.0,
    taste_width: float = 0.12,
    pull: tuple[float, ...] = (0.35, 0.5, 0.3),
    natural_drift: float = 0.02,
) -> DRMDP:
    """The recommender DR-MDP (module docstring); starts at theta0_level with s0 = c*(theta0)."""
    C, L = n_categories, n_levels
    if not 0 <= theta0_level < L:
        raise ValueError(f"theta0_level must be in [0, {L}), got {theta0_level}")
    x = np.arange(C) / (C - 1)  # content extremeness
    y = np.arange(L) / (L - 1)  # taste
    favourite = np.rint(y * (C - 1)).astype(int)  # c*(theta)
    states = tuple(f"c{c:02d}" for c in range(C))
    thetas = tuple(f"taste{level:02d}" for level in range(L))
    actions = ("organic",) + tuple(f"show_c{c:02d}" for c in range(C))
    A = len(actions)

    # shown[theta, a]: the category the user sees; gap to their favourite decides the pull
    shown = np.concatenate([favourite[:, None], np.broadcast_to(np.arange(C), (L, C))], axis=1)
    gap = shown - favourite[:, None]
    pull_by_gap = np.array((0.0, *pull, 0.0))  # no pull at gap 0 (own taste) or beyond len(pull)
    p_pull = pull_by_gap[np.minimum(np.abs(gap), len(pull) + 1)]
    toward = np.sign(gap)
    # theta' in {theta - 1, theta, theta + 1}: pull toward the content, else natural drift
    p_down = np.where(toward < 0, p_pull, 0.0) + (1 - p_pull) * natural_drift
    p_up = np.where(toward > 0, p_pull, 0.0) + (1 - p_pull) * natural_drift
    levels = np.arange(L)[:, None]
    down, up = np.maximum(levels - 1, 0), np.minimum(levels + 1, L - 1)
    theta_next = np.stack(
        [
            np.broadcast_to(down, (L, A)),
            np.broadcast_to(levels, (L, A)),
            np.broadcast_to(up, (L, A)),
        ],
        -1,
    )
    theta_prob = np.stack([p_down, 1 - p_down - p_up, p_up], -1)

    # rows (s, theta, a): s does not matter for the dynamics; s' = shown category
    successors = np.broadcast_to(shown[:, :, None] * L + theta_next, (C, L, A, 3)).reshape(
        C * L * A, 3
    )
    probs = np.broadcast_to(theta_prob, (C, L, A, 3)).reshape(C * L * A, 3)

    engagement = (1 + engagement_gain * y[:, None]) * np.exp(
        -((x[None, :] - y[:, None]) ** 2) / (2 * taste_width**2)
    )
    reward = np.broadcast_to(
        engagement[:, None, None, :], (L, C, A, C)
    )  # R_theta(s, a, s') = engagement(theta, s')
    initial = np.zeros((C, L))
    initial[favourite[theta0_level], theta0_level] = 1.0
    return DRMDP.from_arrays(
        successors,
        probs,
        reward,
        initial,
        horizon,
        noop="organic",
        states=states,
        thetas=thetas,
        actions=actions,
        name="recommender",
    )


def noop_kernel_mask(model: DRMDP, include_theta_H: bool = False) -> np.ndarray:
    """(H, |S||Theta|, |A|): actions whose theta'-kernel equals the no-op's at that (s, theta);
    every action at t = H - 1 unless theta_H is part of xi^theta."""
    X, A = model.n_aug, model.n_actions
    kernel = np.zeros((X * A, model.n_thetas))
    np.add.at(
        kernel,
        (np.repeat(np.arange(X * A), model.branching), model.theta_of[model.successors].ravel()),
        model.probs.ravel(),
    )
    kernel = kernel.reshape(X, A, model.n_thetas)
    same = np.all(np.isclose(kernel, kernel[:, [model.noop_index], :], atol=1e-12), axis=-1)
    mask = np.broadcast_to(same, (model.horizon, X, A)).copy()
    if not include_theta_H and model.horizon:
        mask[-1] = True
    return mask


def _metrics(model: DRMDP, policy: np.ndarray, y: np.ndarray) -> dict:
    marg = dp.state_marginals(model, policy)  # (H + 1, S, Theta)
    theta_marg = marg.sum(axis=1)
    theta0 = model.thetas.index(model.initial_point[1])
    return {
        "real_time_reward": dp.evaluate_policy(model, policy, "real_time"),
        "initial_reward": dp.evaluate_policy(model, policy, "initial"),
        "drift": float(theta_marg[-1] @ np.abs(y - y[theta0])),
        "mean_theta": (theta_marg @ y).tolist(),
        "reward_per_step": dp.per_step_rewards(model, policy, dp.real_time_rewards(model)).tolist(),
    }


def recommender_study(
    horizon: int = 30,
    n_categories: int = 12,
    n_levels: int = 16,
    theta0_level: int = 3,
    privileged_level: int = 7,
    engagement_gain: float = 2.0,
) -> dict:
    """Solve every DP-tractable objective on the recommender and measure manipulation.

    Per objective (and for the no-op baseline "organic"): real_time_reward (E sum_t R_{theta_t}),
    initial_reward (E sum_t R_{theta_0}), drift E|y_{theta_H} - y_{theta_0}| (taste units, 0..1),
    excess_drift over the no-op's natural drift, manipulates (excess drift above half a taste
    level), mean_theta (E y_{theta_t}, t = 0..H), reward_per_step (E R_{theta_t}, t < H), and the
    real-time and initial reward given up relative to the best achievable (the real_time and
    initial optima). privileged uses theta* = privileged_level (a normative choice: a moderate
    user). Deterministic: no randomness.
    """
    model = recommender_drmdp(n_categories, n_levels, horizon, theta0_level, engagement_gain)
    y = np.arange(n_levels) / (n_levels - 1)
    policies = {"organic": dp.noop_policy(model)}
    for objective in SOLVED:
        if objective == "constrained_real_time":
            sol = dp.solve_dp(model, "real_time", allowed=noop_kernel_mask(model), keep_q=False)
        else:
            theta_star = model.thetas[privileged_level] if objective == "privileged" else None
            sol = dp.solve_dp(model, objective, theta_star, keep_q=False)
        policies[objective] = sol.policy
    results = {name: _metrics(model, pol, y) for name, pol in policies.items()}
    best_rt, best_initial = (
        results["real_time"]["real_time_reward"],
        results["initial"]["initial_reward"],
    )
    natural = results["organic"]["drift"]
    for r in results.values():
        r["real_time_reward_given_up"] = best_rt - r["real_time_reward"]
        r["initial_reward_given_up"] = best_initial - r["initial_reward"]
        r["excess_drift"] = r["drift"] - natural
        r["manipulates"] = bool(r["excess_drift"] > 0.5 / (n_levels - 1))
    return {
        "settings": {
            "horizon": horizon,
            "n_categories": n_categories,
            "n_levels": n_levels,
            "theta0_level": theta0_level,
            "privileged_level": privileged_level,
            "engagement_gain": engagement_gain,
        },
        "objectives": results,
        "manipulating": [name for name, r in results.items() if r["manipulates"]],
        "not_solved": NOT_SOLVED,
    }
