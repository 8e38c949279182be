"""Elo from side-by-side ratings (Imagen 3 Sec. 3.1): Bradley-Terry MLE, bootstrap CIs."""

import math

import choix
import numpy as np
import pytest

from alignlab.t2i.eval.elo import (
    ELO_SCALE,
    bootstrap_elo,
    bradley_terry,
    cluster_wins,
    elo_from_wins,
    fit_theta_batch,
    resample_counts,
    win_rate_matrix,
    wins_matrix,
)
from alignlab.t2i.eval.sxs import Rating, design_round_robin, run_study

MODELS = ("m0", "m1", "m2", "m3", "m4")


def _choix_elo(n_items, pairs):
    params = choix.ilsr_pairwise(n_items, pairs, tol=1e-12, max_iter=10_000)
    return 1000.0 + ELO_SCALE * (params - params.mean())


def _random_ratings(rng, n=1500, tie_p=0.2, theta=None):
    theta = rng.normal(0, 0.6, len(MODELS)) if theta is None else theta
    out = []
    for k in range(n):
        i, j = rng.choice(len(MODELS), 2, replace=False)
        u = rng.random()
        p = 1 / (1 + math.exp(-(theta[i] - theta[j])))
        choice = "tie" if u < tie_p else "left" if rng.random() < p else "right"
        out.append(Rating("s", "set", "overall", k % 40, MODELS[i], MODELS[j], choice, "r"))
    return out


def test_bradley_terry_equals_choix_ilsr():
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.7, 5)
    n = 2000
    i = rng.integers(0, 5, n)
    j = (i + rng.integers(1, 5, n)) % 5
    win = rng.random(n) < 1 / (1 + np.exp(-(theta[i] - theta[j])))
    w, lo = np.where(win, i, j), np.where(win, j, i)
    ours = bradley_terry((w, lo), MODELS)
    ref = _choix_elo(5, list(zip(w.tolist(), lo.tolist())))
    assert np.max(np.abs(ours - ref)) < 1e-6
    assert ours.mean() == pytest.approx(1000.0, abs=1e-9)
    assert np.ptp(ours) > 100  # a real spread, not a trivial fit


def test_half_win_ties_equal_fit_on_duplicated_data():
    """Ties as half wins == choix on data where every win appears twice and every tie once each
    way (all weights doubled, which leaves the MLE unchanged)."""
    rng = np.random.default_rng(1)
    ratings = _random_ratings(rng)
    assert sum(r.choice == "tie" for r in ratings) > 200
    idx = {m: k for k, m in enumerate(MODELS)}
    dup = []
    for r in ratings:
        a, b = idx[r.model_a], idx[r.model_b]
        if r.choice == "tie":
            dup += [(a, b), (b, a)]
        else:
            dup += [(idx[r.winner], idx[r.loser])] * 2
    ours = bradley_terry(ratings, MODELS)
    assert np.max(np.abs(ours - _choix_elo(5, dup))) < 1e-6
    # the same fit from weighted arrays: a tie = two rows of weight 1/2
    w, lo, wt = [], [], []
    for r in ratings:
        a, b = idx[r.model_a], idx[r.model_b]
        if r.choice == "tie":
            w += [a, b]
            lo += [b, a]
            wt += [0.5, 0.5]
        else:
            w.append(idx[r.winner])
            lo.append(idx[r.loser])
            wt.append(1.0)
    w, lo, wt = (np.array(x) for x in (w, lo, wt))
    assert np.allclose(bradley_terry((w, lo, wt), MODELS), ours, atol=1e-9)
    # and dropping the ties is a different fit (ties do pull scores together)
    no_ties = [r for r in ratings if r.choice != "tie"]
    assert np.ptp(bradley_terry(no_ties, MODELS)) > np.ptp(ours) + 1


def test_elo_scale_and_centring():
    # 10:1 odds between two models = 400 Elo points, centred on 1000
    elo = elo_from_wins(np.array([[0.0, 100.0], [10.0, 0.0]]))
    assert elo == pytest.approx([1200.0, 800.0], abs=1e-9)


def test_batched_fit_equals_single_fits():
    rng = np.random.default_rng(2)
    w = rng.integers(1, 50, size=(7, 4, 4)).astype(float)
    batch = fit_theta_batch(w)
    for b in range(7):
        assert np.allclose(batch[b], fit_theta_batch(w[b]), atol=1e-10)


def test_no_finite_mle_is_a_clear_error_and_prior_regularises():
    w = np.array([[0.0, 5.0, 3.0], [0.0, 0.0, 0.0], [1.0, 4.0, 0.0]])  # m1 never wins
    with pytest.raises(ValueError, match="no finite Bradley-Terry MLE.*prior"):
        elo_from_wins(w)
    elo = elo_from_wins(w, prior=0.1)
    assert np.all(np.isfinite(elo)) and np.argmin(elo) == 1


def test_win_rate_matrix():
    ratings = [
        Rating("s", "x", "overall", 0, "m0", "m1", "left"),
        Rating("s", "x", "overall", 1, "m1", "m0", "left"),
        Rating("s", "x", "overall", 2, "m1", "m0", "right"),
        Rating("s", "x", "overall", 3, "m0", "m1", "tie"),
    ]
    models = ["m0", "m1", "m2"]
    r = win_rate_matrix(ratings, models)
    assert r[0, 1] == pytest.approx(2.5 / 4) and r[1, 0] == pytest.approx(1.5 / 4)
    assert np.isnan(r[0, 2]) and np.isnan(r[0, 0])
    assert wins_matrix(ratings, models)[0, 1] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="unknown model 'm9'"):
        wins_matrix([Rating("s", "x", "overall", 0, "m0", "m9", "left")], models)


