"""The simulated user of Yang et al. 2024, shared by trajectory improvement and reward learning.

The official code (USC-Lira/language-preference-learning @120990d) simulates a user with a
hidden linear reward over the 5 trajectory features (`data/utils.py`), in this order:

    0 gt_reward, 1 speed, 2 height, 3 distance_to_bottle, 4 distance_to_cube.

- **True weights.** w ~ N(0, I) (`initialize_reward` in `model_analysis/improve_trajectory.py`,
  which also flips signs at random; N(0, 1) is symmetric, so that changes nothing).
- **Feature scaling.** Improvement min-max normalises the features over its pool (the test
  trajectories; `improve_trajectory.py`); reward learning standardises them with the mean and
  standard deviation over train and test together (`pref_learning/pref_based_learning.py`).
  `normalise` and `standardise` do each, with the statistics passed in or taken from `feats`.
- **Which feature.** Comparing the current trajectory with a target (the optimum), the user
  names feature k with probability softmax_k(w_k (f_target,k - f_cur,k)); in argmax mode the
  largest w_k (f_target,k - f_cur,k) (`get_lang_feedback_aspect` in `pref_learning/utils.py`;
  `get_lang_feedback` in `improve_trajectory.py` takes the argmax of its absolute value).
- **Which direction.** sign(f_target,k - f_cur,k): "more of k" when the target has more.
  A tie (no difference, e.g. the current trajectory is the target) says "more" (+1).
  The original's improvement user does not look at the sign: it always says "greater" unless
  the feature is on a hard-coded list (`less_idx = [2]`, height, whose values it flips to
  1 - value so that "greater" means lower), so its direction can contradict the optimum. We use
  the sign everywhere, as the original's reward-learning user does (ties there say "less").

Utterance embeddings come by class: a class is (k, direction) with direction +1 ("more of
feature k": "Move faster.") or -1 ("less": "Move slower."), 10 classes for 5 features, and
`UtteranceEmbeddings` maps each class to an (n_c, d) array of the embeddings of its
utterances in one split, d the latent size (384 for MiniLM).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from alignlab.core.errors import AlignlabError, check_choice

FEATURE_NAMES = ("gt_reward", "speed", "height", "distance_to_bottle", "distance_to_cube")
N_FEATURES = len(FEATURE_NAMES)
MODES = ("softmax", "argmax")

UtteranceClass = tuple[int, int]
"""(feature index k, direction +1 for "more of k" / -1 for "less of k")."""

UtteranceEmbeddings = Mapping[UtteranceClass, np.ndarray]
"""Class (k, direction) -> (n_c, d) embeddings of that class's utterances in one split."""


def utterance_classes(n_features: int = N_FEATURES) -> list[UtteranceClass]:
    """All 2 * n_features classes: (0, +1), (0, -1), (1, +1), ..."""
    return [(k, s) for k in range(n_features) for s in (1, -1)]


def check_mode(mode: str) -> str:
    """`mode` itself, or one AlignlabError listing the valid modes."""
    return check_choice("user mode", mode, MODES)


def check_utterances(
    utt: UtteranceEmbeddings, n_features: int = N_FEATURES, dim: int | None = None
) -> dict[UtteranceClass, np.ndarray]:
    """The embeddings as float64 (n_c, d) arrays, after checking that every class of
    `utterance_classes(n_features)` is there with at least one utterance and that all share
    the latent size `dim` (when given). One AlignlabError names every problem found."""
    problems = []
    out: dict[UtteranceClass, np.ndarray] = {}
    missing = [c for c in utterance_classes(n_features) if c not in utt]
    if missing:
        problems.append(f"missing classes {missing}")
    for c in utterance_classes(n_features):
        if c not in utt:
            continue
        e = np.asarray(utt[c], dtype=np.float64)
        if e.ndim != 2 or len(e) == 0:
            problems.append(f"class {c} needs an (n_c >= 1, d) array, got shape {e.shape}")
            continue
        if dim is not None and e.shape[1] != dim:
            problems.append(f"class {c} has embeddings of size {e.shape[1]}, not {dim}")
            continue
        out[c] = e
    if problems:
        raise AlignlabError("utterance embeddings: " + "; ".join(problems))
    return out


def true_weights(rng: np.random.Generator, n_features: int = N_FEATURES) -> np.ndarray:
    """The user's hidden reward weights, w ~ N(0, I_n)."""
    return rng.standard_normal(n_features)


