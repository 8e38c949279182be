"""Elo scores from side-by-side ratings: Bradley-Terry MLE, clustered bootstrap CIs, win rates.

Imagen 3 (Imagen Team 2024, Sec. 3.1) reports each aspect x prompt set as Elo scores with 99 %
confidence intervals and a pairwise win-rate matrix. Here:

- **Model.** Bradley-Terry: P(i preferred to j) = sigmoid(theta_i - theta_j). A tie counts as
  half a win for each side, i.e. the log-likelihood is
  sum_ij W_ij log sigmoid(theta_i - theta_j) with W_ij = wins of i over j + ties / 2.
  Scaling all weights by a constant leaves the MLE unchanged, so this fit equals the plain
  fit on duplicated data where every win appears twice and every tie once in each direction.
- **Scale.** Elo = 1000 + (400 / ln 10) * (theta - mean theta): a 400-point gap means 10:1 odds;
  scores are centred on 1000.
- **Solver.** Newton's method on the concave log-likelihood, batched over any number of
  problems at once (a (B, M, M) tensor of weighted wins). The Hessian is a weighted graph
  Laplacian, singular along the all-ones direction; we solve (L + 11^T) step = gradient,
  which picks the centred step (the centring constraint), and halve steps that would lower the
  likelihood. Convergence is quadratic: 5-10 iterations to 1e-10 nats. The MLE exists iff the
  "beat" graph (i -> j when i won or tied against j at least once) is strongly connected; else
  a ValueError asks for `prior` > 0, which adds prior / 2 virtual wins each way to every pair
  (a tiny shrinkage towards equal scores).
- **Bootstrap.** Resample prompts with replacement (within each prompt set), take all of their
  ratings: one (B, P) count matrix times the per-prompt win tensors (P, M, M) gives every
  resample's wins at once, and the batched Newton fits all B resamples together (no Python
  loop over resamples). CIs are percentile intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

from .sxs import Rating

ELO_SCALE = 400.0 / math.log(10.0)
ELO_MEAN = 1000.0


def _model_index(models: Sequence[str]) -> dict[str, int]:
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"need at least two models, got {models}")
    if len(set(models)) != len(models):
        raise ValueError(f"model names must be distinct, got {models}")
    return {m: i for i, m in enumerate(models)}


def comparisons(
    data: Any, models: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(winner, loser, weight, cluster, stratum) arrays from ratings or arrays.

    `data` is a sequence of rated `Rating`s (a tie becomes two rows of weight 1/2; the cluster
    is the prompt (set, prompt_id), the stratum its set), or a tuple of arrays
    (winner, loser[, weight[, cluster]]) of model indices into `models` (weights default to 1;
    clusters default to one per row; one stratum).
    """
    index = _model_index(models)
    m = len(index)
    if isinstance(data, tuple) and 2 <= len(data) <= 4 and not isinstance(data[0], Rating):
        w = np.asarray(data[0])
        lo = np.asarray(data[1])
        if w.shape != lo.shape or w.ndim != 1:
            raise ValueError("winner and loser must be 1-D arrays of the same length")
        if w.size and (w.min() < 0 or lo.min() < 0 or w.max() >= m or lo.max() >= m):
            raise ValueError(f"model indices must lie in 0..{m - 1}")
        if np.any(w == lo):
            raise ValueError("a comparison needs two different models (winner == loser)")
        wt = np.ones(w.shape) if len(data) < 3 else np.asarray(data[2], dtype=np.float64)
        if wt.shape != w.shape or np.any(wt < 0) or not np.all(np.isfinite(wt)):
            raise ValueError("weights must be finite, non-negative and one per comparison")
        if len(data) == 4:
            _, cl = np.unique(np.asarray(data[3]), return_inverse=True)
            if cl.shape != w.shape:
                raise ValueError("cluster ids must be one per comparison")
        else:
            cl = np.arange(w.size)
        return (w.astype(np.int64), lo.astype(np.int64), wt, cl.ravel(), np.zeros(w.size, np.int64))
    win, los, wt, keys = [], [], [], []
    for i, r in enumerate(data):
        if not isinstance(r, Rating):
            raise ValueError(
                f"item {i} is a {type(r).__name__}; pass Ratings or (winner, loser, weight) arrays"
            )
        for name in (r.model_a, r.model_b):
            if name not in index:
                raise ValueError(f"rating {i}: unknown model {name!r}; models: {', '.join(index)}")
        a, b = index[r.model_a], index[r.model_b]
        if r.choice == "left":
            win.append(a), los.append(b), wt.append(1.0), keys.append((r.set, r.prompt_id))
        elif r.choice == "right":
            win.append(b), los.append(a), wt.append(1.0), keys.append((r.set, r.prompt_id))
        elif r.choice == "tie":
            win += [a, b]
            los += [b, a]
            wt += [0.5, 0.5]
            keys += [(r.set, r.prompt_id)] * 2
        else:
            raise ValueError(f"rating {i} ({r.study}) has no choice: run the study first")
    uniq = {k: j for j, k in enumerate(dict.fromkeys(keys))}
    sets = {s: j for j, s in enumerate(dict.fromkeys(k[0] for k in uniq))}
    cl = np.array([uniq[k] for k in keys], dtype=np.int64)
    stratum_of_cluster = np.array([sets[k[0]] for k in uniq], dtype=np.int64)
    return (
        np.array(win, np.int64),
        np.array(los, np.int64),
        np.array(wt),
        cl,
        stratum_of_cluster[cl] if cl.size else cl,
    )


