"""Reward learning from comparative language feedback, against Bradley-Terry comparisons
(Yang et al. 2024; the official `pref_learning/pref_based_learning.py` and
`pref_learning/utils.py`, USC-Lira/language-preference-learning @120990d).

**Reward.** r(tau) = w^T Phi(tau) on the frozen latent Phi, no bias, w_0 ~ N(0, 0.001^2 I)
(`RewardFunc` with `init_weights_with_norm_one`).

**The user.** Its true reward is w*^T f~ with w* ~ N(0, I) and f~ the features standardised
with the mean and standard deviation over the train and test pools together, the original's
scaling (`scaling="zscore"`; `"minmax"` scales to [0, 1] over the same rows instead).

**Language queries** (`lang_pref_learning`). Each query is a uniformly random train trajectory;
the user compares it with the best train trajectory (the original uses the optimal trajectory
of an SAC policy trained on the true reward, which no pool here has), names (k, direction) as
`user.choose_many` does (softmax by default, argmax with `mode="argmax"`), and says a random
train utterance of that class, e_l. With Q queries so far the loss is

    L = mean_q -log sigma(w^T e_l,q)                                        (the language term)
      + c * mean_{q, o} -log sigma((w^T e_l,q - w^T e_o,q) / T_q,o),   T = sigma(5 cos(e_l, e_o))

where e_o,q are `n_other` = 20 train utterances about the features other than k (both
directions), drawn without replacement per query (with replacement when fewer exist), and c =
`other_coef` (the original's `--lang-loss-coeff`, 1). `use_lang` and `use_other` switch the two
terms off for the ablations (`--use-lang-pref`, `--use-other-feedback`).

**Comparisons** (`comp_pref_learning`). Each query is a uniformly random pair (a, b) of distinct
train trajectories, labelled 1 when b has the higher true reward (0 on ties, the original's
`true_a < true_b`), or, with `labels="boltzmann"`, 1 with probability sigma(r*_b - r*_a). The
loss is the 2-way cross-entropy on the logits [r_a, r_b], `nn.CrossEntropyLoss`.

**Protocols.** After each query, `steps_per_query` (the original's `--num-iterations`, 1) SGD
steps on the mean loss over all the data so far. The paper protocol uses lr 0.01 (language) and
0.008 (comparisons), the learning rates of the runs the official `plots/plot_pref_learning.py`
draws; the tuned protocol picks each method's lr from `LR_GRID` on validation reward seeds
(`select_lr`).

**Metrics**, on all pairs i < j of the test pool (19,900 for 200 trajectories):

- CE: the original's `evaluate`, `nn.BCELoss()(softmax([l_a, l_b]), softmax([r*_a, r*_b]))`,
  which for two outcomes is -(p_a log q_a + p_b log q_b) with p = softmax(true), q =
  softmax(learned); it is ln 2 for w = 0 whatever the true rewards. We compute it in float64
  through softplus; the original's float32 and BCELoss's clamp of log at -100 differ only for
  learned reward gaps beyond 100.
- Pearson r between the learned and true rewards over the test pool (nan while the learned
  reward is constant, e.g. at w = 0).
- The true reward of the learned argmax over the test pool, rescaled to [0, 1] over that pool
  (the original's `get_optimal_traj` reports it unscaled).

Every curve has n_queries + 1 entries, index 0 being before any query. The original runs 101
queries (`if it > 100: break`); the number here is `n_queries`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from alignlab.core.errors import AlignlabError, check_choice
from alignlab.core.resources import torch_threads
from alignlab.langfeedback.user import (
    UtteranceEmbeddings,
    check_mode,
    check_utterances,
    choose_many,
    linear_reward,
    normalise,
    standardise,
    true_weights,
    utterance_classes,
)

METHODS = ("language", "comparisons")
PROTOCOLS = ("paper", "tuned")
LABELS = ("deterministic", "boltzmann")
SCALINGS = ("zscore", "minmax")
PAPER_LR = {"language": 0.01, "comparisons": 0.008}
#: The learning rates of the official Meta-World curves (`plots/plot_pref_learning.py` loads
#: `lang_noisy_lr_0.006_…_lang_pref` and `comp_noisy_lr_0.0006_…`).
PAPER_LR_METAWORLD = {"language": 0.006, "comparisons": 0.0006}


def paper_lr(world: str = "reach_lift") -> dict[str, float]:
    """The paper protocol's learning rates for a world: Meta-World's, or robosuite's (which
    our reach-lift world stands in for)."""
    check_choice("world", world, ("reach_lift", "metaworld"))
    return PAPER_LR_METAWORLD if world == "metaworld" else PAPER_LR


LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
N_OTHER = 20
W0_STD = 1e-3
CURVES = ("ce", "pearson", "reward", "w_norm")


def _check(name: str, value: object, valid: Iterable[str]) -> None:
    check_choice(name, value, valid)


# ---------------------------------------------------------------------------------- losses


def other_temperature(e_l: torch.Tensor, e_other: torch.Tensor) -> torch.Tensor:
    """T = sigma(5 cos(e_l, e_o)) for e_l (Q, d) and e_other (Q, M, d): shape (Q, M)."""
    dot = torch.einsum("qd,qmd->qm", e_l, e_other)
    norms = e_l.norm(dim=1, keepdim=True) * e_other.norm(dim=2)
    return torch.sigmoid(5.0 * dot / norms.clamp_min(1e-8))


def language_loss(
    w: torch.Tensor,
    e_l: torch.Tensor,
    e_other: torch.Tensor | None = None,
    temp: torch.Tensor | None = None,
    *,
    use_lang: bool = True,
    use_other: bool = True,
    other_coef: float = 1.0,
) -> torch.Tensor:
    """The language loss on Q queries: mean_q -log sigma(w^T e_l,q) (if `use_lang`) plus
    `other_coef` * mean_{q,o} -log sigma((w^T e_l,q - w^T e_o,q) / T_q,o) (if `use_other`).

    e_l (Q, d) are the utterances given, e_other (Q, M, d) the other-feature utterances and
    temp (Q, M) their temperatures (computed by `other_temperature` when not given)."""
    if not (use_lang or use_other):
        raise AlignlabError("the language loss needs use_lang or use_other")
    s = e_l @ w
    loss = w.new_zeros(())
    if use_lang:
        loss = loss - F.logsigmoid(s).mean()
    if use_other:
        if e_other is None:
            raise AlignlabError("use_other needs the other-feedback utterances e_other")
        if temp is None:
            temp = other_temperature(e_l, e_other)
        loss = loss - other_coef * F.logsigmoid((s.unsqueeze(1) - e_other @ w) / temp).mean()
    return loss


def bt_loss(
    w: torch.Tensor, phi_a: torch.Tensor, phi_b: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Bradley-Terry: the mean 2-way cross-entropy on the logits [r_a, r_b], r = Phi w, with
    label 1 when b is preferred: mean of softplus(r_a - r_b) for label 1 and softplus(r_b -
    r_a) for label 0, which is `nn.CrossEntropyLoss` on those logits."""
    margin = phi_b @ w - phi_a @ w  # r_b - r_a
    sign = 2.0 * labels.to(margin.dtype) - 1.0  # +1 when b is preferred
    return F.softplus(-sign * margin).mean()


