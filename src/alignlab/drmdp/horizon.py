"""The optimisation horizon and the incentive to influence (section 3.1).

(a) Conspiracy Influence under real-time reward: inaction earns 10H, influencing earns
    -100 + 100(H - 1), so influence is preferred iff H >= 3 (the paper's "H > 2").
(b) A population of random small stochastic DR-MDPs in which influence pays a short-term cost
    for a later gain: the fraction with a real-time influence incentive grows with H.

Influence incentives are decided by `dp.influence_incentive`: two backward inductions, the
unconstrained optimum and the best policy that keeps theta on pi_noop's (deterministic)
theta-path. That is exact for these models; an incentive needs the optimum to beat the best
non-influencing value by more than tol * (1 + |V*|), so near-ties count as no incentive.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .dp import evaluate_policy, influence_incentive, noop_policy
from .examples import conspiracy
from .model import DRMDP


def conspiracy_threshold(max_horizon: int = 8) -> dict:
    """Real-time values of inaction and of always influencing, and whether real-time reward has
    an influence incentive, for H = 1..max_horizon in Conspiracy Influence.

    Returns {"horizons", "noop_value", "influence_value", "optimal_value", "influence_incentive",
    "threshold"}: lists over H, and the smallest H with an incentive (3 in the paper).
    """
    if max_horizon < 1:
        raise ValueError(f"max_horizon must be >= 1, got {max_horizon}")
    rows = []
    for horizon in range(1, max_horizon + 1):
        model = conspiracy(horizon=horizon)
        always_influence = np.full_like(noop_policy(model), model.actions.index("influence"))
        result = influence_incentive(model, "real_time")
        rows.append(
            (
                horizon,
                evaluate_policy(model, noop_policy(model)),
                evaluate_policy(model, always_influence),
                result["optimal_value"],
                result["incentive"],
            )
        )
    horizons, noop, influence, optimal, incentive = (list(col) for col in zip(*rows))
    return {
        "horizons": horizons,
        "noop_value": noop,
        "influence_value": influence,
        "optimal_value": optimal,
        "influence_incentive": incentive,
        "threshold": next((h for h, inc in zip(horizons, incentive) if inc), None),
    }


def random_influence_drmdp(
    rng: np.random.Generator,
    n_states: int = 3,
    n_thetas: int = 3,
    n_actions: int = 3,
    horizon: int = 5,
    exact: bool = False,
) -> DRMDP:
    """A small stochastic DR-MDP where influencing costs now and may pay later.

    Design: each theta has a random "satisfiability" g_theta ~ U(0, 1), the level of reward the AI
    can earn for a person holding theta. R_theta(s, a) = g_theta + u(theta, s, a) - c_a with noise
    u ~ U(-0.1, 0.1), c_noop = 0 and costs c_a ~ U(0.25, 0.6) for the other actions. Inaction
    (action 0) never moves theta; action a > 0 moves theta to a random target tau(s, theta, a)
    with a random probability m ~ U(0.3, 0.9). States move stochastically (two random successors).
    Every cost exceeds the largest noise difference (0.2), so influencing never pays within one
    step: the incentive comes only from the steps left after theta has moved. It is absent at
    H = 1 (xi^theta = (theta_0) cannot be influenced) and grows with H. Start (s, theta) = (0, 0).
    All numbers are multiples of 1/100; exact=True also keeps them as Fractions.
    """
    S, T, A = n_states, n_thetas, n_actions
    hundredths = _hundredths(exact)
    g = hundredths(rng.integers(0, 101, size=T))
    u = hundredths(rng.integers(-10, 11, size=(T, S, A)))
    c = hundredths(np.concatenate([[0], rng.integers(25, 61, size=A - 1)]))
    reward = g[:, None, None] + u - c[None, None, :]

    # successors of (s, theta, a): two next states, each with theta kept or moved to the target
    s_next = rng.integers(0, S, size=(S, T, A, 2))
    first = hundredths(rng.integers(1, 100, size=(S, T, A)))  # P(first next state)
    target = rng.integers(0, T, size=(S, T, A))
    move = hundredths(rng.integers(30, 91, size=(S, T, A)) * (np.arange(A) > 0))  # inaction: 0
    theta = np.broadcast_to(np.arange(T)[None, :, None], (S, T, A))
    successors = np.stack(
        [
            s_next[..., 0] * T + theta,
            s_next[..., 0] * T + target,
            s_next[..., 1] * T + theta,
            s_next[..., 1] * T + target,
        ],
        axis=-1,
    ).reshape(S * T * A, 4)
    probs = np.stack(
        [first * (1 - move), first * move, (1 - first) * (1 - move), (1 - first) * move], axis=-1
    )
    initial = hundredths(np.zeros((S, T), dtype=np.int64))
    initial[0, 0] = 1
    return DRMDP.from_arrays(
        successors,
        probs.reshape(S * T * A, 4),
        reward,
        initial,
        horizon,
        noop=0,
        name="random_influence",
    )


def _hundredths(exact: bool):
    """ints -> ints / 100, as Fractions (object arrays) or floats."""
    if exact:
        return np.vectorize(lambda v: Fraction(int(v), 100), otypes=[object])
    return lambda ints: np.asarray(ints) / 100


def incentive_fraction_by_horizon(
    seed: int = 0,
    n_models: int = 200,
    max_horizon: int = 10,
    n_states: int = 3,
    n_thetas: int = 3,
    n_actions: int = 3,
    progress=None,
) -> dict:
    """The fraction of random DR-MDPs (random_influence_drmdp) with a real-time influence
    incentive, for H = 1..max_horizon. The same models are used at every horizon.

    Returns {"horizons", "fraction", "count", "n_models", "settings"}; same seed, same output.
    """
    rng = np.random.default_rng(seed)
    models = [random_influence_drmdp(rng, n_states, n_thetas, n_actions) for _ in range(n_models)]
    horizons = list(range(1, max_horizon + 1))
    track = progress or (lambda it, total: it)  # e.g. RunContext.track: a progress bar
    counts = [
        sum(influence_incentive(m.with_horizon(h), "real_time")["incentive"] for m in models)
        for h in track(horizons, total=len(horizons))
    ]
    return {
        "horizons": horizons,
        "fraction": [c / n_models for c in counts],
        "count": counts,
        "n_models": n_models,
        "settings": {
            "seed": seed,
            "n_states": n_states,
            "n_thetas": n_thetas,
            "n_actions": n_actions,
        },
    }
