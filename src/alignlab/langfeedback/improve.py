"""Iterative trajectory improvement by retrieval in the shared latent space (Yang et al. 2024).

After the official `model_analysis/improve_trajectory.py` and `model_analysis/find_nearest_traj.py`
(USC-Lira/language-preference-learning @120990d). No trajectory is generated: the pool of
trajectories is fixed (the test pool), and language moves the current one to another member.

One trial, with the user's true weights w (`user.true_weights`):

1. The features are min-max normalised over the pool and the true reward `user.true_reward` is
   rescaled to [0, 1] over the same pool. The trial starts from the worst trajectory (reward 0);
   the optimum is the best one (reward 1).
2. Each iteration the user compares the current trajectory with the optimum and names a class
   (k, direction) (`user.choose`), then says a random utterance of that class from the split
   given (its embedding e_l).
3. The next trajectory is argmax over j != cur of cos(Phi_j, Phi_cur + e_l). The current
   trajectory is masked to -inf before the argmax. The original (`get_nearest_embed`,
   metric "cosine") instead `np.delete`s the current entry, so the index it returns is shifted
   by one for every trajectory after the current one, and its `if index:` skips the exclusion
   when the current index is 0; we fix both.
4. `accept="better"` (the original) keeps the retrieved trajectory only if its true reward is
   higher; `accept="always"` always moves to it.
5. Once the optimum is reached the user is satisfied and the trial stays there, as the original
   does (it fills the remaining iterations with the optimal value).

Controls, with the same acceptance rule: `control="random_utterance"` retrieves with an utterance
of a uniformly random class (then a uniformly random utterance of it), whatever the user would
say; `control="random_trajectory"` moves to a uniformly random other trajectory of the pool.

The curve of a trial is the normalised true reward of the current trajectory at iterations
0..n_iter; `run_trials` stacks 100 of them (10 iterations each, as the original).
"""

from __future__ import annotations

import numpy as np

from alignlab.core.errors import AlignlabError, check_choice
from alignlab.langfeedback.user import (
    UtteranceEmbeddings,
    check_mode,
    check_utterances,
    choose,
    normalise,
    sample_utterance,
    true_reward,
    true_weights,
)

ACCEPT = ("better", "always")
CONTROLS = (None, "random_utterance", "random_trajectory")


def _check_choice(name: str, value: object, valid: tuple) -> None:
    check_choice(name, value, valid)


