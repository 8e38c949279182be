"""The simulated user and trajectory improvement by retrieval (Yang et al. 2024;
official `model_analysis/improve_trajectory.py` and `find_nearest_traj.py`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import improve, user


def perfect_latent(n=200, n_features=5, d=8, seed=0, offset=1.0):
    """Phi = features embedded linearly (orthonormal rows Q), utterances = +-Q[k]."""
    rng = np.random.default_rng(seed)
    feats = rng.random((n, n_features))
    q, _ = np.linalg.qr(rng.standard_normal((d, n_features)))
    q = q.T
    phi = (feats + offset) @ q
    utt = {(k, s): (s * q[k])[None, :] for k in range(n_features) for s in (1, -1)}
    return phi, feats, utt


def brute_force_retrieve(phi, cur, e_l):
    query = phi[cur] + e_l
    best, best_cos = None, -np.inf
    for j in range(len(phi)):
        if j == cur:
            continue
        cos = phi[j] @ query / (np.linalg.norm(phi[j]) * np.linalg.norm(query))
        if cos > best_cos:
            best, best_cos = j, cos
    return best


def original_retrieve(phi, cur, e_l):
    """The official `get_nearest_embed(..., metric="cosine")`, bugs included."""
    cos = phi @ (phi[cur] + e_l) / (np.linalg.norm(phi, axis=1) * np.linalg.norm(phi[cur] + e_l))
    if cur:
        cos = np.delete(cos, cur)
    return int(np.argmax(cos))


# ------------------------------------------------------------------------------- retrieval


def test_retrieval_masks_the_current_trajectory_index_0_included():
    # the query Phi_0 + e_l is closest to Phi_0 itself; the next closest is trajectory 2
    phi = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [1.0, -0.5]])
    e_l = np.array([0.0, 0.01])
    assert original_retrieve(phi, 0, e_l) == 0  # the original returns the current trajectory
    assert improve.retrieve(phi, 0, e_l) == 2


def test_retrieval_index_is_not_shifted_after_the_current_one():
    # from trajectory 1, "more of the second axis" leads to trajectory 3
    phi = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.6]])
    e_l = np.array([0.0, 0.5])
    assert improve.retrieve(phi, 1, e_l) == 3
    assert original_retrieve(phi, 1, e_l) == 2  # np.delete shifted the index by one


def test_retrieval_equals_brute_force_cosine_argmax():
    rng = np.random.default_rng(3)
    for _ in range(50):
        phi = rng.standard_normal((30, 6))
        cur = int(rng.integers(30))
        e_l = rng.standard_normal(6)
        assert improve.retrieve(phi, cur, e_l) == brute_force_retrieve(phi, cur, e_l)


# ------------------------------------------------------------------------------------ user


def test_user_feature_frequencies_match_the_softmax():
    rng = np.random.default_rng(0)
    w = np.array([1.5, -0.7, 0.3, 2.0, -1.2])
    f_target = np.array([0.9, 0.2, 0.5, 0.7, 0.1])
    f_cur = np.array([0.1, 0.6, 0.4, 0.5, 0.3])
    probs = user.feature_probs(w, f_target, f_cur)
    u = w * (f_target - f_cur)
    np.testing.assert_allclose(probs, np.exp(u) / np.exp(u).sum())
    n = 20_000
    k, direction = user.choose_many(rng, w, f_target, np.tile(f_cur, (n, 1)))
    counts = np.bincount(k, minlength=5)
    assert chisquare(counts, n * probs).pvalue > 0.001
    # the direction is the sign of the gap to the target
    np.testing.assert_array_equal(direction, np.where(f_target[k] > f_cur[k], 1, -1))
    # the one-trajectory form draws from the same distribution
    single = [user.choose(rng, w, f_target, f_cur)[0] for _ in range(3_000)]
    assert chisquare(np.bincount(single, minlength=5), 3_000 * probs).pvalue > 0.001


def test_user_argmax_mode_and_tie_direction():
    rng = np.random.default_rng(0)
    w = np.array([1.0, -2.0, 0.5])
    k, direction = user.choose(
        rng, w, np.array([0.5, 0.0, 0.5]), np.array([0.4, 0.5, 0.5]), "argmax"
    )
    assert (k, direction) == (1, -1)  # w_1 * (0 - 0.5) = +1 is the largest, and it says "less"
    # at the target itself every gap is 0: a tie says "more"
    f = np.array([0.3, 0.3, 0.3])
    assert user.choose(rng, w, f, f, "argmax") == (0, 1)


def test_true_reward_is_rescaled_over_the_pool():
    rng = np.random.default_rng(1)
    feats = rng.random((40, 5)) * [1, 10, 100, 2, 3]
    fn = user.normalise(feats)
    assert fn.min() == 0.0 and fn.max() == 1.0
    r = user.true_reward(fn, user.true_weights(rng))
    assert r.min() == 0.0 and r.max() == 1.0
    np.testing.assert_allclose(user.standardise(feats).mean(axis=0), 0.0, atol=1e-12)


# ----------------------------------------------------------------------------- improvement


def test_improvement_with_a_perfect_latent_beats_the_random_trajectory_control():
    phi, feats, utt = perfect_latent()
    final = {}
    for accept in ("better", "always"):
        for control in (None, "random_trajectory"):
            curves = improve.run_trials(
                phi,
                feats,
                utt,
                rng=np.random.default_rng(1),
                n_trials=30,
                accept=accept,
                control=control,
            )
            assert curves.shape == (30, 11)
            assert np.all(curves[:, 0] == 0.0)  # every trial starts from the worst trajectory
            if accept == "better":
                assert np.all(np.diff(curves, axis=1) >= 0)
            final[accept, control] = curves[:, -1].mean()
    assert final["better", None] > final["better", "random_trajectory"] + 0.05
    assert final["always", None] > final["always", "random_trajectory"] + 0.1
    assert final["better", None] > 0.9


def test_trials_are_seeded_and_paired():
    phi, feats, utt = perfect_latent(n=60)
    a = improve.run_trials(phi, feats, utt, rng=np.random.default_rng(5), n_trials=5, n_iter=4)
    b = improve.run_trials(phi, feats, utt, rng=np.random.default_rng(5), n_trials=5, n_iter=4)
    np.testing.assert_array_equal(a, b)
    # the users (true weights) are the same under a control: same first-iteration start
    rng = np.random.default_rng(5)
    w = [user.true_weights(rng) for _ in range(5)]
    one = improve.improve(phi, feats, utt, w[0], rng=rng.spawn(5)[0], n_iter=4)
    np.testing.assert_array_equal(one, a[0])


def test_bad_inputs_give_one_error_listing_the_valid_values():
    phi, feats, utt = perfect_latent(n=20)
    rng = np.random.default_rng(0)
    with pytest.raises(AlignlabError, match="valid: better, always"):
        improve.run_trials(phi, feats, utt, rng=rng, accept="sometimes")
    with pytest.raises(AlignlabError, match="valid: None, random_utterance, random_trajectory"):
        improve.run_trials(phi, feats, utt, rng=rng, control="random")
    with pytest.raises(AlignlabError, match="valid: softmax, argmax"):
        improve.improve(phi, feats, utt, np.ones(5), rng=rng, mode="greedy")
    missing = {c: e for c, e in utt.items() if c != (2, -1)}
    with pytest.raises(AlignlabError, match=r"missing classes \[\(2, -1\)\]"):
        improve.run_trials(phi, feats, missing, rng=rng)
    with pytest.raises(AlignlabError, match="same N"):
        improve.run_trials(phi, feats[:-1], utt, rng=rng)


def test_the_arms_meet_the_same_users(monkeypatch):
    """The method and its controls are paired: the same seed gives the same true weights, in
    the same order, whatever the arm."""
    phi, feats, utt = perfect_latent()
    drawn = {}
    real = improve.true_weights

    for arm in (None, "random_utterance", "random_trajectory"):
        record = []
        monkeypatch.setattr(
            improve, "true_weights", lambda rng, n, r=record: r.append(real(rng, n)) or r[-1]
        )
        improve.run_trials(
            phi, feats, utt, rng=np.random.default_rng(7), n_trials=5, n_iter=2, control=arm
        )
        drawn[arm] = np.stack(record)
    assert np.array_equal(drawn[None], drawn["random_utterance"])
    assert np.array_equal(drawn[None], drawn["random_trajectory"])
    assert len(np.unique(drawn[None][:, 0])) == 5  # each trial its own user