# --------------------------------------------------------------------------------- metrics


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def pair_ce(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The original's CE, the mean over all pairs i < j of the test pool of
    BCE(softmax([l_i, l_j]), softmax([t_i, t_j])) = -(p_i log q_i + p_j log q_j).

    `learned` is (N,) or a stack (R, N) of learned rewards, `true` (N,) the true rewards; the
    result is a float or (R,). Exactly ln 2 where the learned reward is constant."""
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    i, j = _pairs(true.shape[-1])
    p = 1.0 / (1.0 + np.exp(-(true[i] - true[j])))  # softmax([t_i, t_j])[0]
    cols = np.ascontiguousarray(np.atleast_2d(learned).T)  # (N, R): row gathers are fast
    d = cols[i] - cols[j]  # (pairs, R), l_i - l_j
    # -log q_i = softplus(-d) = softplus(d) - d and -log q_j = softplus(d)
    softplus = np.maximum(d, 0.0) + np.log1p(np.exp(-np.abs(d)))  # 4x faster than logaddexp
    out = np.mean(softplus - p[:, None] * d, axis=0)
    return out if learned.ndim > 1 else out[0]


def pearson(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r between each row of `learned` ((N,) or (R, N)) and `true` (N,); nan for a
    constant row."""
    learned = np.asarray(learned, dtype=np.float64)
    lc = np.atleast_2d(learned) - np.atleast_2d(learned).mean(axis=1, keepdims=True)
    tc = np.asarray(true, dtype=np.float64) - np.mean(true)
    den = np.linalg.norm(lc, axis=1) * np.linalg.norm(tc)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (lc @ tc) / np.where(den > 0, den, 1.0), np.nan)
    return r if learned.ndim > 1 else r[0]


