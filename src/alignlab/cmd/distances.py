"""Exact temporal distances on a TabularMDP: the successor distance and the alternatives.

The notes ("Successor distance"): d_SD(s, a; g) = f(g, a_g, g) - f(s, a, g)
~ log p_gamma(g | g) - log p_gamma(g | s, a), claimed non-negative, zero on the diagonal and
satisfying the triangle inequality under stochastic dynamics. Here that claim is made exact:

- `successor_distance`        d_SD(s, g), a quasimetric (proof in its docstring)
- `successor_distance_sa`     d_SD(s, a; g), the distance-to-go after action a (Q-like)
- `pair_successor_distance`   d_SD((s, a), (g, b)), a quasimetric on state-action pairs
- `critic_successor_distance` log p(g | g, a_g) - log p(g | s, a): what the optimal critic's
                              change of variables gives for one data tuple (s, a, g, a_g)
- alternatives that are *not* quasimetrics: `neg_log_occupancy`, `mean_time_gap` (from data),
  `conditional_hitting_time`, `discounted_time_gap`; and `expected_hitting_time`, which is a
  quasimetric but is not what a time-gap regression on trajectories estimates
- `check_quasimetric`         counts of violations of the three properties
- `exact_distances`           every exact candidate for one MDP, by name
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from .tabular import (
    TabularMDP,
    discounted_occupancy,
    successor_matrix,
    transition_matrix,
)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # p = 0 -> log p = -inf -> distance +inf (unreachable)
        return np.log(x)


def successor_distance(occupancy: np.ndarray) -> np.ndarray:
    """d_SD(s, g) = log p_gamma(g | g) - log p_gamma(g | s), shape (S, S) (notes, d_SD).

    `occupancy` must count the current state (k = 0 included; `discounted_occupancy` with
    include_current=True), so p_gamma(g | s) = (1 - gamma) M(s, g), M = (I - gamma P_pi)^-1.
    Proof that d_SD is a quasimetric. Let T_g = min{k >= 0 : s_k = g}. The strong Markov
    property at T_g gives M(s, g) = E_s[gamma^T_g] M(g, g), hence d_SD(s, g) = -log E_s[gamma^T_g]:
    (i) >= 0, since gamma^T <= 1 (and >= -log gamma for s != g, as T_g >= 1); (ii) d(g, g) = 0,
    since T_g = 0 from g; (iii) T_g <= T_w + T_g o theta_{T_w} (go through w first), so by strong
    Markov at T_w, E_s[gamma^T_g] >= E_s[gamma^T_w] E_w[gamma^T_g]: d(s, g) <= d(s, w) + d(w, g).
    Without the k = 0 term the diagonal becomes the return probability and (i), (iii) fail.
    """
    log_p = _log(occupancy)
    return np.diag(log_p)[None, :] - log_p


def successor_distance_sa(occupancy_sa: np.ndarray, occupancy: np.ndarray) -> np.ndarray:
    """d_SD(s, a; g) = log p_gamma(g | g) - log p_gamma(g | s, a), shape (S, A, S) (notes, d_SD).

    p_gamma(g | g) is the *state* occupancy, the pi-average over a_g of p_gamma(g | g, a_g).
    For s != g, T_g >= 1 and pi acts after T_g, so M(s, a, g) = E[gamma^T_g | s, a] M(g, g):
    d(s, a; g) = -log E[gamma^T_g | s_0 = s, a_0 = a] >= -log gamma, a distance-to-go after a
    (like a Q-function). It averages back exactly, d_SD(s, g) = -log E_{a~pi} exp(-d(s, a; g)),
    but d(g, a; g) is not 0 (a may return to g more or less often than pi): use
    `pair_successor_distance` for a quasimetric on state-action pairs.
    """
    log_p_goal = _log(np.diag(occupancy))
    return log_p_goal[None, None, :] - _log(occupancy_sa)


def pair_successor_distance(mdp: TabularMDP, gamma: float) -> np.ndarray:
    """d_SD((s, a), (g, b)) on the state-action chain x_k = (s_k, a_k), shape (S, A, S, A).

    The chain moves (s, a) -> (s', a') with P(s' | s, a) pi(a' | s'); with its occupancy
    M_x = (I - gamma P_x)^-1 (k = 0 included), d(x, y) = log M_x(y, y) - log M_x(x, y)
    = -log E_x[gamma^T_y] is a quasimetric by the proof in `successor_distance`, applied to
    this chain. It is the exact counterpart of the distilled d_theta((s, a), (g, a_g)); pairs
    with pi(b | g) = 0 are never hit (distance +inf).
    """
    S, A = mdp.n_states, mdp.n_actions
    P_x = np.einsum("sat,tb->satb", mdp.P, mdp.pi).reshape(S * A, S * A)
    return successor_distance(successor_matrix(P_x, gamma)).reshape(S, A, S, A)


def critic_successor_distance(occupancy_sa: np.ndarray) -> np.ndarray:
    """f*(g, a_g, g) - f*(s, a, g) = log p(g | g, a_g) - log p(g | s, a): the CMD-2 target.

    The optimal symmetric-InfoNCE critic is f*(s, a, g) = log p_gamma(g | s, a) / p(g) + const,
    so the change of variables with the action a_g recorded at g gives exactly this, shape
    (S, A, S, A) indexed [s, a, g, a_g]. It is not a quasimetric (it is negative at s = g when a
    returns to g more often than a_g), but for s != g it differs from `successor_distance_sa`
    and from `pair_successor_distance` only by functions of (g, a_g):
    target = d_SD(s, a; g) + log p(g | g, a_g) / p(g | g), so for each goal all three order
    (s, a) identically. Exactly, d_SD(s, g) = log E_{a_g~pi(g)} exp(-log E_{a~pi(s)} exp(-target)).
    """
    log_p = _log(occupancy_sa)
    log_p_goal = np.einsum("gag->ga", log_p)  # log p(g | g, a_g)
    return log_p_goal[None, None, :, :] - log_p[..., None]


def neg_log_occupancy(occupancy: np.ndarray) -> np.ndarray:
    """-log p_gamma(g | s): the "distance" without the change of variables (not zero at s = g)."""
    return -_log(occupancy)


def expected_hitting_time(P_pi: np.ndarray) -> np.ndarray:
    """E_s[T_g], T_g = min{k >= 0 : s_k = g}, shape (S, S); +inf where g is not hit a.s.

    Solved per goal: t(g) = 0, t(s) = 1 + sum_s' P_pi(s, s') t(s') on the states that hit g
    with probability 1. It is a quasimetric (T_g <= T_w + T_g o theta_{T_w}), but it is the
    hitting time of the data policy, which a time-gap regression on trajectories does not give.
    """
    S = P_pi.shape[0]
    reach = _reachability(P_pi > 0)
    times = np.full((S, S), np.inf)
    for g in range(S):
        # a state hits g a.s. iff it cannot reach a state that cannot reach g
        cannot = ~reach[:, g]
        sure = ~(reach[:, cannot].any(axis=1))
        sure[g] = False
        idx = np.flatnonzero(sure)
        if idx.size:
            A = np.eye(idx.size) - P_pi[np.ix_(idx, idx)]
            times[idx, g] = np.linalg.solve(A, np.ones(idx.size))
        times[g, g] = 0.0
    return times


def conditional_hitting_time(P_pi: np.ndarray, gamma: float) -> np.ndarray:
    """E_s[T_g | T_g < L], L ~ Geometric(1 - gamma) on {1, 2, ...}: the hitting time given success.

    = E_s[T_g gamma^T_g] / E_s[gamma^T_g] = gamma d/dgamma log E_s[gamma^T_g]
    = gamma [(M P M)(s, g) / M(s, g) - (M P M)(g, g) / M(g, g)], using dM/dgamma = M P M.
    The exact counterpart of `mean_time_gap(first_visit=True)` on episodes of geometric length.
    Conditioning on reaching makes a rarely reached w look near (1 step if it is ever hit
    at once), so d(s, g) > d(s, w) + d(w, g) happens: see the tests' lucky shortcut.
    """
    M = successor_matrix(P_pi, gamma)
    ratio = _time_weighted(P_pi, M, gamma)
    return ratio - np.diag(ratio)[None, :]


def discounted_time_gap(P_pi: np.ndarray, gamma: float) -> np.ndarray:
    """E[K | s_K = g, s_0 = s], K ~ Geometric(1 - gamma) on {0, 1, ...}: the mean future offset.

    = sum_k k gamma^k P_pi^k(s, g) / M(s, g) = gamma (M P M)(s, g) / M(s, g): what regressing the
    offset between (s_t, s_{t+K}) learns, the counterpart of `mean_time_gap(first_visit=False)`.
    """
    return _time_weighted(P_pi, successor_matrix(P_pi, gamma), gamma)


def _time_weighted(P_pi: np.ndarray, M: np.ndarray, gamma: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gamma * (M @ P_pi @ M) / M
    return np.where(M > 0, ratio, np.inf)


def mean_time_gap(
    episodes: Iterable[Mapping[str, np.ndarray]], n_states: int, *, first_visit: bool = True
) -> np.ndarray:
    """The mean time between s and a later g in the data, shape (S, S); NaN where never seen.

    For each time t of each episode and each state g visited at some t' >= t: first_visit=True
    averages t' - t for the first such t' (an empirical hitting time, d(s, s) = 0);
    first_visit=False averages over every such t' (all future offsets).
    """
    total = np.zeros((n_states, n_states))
    count = np.zeros((n_states, n_states))
    for episode in episodes:
        s = np.asarray(episode["states"], dtype=np.int64)
        L = len(s)
        if first_visit:
            first = np.full((L + 1, n_states), -1, dtype=np.int64)  # first t' >= t at g
            for t in range(L - 1, -1, -1):
                first[t] = first[t + 1]
                first[t, s[t]] = t
            t_idx, g = np.nonzero(first[:L] >= 0)
            gap = first[t_idx, g] - t_idx
            rows = s[t_idx]
        else:
            t_idx, t2 = np.triu_indices(L)
            rows, g, gap = s[t_idx], s[t2], t2 - t_idx
        np.add.at(total, (rows, g), gap)
        np.add.at(count, (rows, g), 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1.0), np.nan)


def _reachability(adjacent: np.ndarray) -> np.ndarray:
    """Reflexive-transitive closure of a boolean adjacency matrix by repeated squaring."""
    reach = adjacent | np.eye(adjacent.shape[0], dtype=bool)
    while True:
        nxt = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
        if (nxt == reach).all():
            return reach
        reach = nxt


@dataclasses.dataclass(frozen=True)
class QuasimetricCheck:
    """Violations of the quasimetric properties by a distance matrix D[s, g].

    negative: entries D[s, g] < -tol (over all S^2 entries); diagonal: |D[s, s]| > tol (over S);
    triangle: D[s, g] > D[s, w] + D[w, g] + tol over all S^3 triples (s, w, g) whose three
    entries are not NaN (NaN = unknown; +inf is allowed). tol is absolute (see check_quasimetric).
    """

    n_states: int
    n_negative: int
    n_diagonal: int
    n_triangle: int
    n_entries: int
    n_triples: int
    max_triangle_excess: float  # max of D[s,g] - D[s,w] - D[w,g] over violating triples, or 0

    @property
    def frac_negative(self) -> float:
        return self.n_negative / max(self.n_entries, 1)

    @property
    def frac_diagonal(self) -> float:
        return self.n_diagonal / max(self.n_states, 1)

    @property
    def frac_triangle(self) -> float:
        return self.n_triangle / max(self.n_triples, 1)

    @property
    def ok(self) -> bool:
        return self.n_negative == self.n_diagonal == self.n_triangle == 0


def check_quasimetric(D: np.ndarray, tol: float = 1e-9, *, chunk: int = 2**22) -> QuasimetricCheck:
    """Count violations of non-negativity, d(s, s) = 0 and the triangle inequality in D.

    `tol` is relative to the scale of D: an entry or triple violates only by more than
    tol * max(1, max finite |D|). The triangle check is vectorised over all S^3 triples,
    in blocks of rows of about `chunk` triples to bound memory.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square matrix; got shape {D.shape}")
    S = D.shape[0]
    finite = D[np.isfinite(D)]
    atol = tol * max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
    known = ~np.isnan(D)
    n_negative = int((D[known] < -atol).sum())
    diag = np.diag(D)
    n_diagonal = int((np.abs(diag[~np.isnan(diag)]) > atol).sum())
    n_triangle = n_triples = 0
    worst = 0.0
    rows = max(1, chunk // max(S * S, 1))
    for lo in range(0, S, rows):
        d_sg = D[lo : lo + rows, None, :]  # (r, 1, g)
        with np.errstate(invalid="ignore"):  # inf - inf on unreachable pairs is not a violation
            excess = d_sg - (D[lo : lo + rows, :, None] + D[None, :, :])  # (r, w, g)
        valid = known[lo : lo + rows, None, :] & known[lo : lo + rows, :, None] & known[None]
        n_triples += int(valid.sum())
        bad = valid & (excess > atol)
        n_triangle += int(bad.sum())
        if bad.any():
            worst = max(worst, float(excess[bad].max()))
    return QuasimetricCheck(
        n_states=S,
        n_negative=n_negative,
        n_diagonal=n_diagonal,
        n_triangle=n_triangle,
        n_entries=int(known.sum()),
        n_triples=n_triples,
        max_triangle_excess=worst,
    )


def exact_distances(mdp: TabularMDP, gamma: float) -> dict[str, np.ndarray]:
    """Every exact candidate temporal distance of `mdp` under its behaviour policy, by name.

    successor_distance (the quasimetric), successor_distance_strict (d_SD from the strictly
    future occupancy, k >= 1), neg_log_occupancy (-log p_gamma, k >= 0), neg_log_occupancy_strict,
    expected_hitting_time, conditional_hitting_time, discounted_time_gap.
    """
    P_pi = transition_matrix(mdp)
    occ = discounted_occupancy(mdp, gamma)
    occ_strict = discounted_occupancy(mdp, gamma, include_current=False)
    with np.errstate(invalid="ignore"):  # 0/0 return probabilities give NaN ("unknown")
        strict = successor_distance(occ_strict)
    return {
        "successor_distance": successor_distance(occ),
        "successor_distance_strict": strict,
        "neg_log_occupancy": neg_log_occupancy(occ),
        "neg_log_occupancy_strict": neg_log_occupancy(occ_strict),
        "expected_hitting_time": expected_hitting_time(P_pi),
        "conditional_hitting_time": conditional_hitting_time(P_pi, gamma),
        "discounted_time_gap": discounted_time_gap(P_pi, gamma),
    }