def _study_arrays(rng, elo, n_per_pair, n_prompts, tie_p):
    """Synthetic round robin whose expected half-win score is exactly sigmoid(theta_i - theta_j),
    so the population Bradley-Terry fit is the true Elo: P(tie) = tie_p, P(i wins) =
    sigmoid - tie_p / 2."""
    theta = (np.asarray(elo) - 1000) / ELO_SCALE
    m = len(elo)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    a = np.repeat([p[0] for p in pairs], n_per_pair)
    b = np.repeat([p[1] for p in pairs], n_per_pair)
    prompt = np.tile(np.arange(n_per_pair) % n_prompts, len(pairs))
    s = 1 / (1 + np.exp(-(theta[a] - theta[b])))
    u = rng.random(a.size)
    a_wins, tie = u < s - tie_p / 2, u >= 1 - tie_p
    w = np.concatenate([np.where(a_wins, a, b)[~tie], a[tie], b[tie]])
    lo = np.concatenate([np.where(a_wins, b, a)[~tie], b[tie], a[tie]])
    wt = np.concatenate([np.ones((~tie).sum()), np.full(2 * tie.sum(), 0.5)])
    cl = np.concatenate([prompt[~tie], prompt[tie], prompt[tie]])
    return w, lo, wt, cl


def test_bootstrap_99ci_covers_true_elo_in_200_studies():
    true = np.array([880.0, 960.0, 1040.0, 1120.0])
    models = [f"m{k}" for k in range(4)]
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(200):
        data = _study_arrays(rng, true, n_per_pair=300, n_prompts=50, tie_p=0.2)
        ci = bootstrap_elo(data, models, n=1000, level=0.99, rng=rng)
        covered.append((ci.lo <= true) & (true <= ci.hi))
        assert np.all(ci.lo <= ci.elo) and np.all(ci.elo <= ci.hi)
    covered = np.array(covered)
    assert covered.mean() >= 0.97, covered.mean(axis=0)
    assert covered.mean() < 1.0  # the intervals are not trivially wide


def test_bootstrap_is_vectorised_fit_of_the_resampled_prompts():
    rng = np.random.default_rng(4)
    ratings = _random_ratings(rng, n=800)
    ci = bootstrap_elo(ratings, MODELS, n=25, level=0.9, rng=np.random.default_rng(5))
    c, strata = cluster_wins(ratings, MODELS)
    counts = resample_counts(strata, 25, np.random.default_rng(5))
    assert c.shape[0] == 40 and counts.sum(axis=1).tolist() == [40] * 25
    for b in range(25):  # one resample = every rating of each drawn prompt, times its draws
        keep = [r for r in ratings for _ in range(counts[b, r.prompt_id])]
        assert np.allclose(ci.samples[b], bradley_terry(keep, MODELS), atol=1e-8)
    assert ci.elo == pytest.approx(bradley_terry(ratings, MODELS))


def test_clustering_by_prompt_widens_cis_when_prompts_matter():
    """Prompts with their own preferences make ratings of a prompt correlated: resampling whole
    prompts must give wider CIs than resampling single ratings."""
    rng = np.random.default_rng(6)
    n_prompts, per_prompt = 40, 60
    prompt = np.repeat(np.arange(n_prompts), per_prompt)
    lean = rng.normal(0, 1.5, n_prompts)[prompt]  # per-prompt preference of m0 over m1
    a_wins = rng.random(prompt.size) < 1 / (1 + np.exp(-lean))
    w, lo = np.where(a_wins, 0, 1), np.where(a_wins, 1, 0)
    wt = np.ones(w.size)
    models = ["m0", "m1"]
    by_prompt = bootstrap_elo((w, lo, wt, prompt), models, n=1000, rng=np.random.default_rng(7))
    by_rating = bootstrap_elo((w, lo, wt), models, n=1000, rng=np.random.default_rng(7))
    width = lambda ci: ci.hi[0] - ci.lo[0]  # noqa: E731
    assert width(by_prompt) > 1.8 * width(by_rating)


def test_side_shuffling_cancels_a_left_biased_rater():
    models = ["m0", "m1", "m2", "m3"]
    true = np.array([1000.0, 1000.0, 1000.0, 1000.0])
    bias = 1.0  # log-odds bonus for whatever is shown on the left (p = 0.73 between equals)

    def rate(rows, rng):
        idx = {m: k for k, m in enumerate(models)}
        a = np.array([idx[r.model_a] for r in rows])
        b = np.array([idx[r.model_b] for r in rows])
        d = (true[a] - true[b]) / ELO_SCALE + bias
        u = rng.random(len(rows))
        tie = u < 0.1
        return np.where(tie, 2, np.where(rng.random(len(rows)) < 1 / (1 + np.exp(-d)), 0, 1))

    sets = {"drawbench": list(range(200))}
    for shuffle, check in (
        (True, lambda e: np.max(np.abs(e - true)) < 20),
        (False, lambda e: e[0] - e[3] > 200),
    ):
        rng = np.random.default_rng(8)
        design = design_round_robin(models, ["alignment"], sets, 2500, rng, shuffle_sides=shuffle)
        ratings = run_study(design, lambda rows, rng=rng: rate(rows, rng))
        elo = bradley_terry(ratings, models)
        assert check(elo), (shuffle, elo)