def evaluate(
    w_hist: np.ndarray, phi_test: np.ndarray, true_test: np.ndarray
) -> dict[str, np.ndarray]:
    """The metric curves of learned weights `w_hist` (R, d) on the test pool `phi_test` (N, d)
    with the user's unscaled true rewards `true_test` (N,): CE, Pearson r, the [0, 1]-rescaled
    true reward of the learned argmax, and |w|."""
    w_hist = np.atleast_2d(np.asarray(w_hist, dtype=np.float64))
    learned = w_hist @ np.asarray(phi_test, dtype=np.float64).T  # (R, N)
    true_test = np.asarray(true_test, dtype=np.float64)
    span = true_test.max() - true_test.min()
    norm = (true_test - true_test.min()) / span if span > 0 else np.zeros_like(true_test)
    return {
        "ce": pair_ce(learned, true_test),
        "pearson": pearson(learned, true_test),
        "reward": norm[np.argmax(learned, axis=1)],
        "w_norm": np.linalg.norm(w_hist, axis=1),
    }


# -------------------------------------------------------------------------------- learning


def _scale(feats_train: np.ndarray, feats_test: np.ndarray, scaling: str):
    both = np.concatenate([feats_train, feats_test])
    if scaling == "zscore":
        mean, std = both.mean(axis=0), both.std(axis=0)
        return standardise(feats_train, mean, std), standardise(feats_test, mean, std)
    lo, hi = both.min(axis=0), both.max(axis=0)
    return normalise(feats_train, lo, hi), normalise(feats_test, lo, hi)


def _language_data(rng, utt, f_train, r_train, w_true, n_queries, mode, use_other, n_other):
    target = int(np.argmax(r_train))
    cur = rng.integers(len(f_train), size=n_queries)
    ks, dirs = choose_many(rng, w_true, f_train[target], f_train[cur], mode)
    d = next(iter(utt.values())).shape[1]
    e_l = np.empty((n_queries, d))
    for q in range(n_queries):  # the utterances first, so the ablations share them
        pool = utt[(int(ks[q]), int(dirs[q]))]
        e_l[q] = pool[rng.integers(len(pool))]
    if not use_other:
        return torch.from_numpy(e_l), None, None
    n_feat = f_train.shape[1]
    others = {
        k: np.concatenate([utt[c] for c in utterance_classes(n_feat) if c[0] != k])
        for k in range(n_feat)
    }
    e_o = np.empty((n_queries, n_other, d))
    for q in range(n_queries):
        pool = others[int(ks[q])]
        e_o[q] = pool[rng.choice(len(pool), n_other, replace=len(pool) < n_other)]
    e_l_t, e_o_t = torch.from_numpy(e_l), torch.from_numpy(e_o)
    return e_l_t, e_o_t, other_temperature(e_l_t, e_o_t)