def normalise(
    feats: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None
) -> np.ndarray:
    """Min-max scaling (feats - lo) / (hi - lo) per feature; lo and hi default to the minimum
    and maximum over the rows of `feats` (the pool). A constant feature (hi == lo) scales to 0."""
    feats = np.asarray(feats, dtype=np.float64)
    lo = feats.min(axis=0) if lo is None else np.asarray(lo, dtype=np.float64)
    hi = feats.max(axis=0) if hi is None else np.asarray(hi, dtype=np.float64)
    span = hi - lo
    return np.where(span > 0, (feats - lo) / np.where(span > 0, span, 1.0), 0.0)


def standardise(
    feats: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """z-scores (feats - mean) / std per feature, the statistics defaulting to those over the
    rows of `feats` (population std, as numpy's default). A constant feature scales to 0."""
    feats = np.asarray(feats, dtype=np.float64)
    mean = feats.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    std = feats.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
    return np.where(std > 0, (feats - mean) / np.where(std > 0, std, 1.0), 0.0)


def linear_reward(feats_scaled: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The user's reward before rescaling: feats_scaled @ w."""
    return np.asarray(feats_scaled, dtype=np.float64) @ np.asarray(w, dtype=np.float64)


def true_reward(feats_norm: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The user's reward feats_norm @ w rescaled to [0, 1] over the rows passed, so over the
    pool that `feats_norm` holds: 0 for that pool's worst trajectory, 1 for its best (the
    original's `improve_trajectory`, which rescales over the test pool). All zeros when every
    trajectory of the pool has the same reward."""
    r = linear_reward(feats_norm, w)
    span = r.max() - r.min()
    return (r - r.min()) / span if span > 0 else np.zeros_like(r)


def feature_probs(w: np.ndarray, f_target: np.ndarray, f_cur: np.ndarray) -> np.ndarray:
    """softmax_k(w_k (f_target,k - f_cur,k)): the probability that the user names feature k.
    `f_cur` is one feature vector (K,) or a batch (n, K); the result has its shape."""
    u = np.asarray(w, dtype=np.float64) * (
        np.asarray(f_target, dtype=np.float64) - np.asarray(f_cur, dtype=np.float64)
    )
    u = u - u.max(axis=-1, keepdims=True)
    p = np.exp(u)
    return p / p.sum(axis=-1, keepdims=True)


def choose_many(
    rng: np.random.Generator,
    w: np.ndarray,
    f_target: np.ndarray,
    f_cur: np.ndarray,
    mode: str = "softmax",
) -> tuple[np.ndarray, np.ndarray]:
    """The user's choices for a batch of current trajectories `f_cur` (n, K) against one target
    `f_target` (K,): feature indices k (n,) and directions (n,) in {+1, -1}.

    softmax: k drawn from `feature_probs` (one uniform per row, inverse CDF); argmax: the
    largest w_k (f_target,k - f_cur,k), the first on ties. Direction: sign(f_target,k - f_cur,k),
    +1 on a tie."""
    check_mode(mode)
    f_cur = np.atleast_2d(np.asarray(f_cur, dtype=np.float64))
    f_target = np.asarray(f_target, dtype=np.float64)
    if mode == "softmax":
        cdf = np.cumsum(feature_probs(w, f_target, f_cur), axis=-1)
        u = rng.random(len(f_cur))[:, None]
        k = np.minimum((u >= cdf).sum(axis=-1), f_cur.shape[1] - 1)
    else:
        k = np.argmax(np.asarray(w, dtype=np.float64) * (f_target - f_cur), axis=-1)
    diff = f_target[k] - f_cur[np.arange(len(f_cur)), k]
    direction = np.where(diff < 0, -1, 1)
    return k.astype(np.int64), direction.astype(np.int64)


def choose(
    rng: np.random.Generator,
    w: np.ndarray,
    f_target: np.ndarray,
    f_cur: np.ndarray,
    mode: str = "softmax",
) -> tuple[int, int]:
    """One choice (k, direction) for one current trajectory `f_cur` (K,); see `choose_many`."""
    k, direction = choose_many(rng, w, f_target, np.asarray(f_cur)[None, :], mode)
    return int(k[0]), int(direction[0])


def sample_utterance(
    rng: np.random.Generator, utt: UtteranceEmbeddings, cls: UtteranceClass
) -> np.ndarray:
    """A uniformly random utterance embedding (d,) of class `cls`."""
    e = utt[cls]
    return np.asarray(e[rng.integers(len(e))], dtype=np.float64)