def _check_pool(phi: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    phi = np.asarray(phi, dtype=np.float64)
    feats = np.asarray(feats, dtype=np.float64)
    if phi.ndim != 2 or feats.ndim != 2 or len(phi) != len(feats) or len(phi) < 2:
        raise AlignlabError(
            "improvement needs phi (N, d) and feats (N, K) of the same N >= 2 trajectories, "
            f"got shapes {phi.shape} and {feats.shape}"
        )
    return phi, feats


def _unit_rows(phi: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(phi, axis=1, keepdims=True)
    return phi / np.maximum(norm, np.finfo(np.float64).tiny)


def _retrieve(phi_unit: np.ndarray, phi: np.ndarray, cur: int, e_l: np.ndarray) -> int:
    # cos(Phi_j, q) ranks j as Phi_j / |Phi_j| . q does: |q| is the same for every j
    sims = phi_unit @ (phi[cur] + e_l)
    sims[cur] = -np.inf
    return int(np.argmax(sims))


def retrieve(phi: np.ndarray, cur: int, e_l: np.ndarray) -> int:
    """argmax over j != cur of cos(Phi_j, Phi_cur + e_l), the current trajectory masked to
    -inf (whatever its index, 0 included); the first index on ties."""
    phi = np.asarray(phi, dtype=np.float64)
    if not 0 <= cur < len(phi) or len(phi) < 2:
        raise AlignlabError(f"current index {cur} is not one of {len(phi)} >= 2 trajectories")
    return _retrieve(_unit_rows(phi), phi, int(cur), np.asarray(e_l, dtype=np.float64))


def _trial(
    phi: np.ndarray,
    phi_unit: np.ndarray,
    feats_norm: np.ndarray,
    utt: dict,
    w: np.ndarray,
    rng: np.random.Generator,
    n_iter: int,
    accept: str,
    control: str | None,
    mode: str,
) -> np.ndarray:
    reward = true_reward(feats_norm, w)
    opt, cur = int(np.argmax(reward)), int(np.argmin(reward))
    classes = sorted(utt)
    curve = np.empty(n_iter + 1)
    curve[0] = reward[cur]
    n = len(phi)
    for it in range(1, n_iter + 1):
        if reward[cur] < reward[opt]:
            if control == "random_trajectory":
                nxt = (cur + int(rng.integers(1, n))) % n  # uniform over j != cur
            else:
                if control == "random_utterance":
                    cls = classes[int(rng.integers(len(classes)))]
                else:
                    cls = choose(rng, w, feats_norm[opt], feats_norm[cur], mode)
                nxt = _retrieve(phi_unit, phi, cur, sample_utterance(rng, utt, cls))
            if accept == "always" or reward[nxt] > reward[cur]:
                cur = nxt
        curve[it] = reward[cur]
    return curve


def improve(
    phi: np.ndarray,
    feats: np.ndarray,
    utt: UtteranceEmbeddings,
    w: np.ndarray,
    *,
    rng: np.random.Generator,
    n_iter: int = 10,
    accept: str = "better",
    control: str | None = None,
    mode: str = "softmax",
) -> np.ndarray:
    """One improvement trial on a pool: `phi` (N, d) latent embeddings, `feats` (N, K) raw
    features, `utt` the utterance embeddings of one split by class, `w` (K,) the user's true
    weights. Returns the normalised true reward (over the pool) of the current trajectory at
    iterations 0..n_iter, shape (n_iter + 1,)."""
    _check_choice("accept", accept, ACCEPT)
    _check_choice("control", control, CONTROLS)
    check_mode(mode)
    phi, feats = _check_pool(phi, feats)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (feats.shape[1],):
        raise AlignlabError(f"w has shape {w.shape}, features have {feats.shape[1]} columns")
    utt = check_utterances(utt, feats.shape[1], phi.shape[1])
    return _trial(
        phi, _unit_rows(phi), normalise(feats), utt, w, rng, n_iter, accept, control, mode
    )


def run_trials(
    phi: np.ndarray,
    feats: np.ndarray,
    utt: UtteranceEmbeddings,
    *,
    rng: np.random.Generator,
    n_trials: int = 100,
    n_iter: int = 10,
    accept: str = "better",
    control: str | None = None,
    mode: str = "softmax",
) -> np.ndarray:
    """`n_trials` trials of `improve`, each with its own true weights w ~ N(0, I): an array
    (n_trials, n_iter + 1) of normalised true rewards.

    All weights are drawn from `rng` first, then each trial gets its own generator spawned from
    `rng`, so the same seed gives the same users and the same per-trial streams whatever
    `accept`, `control` and `mode` are: the method and its controls are paired trial by trial."""
    _check_choice("accept", accept, ACCEPT)
    _check_choice("control", control, CONTROLS)
    check_mode(mode)
    phi, feats = _check_pool(phi, feats)
    utt = check_utterances(utt, feats.shape[1], phi.shape[1])
    weights = [true_weights(rng, feats.shape[1]) for _ in range(n_trials)]
    streams = rng.spawn(n_trials)
    phi_unit, feats_norm = _unit_rows(phi), normalise(feats)
    out = np.empty((n_trials, n_iter + 1))
    for t in range(n_trials):
        out[t] = _trial(
            phi, phi_unit, feats_norm, utt, weights[t], streams[t], n_iter, accept, control, mode
        )
    return out