def learn(
    method: str,
    phi_train: np.ndarray,
    feats_train: np.ndarray,
    phi_test: np.ndarray,
    feats_test: np.ndarray,
    utt_train: UtteranceEmbeddings,
    w_true: np.ndarray,
    n_queries: int,
    lr: float,
    rng: np.random.Generator,
    *,
    mode: str = "softmax",
    use_lang: bool = True,
    use_other: bool = True,
    n_other: int = N_OTHER,
    other_coef: float = 1.0,
    labels: str = "deterministic",
    steps_per_query: int = 1,
    scaling: str = "zscore",
    w0_std: float = W0_STD,
) -> dict[str, np.ndarray]:
    """Learn r = w^T Phi from `n_queries` language queries or comparisons (see the module
    docstring) and return the metric curves on the test pool, each of length n_queries + 1:
    "ce", "pearson", "reward" (normalised true reward of the learned argmax) and "w_norm".

    `phi_*` (N, d) are the frozen embeddings, `feats_*` (N, K) the raw features, `utt_train`
    the train utterance embeddings by class, `w_true` (K,) the user's weights. From `rng`, w_0
    is drawn first, so both methods start from the same w_0 for the same seed."""
    _check("method", method, METHODS)
    _check("labels", labels, LABELS)
    _check("scaling", scaling, SCALINGS)
    check_mode(mode)
    if n_queries < 0 or steps_per_query < 1 or not lr > 0:
        raise AlignlabError(
            f"need n_queries >= 0, steps_per_query >= 1 and lr > 0, got {n_queries}, "
            f"{steps_per_query}, {lr}"
        )
    if method == "language" and not (use_lang or use_other):
        raise AlignlabError("the language method needs use_lang or use_other (or both)")
    if method == "language" and use_other and n_other < 1:
        raise AlignlabError(f"use_other needs n_other >= 1 other utterances, got {n_other}")
    phi_train = np.asarray(phi_train, dtype=np.float64)
    phi_test = np.asarray(phi_test, dtype=np.float64)
    feats_train = np.asarray(feats_train, dtype=np.float64)
    feats_test = np.asarray(feats_test, dtype=np.float64)
    w_true = np.asarray(w_true, dtype=np.float64)
    d, n_feat = phi_train.shape[1], feats_train.shape[1]
    if (
        len(phi_train) != len(feats_train)
        or len(phi_test) != len(feats_test)
        or phi_test.shape[1] != d
        or feats_test.shape[1] != n_feat
        or w_true.shape != (n_feat,)
        or len(phi_train) < 2
        or len(phi_test) < 2
    ):
        raise AlignlabError(
            "reward learning needs phi_train (N, d), feats_train (N, K), phi_test (M, d), "
            f"feats_test (M, K) and w_true (K,); got {phi_train.shape}, {feats_train.shape}, "
            f"{phi_test.shape}, {feats_test.shape}, {w_true.shape}"
        )
    if method == "language":
        utt_train = check_utterances(utt_train, n_feat, d)

    f_train, f_test = _scale(feats_train, feats_test, scaling)
    r_train, r_test = linear_reward(f_train, w_true), linear_reward(f_test, w_true)
    w0 = rng.normal(0.0, w0_std, size=d)

    if method == "language":
        e_l, e_o, temp = _language_data(
            rng, utt_train, f_train, r_train, w_true, n_queries, mode, use_other, n_other
        )

        def loss_fn(w: torch.Tensor, q: int) -> torch.Tensor:
            return language_loss(
                w,
                e_l[:q],
                None if e_o is None else e_o[:q],
                None if temp is None else temp[:q],
                use_lang=use_lang,
                use_other=use_other,
                other_coef=other_coef,
            )
    else:
        n = len(phi_train)
        a = rng.integers(n, size=n_queries)
        b = (a + rng.integers(1, n, size=n_queries)) % n  # uniform over b != a
        gap = r_train[b] - r_train[a]
        if labels == "deterministic":
            y = gap > 0
        else:
            y = rng.random(n_queries) < 1.0 / (1.0 + np.exp(-gap))
        phi_t = torch.from_numpy(phi_train)
        pa, pb, yt = phi_t[a], phi_t[b], torch.from_numpy(y.astype(np.int64))

        def loss_fn(w: torch.Tensor, q: int) -> torch.Tensor:
            return bt_loss(w, pa[:q], pb[:q], yt[:q])

    w = torch.tensor(w0, requires_grad=True)
    w_hist = np.empty((n_queries + 1, d))
    w_hist[0] = w0
    with torch_threads(1):  # tiny tensors: extra threads only add overhead
        for q in range(1, n_queries + 1):
            for _ in range(steps_per_query):
                (grad,) = torch.autograd.grad(loss_fn(w, q), w)
                with torch.no_grad():
                    w -= lr * grad
            w_hist[q] = w.detach().numpy()
    return evaluate(w_hist, phi_test, r_test)