def wins_matrix(data: Any, models: Sequence[str]) -> np.ndarray:
    """W[i, j] = wins of model i over model j, ties counted as 1/2 to each side."""
    w, lo, wt, _, _ = comparisons(data, models)
    out = np.zeros((len(models), len(models)))
    np.add.at(out, (w, lo), wt)
    return out


def win_rate_matrix(data: Any, models: Sequence[str]) -> np.ndarray:
    """R[i, j] = share of i-vs-j ratings won by i, ties as half wins (R + R^T = 1); NaN on the
    diagonal and for pairs never compared (Sec. 3.1's pairwise win-rate matrix)."""
    w = wins_matrix(data, models)
    n = w + w.T
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(n > 0, w / np.where(n > 0, n, 1.0), np.nan)
    np.fill_diagonal(r, np.nan)
    return r


def _strongly_connected(w: np.ndarray) -> np.ndarray:
    """(B,) bool: whether each (M, M) beat graph (i -> j when w[i, j] > 0) is strongly connected."""
    m = w.shape[-1]
    reach = ((w > 0) | np.eye(m, dtype=bool)).astype(np.float64)
    for _ in range(max(1, math.ceil(math.log2(m)))):
        reach = ((reach @ reach) > 0).astype(np.float64)
    return reach.reshape(reach.shape[0], -1).all(axis=1)


def _loglik(w: np.ndarray, theta: np.ndarray) -> np.ndarray:
    d = theta[:, :, None] - theta[:, None, :]
    return (w * log_expit(d)).sum(axis=(1, 2))


def fit_theta_batch(
    wins: np.ndarray, *, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 100
) -> np.ndarray:
    """Bradley-Terry MLE (natural log-odds scale, centred) for a batch of (B, M, M) win tensors.

    Newton's method with the centring constraint and step halving (see the module docstring).
    """
    w = np.array(wins, dtype=np.float64)
    squeeze = w.ndim == 2
    if squeeze:
        w = w[None]
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise ValueError(f"wins must have shape (M, M) or (B, M, M), got {np.shape(wins)}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    b, m, _ = w.shape
    eye = np.eye(m, dtype=bool)
    w[:, eye] = 0.0
    if prior > 0:
        w = w + (prior / 2.0) * (~eye)
    ok = _strongly_connected(w)
    if not ok.all():
        raise ValueError(
            f"{int((~ok).sum())} of {b} win tensors have no finite Bradley-Terry MLE (some model "
            "never beats, or never loses to, the rest); pass prior > 0 to regularise"
        )
    n = w + w.transpose(0, 2, 1)
    theta = np.zeros((b, m))
    ll = _loglik(w, theta)
    ones = np.ones((m, m))
    for _ in range(max_iter):
        p = expit(theta[:, :, None] - theta[:, None, :])
        grad = (w - n * p).sum(axis=2)
        h = n * p * (1.0 - p)
        lap = -h
        lap[:, eye] = h.sum(axis=2)
        step = np.linalg.solve(lap + ones, grad[..., None])[..., 0]
        t = np.ones(b)
        new = theta + step
        ll_new = _loglik(w, new)
        for _ in range(40):  # step halving where the likelihood would drop
            bad = ll_new < ll - 1e-12 * (1.0 + np.abs(ll))
            if not bad.any():
                break
            t[bad] *= 0.5
            new[bad] = theta[bad] + t[bad, None] * step[bad]
            ll_new[bad] = _loglik(w[bad], new[bad])
        done = np.max(np.abs(t[:, None] * step)) < tol
        theta, ll = new, ll_new
        if done:
            break
    theta -= theta.mean(axis=1, keepdims=True)
    return theta[0] if squeeze else theta


def to_elo(theta: np.ndarray) -> np.ndarray:
    """Natural log-odds strengths -> Elo (400 / ln 10 per nat, mean 1000)."""
    theta = np.asarray(theta, dtype=np.float64)
    return ELO_MEAN + ELO_SCALE * (theta - theta.mean(axis=-1, keepdims=True))


def bradley_terry(
    data: Any, models: Sequence[str], *, prior: float = 0.0, tol: float = 1e-10
) -> np.ndarray:
    """Elo scores (in `models` order) of the Bradley-Terry MLE on all ratings, ties as half wins.

    `data`: rated `Rating`s, or arrays (winner, loser[, weight]) of indices into `models`.
    """
    return to_elo(fit_theta_batch(wins_matrix(data, models), prior=prior, tol=tol))


def elo_from_wins(wins: np.ndarray, *, prior: float = 0.0, tol: float = 1e-10) -> np.ndarray:
    """Elo scores for one (M, M) or a batch (B, M, M) of weighted win tensors."""
    return to_elo(fit_theta_batch(wins, prior=prior, tol=tol))


def cluster_wins(data: Any, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster win tensors C (K, M, M) and each cluster's stratum (K,): the bootstrap's units
    (a cluster is a prompt, a stratum its prompt set)."""
    w, lo, wt, cl, st = comparisons(data, models)
    k = int(cl.max()) + 1 if cl.size else 0
    m = len(models)
    c = np.zeros((k, m, m))
    np.add.at(c, (cl, w, lo), wt)
    strata = np.zeros(k, dtype=np.int64)
    strata[cl] = st
    return c, strata


def resample_counts(strata: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, K) counts: how often each cluster is drawn when every stratum's clusters are
    resampled with replacement to their own number."""
    strata = np.asarray(strata)
    counts = np.zeros((n, strata.size), dtype=np.int64)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        counts[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n)
    return counts


@dataclass(frozen=True)
class EloCI:
    """Elo point estimates on all ratings, percentile bootstrap CIs and the resampled scores."""

    models: tuple[str, ...]
    elo: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    level: float
    samples: np.ndarray  # (n, M) bootstrap Elo scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "n_boot": int(self.samples.shape[0]),
            "elo": {
                m: {"elo": float(e), "lo": float(a), "hi": float(b)}
                for m, e, a, b in zip(self.models, self.elo, self.lo, self.hi)
            },
        }

    def disjoint(self, a: str, b: str) -> bool:
        """Whether the CIs of models a and b do not overlap."""
        i, j = self.models.index(a), self.models.index(b)
        return bool(self.lo[i] > self.hi[j] or self.lo[j] > self.hi[i])


def bootstrap_elo(
    data: Any,
    models: Sequence[str],
    n: int = 1000,
    level: float = 0.99,
    rng: np.random.Generator | None = None,
    *,
    prior: float = 0.0,
) -> EloCI:
    """Elo with `level` percentile CIs from `n` bootstrap resamples clustered by prompt.

    Prompts are resampled with replacement within each prompt set and all their ratings taken
    (Sec. 3.1 reports 99 % CIs). All resamples are fitted at once (batched Newton). For arrays
    (winner, loser, weight, cluster), the 4th array gives the clusters.
    """
    if rng is None:
        raise ValueError("bootstrap_elo needs rng: a numpy Generator")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    c, strata = cluster_wins(data, models)
    if c.shape[0] == 0:
        raise ValueError("no ratings to bootstrap")
    elo = to_elo(fit_theta_batch(c.sum(axis=0), prior=prior))
    counts = resample_counts(strata, n, rng)
    m = len(models)
    w = (counts.astype(np.float64) @ c.reshape(c.shape[0], m * m)).reshape(n, m, m)
    samples = to_elo(fit_theta_batch(w, prior=prior))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a], axis=0)
    return EloCI(tuple(models), elo, lo, hi, float(level), samples)


bootstrap_ci = bootstrap_elo  # the name used in the package's interface notes