# --------------------------------------------------------------------------- seeds and lr


def run_seed(
    method: str,
    seed: int,
    phi_train: np.ndarray,
    feats_train: np.ndarray,
    phi_test: np.ndarray,
    feats_test: np.ndarray,
    utt_train: UtteranceEmbeddings,
    n_queries: int,
    lr: float,
    **options,
) -> dict[str, np.ndarray]:
    """`learn` for reward seed `seed`: rng = default_rng(seed), w* = true_weights(rng), then
    w_0 and the queries from the same rng. Both methods see the same user for a seed."""
    rng = np.random.default_rng(seed)
    w_true = true_weights(rng, np.asarray(feats_train).shape[1])
    return learn(
        method,
        phi_train,
        feats_train,
        phi_test,
        feats_test,
        utt_train,
        w_true,
        n_queries,
        lr,
        rng,
        **options,
    )


def select_lr(
    method: str,
    phi_train: np.ndarray,
    feats_train: np.ndarray,
    phi_val: np.ndarray,
    feats_val: np.ndarray,
    utt_train: UtteranceEmbeddings,
    seeds: Iterable[int],
    n_queries: int,
    *,
    lrs: Iterable[float] = LR_GRID,
    at: int | None = None,
    avoid_seeds: Iterable[int] = (),
    **options,
) -> tuple[float, dict[float, float]]:
    """The tuned protocol: the lr of `lrs` with the lowest mean CE over the validation reward
    `seeds` (`run_seed` on the pool `phi_val`/`feats_val`), and every lr's score.

    The score of one run is its CE at query `at`, or by default the mean CE over queries
    1..n_queries. Ties go to the first lr of `lrs`. `seeds` must not meet `avoid_seeds` (the
    test seeds): an AlignlabError names the shared ones."""
    _check("method", method, METHODS)
    seeds = [int(s) for s in seeds]
    shared = sorted(set(seeds) & {int(s) for s in avoid_seeds})
    if shared:
        raise AlignlabError(f"validation reward seeds {shared} are also test seeds")
    if not seeds:
        raise AlignlabError("select_lr needs at least one validation reward seed")
    if n_queries < 1:
        raise AlignlabError(f"select_lr needs n_queries >= 1, got {n_queries}")
    if at is not None and not 0 <= at <= n_queries:
        raise AlignlabError(f"at={at} is not a query count in 0..{n_queries}")
    scores: dict[float, float] = {}
    for lr in lrs:
        ce = [
            run_seed(
                method,
                s,
                phi_train,
                feats_train,
                phi_val,
                feats_val,
                utt_train,
                n_queries,
                lr,
                **options,
            )["ce"]
            for s in seeds
        ]
        ce = np.asarray(ce)
        scores[float(lr)] = float(ce[:, at].mean() if at is not None else ce[:, 1:].mean())
    best = min(scores, key=lambda lr: scores[lr])  # first on ties: dicts keep order
    return best, scores


def protocol_lr(method: str, protocol: str = "paper", **select_kwargs) -> float:
    """A method's lr under a protocol: the paper's (`PAPER_LR`), or the tuned one
    (`select_lr(method, **select_kwargs)`)."""
    _check("method", method, METHODS)
    _check("protocol", protocol, PROTOCOLS)
    if protocol == "paper":
        return PAPER_LR[method]
    return select_lr(method, **select_kwargs)[0]
