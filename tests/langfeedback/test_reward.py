"""Reward learning from language and from comparisons (Yang et al. 2024; official
`pref_learning/pref_based_learning.py`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import reward

LN2 = math.log(2.0)


def perfect_latent(n_train=300, n_test=100, n_features=5, d=8, seed=0):
    """Phi = features embedded linearly (orthonormal rows Q); utterances = +-Q[k] (two
    slightly different lengths per class)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, n_features)))
    q = q.T
    ft, fs = rng.random((n_train, n_features)), rng.random((n_test, n_features))
    utt = {(k, s): np.stack([s * q[k], 0.9 * s * q[k]]) for k in range(n_features) for s in (1, -1)}
    return 3 * ft @ q, ft, 3 * fs @ q, fs, utt


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------- losses


def test_bt_loss_equals_cross_entropy_on_the_two_logits():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    pa = torch.randn(40, 6, generator=g, dtype=torch.float64)
    pb = torch.randn(40, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (40,), generator=g)
    expected = torch.nn.CrossEntropyLoss()(torch.stack([pa @ w, pb @ w], dim=1), labels)
    torch.testing.assert_close(reward.bt_loss(w, pa, pb, labels), expected)


def test_language_loss_hand_worked_case():
    # w = (2, -1), e_l = (0.5, 0.5): w.e_l = 0.5, loss = -log sigma(0.5) = log(1 + e^-0.5)
    w = torch.tensor([2.0, -1.0], dtype=torch.float64)
    e_l = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    loss = reward.language_loss(w, e_l, use_other=False)
    assert loss.item() == pytest.approx(0.474076984, abs=1e-9)
    # its gradient raises the reward of what was said
    (grad,) = torch.autograd.grad(reward.language_loss(w.requires_grad_(), e_l, use_other=False), w)
    assert grad @ e_l[0] < 0


def test_other_feedback_term_matches_a_hand_computation():
    w = torch.tensor([1.0, 0.5], dtype=torch.float64)
    e_l = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e_o = torch.tensor([[[0.0, 1.0], [-1.0, 1.0]]], dtype=torch.float64)
    # e_o1: cos 0, T = sigma(0) = 0.5, z = (1 - 0.5) / 0.5 = 1
    # e_o2: cos -1/sqrt(2), T = sigma(-5/sqrt(2)), z = (1 - (-0.5)) / T
    t2 = sigmoid(-5 / math.sqrt(2))
    other = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-1.5 / t2))) / 2
    torch.testing.assert_close(
        reward.other_temperature(e_l, e_o), torch.tensor([[0.5, t2]], dtype=torch.float64)
    )
    got = reward.language_loss(w, e_l, e_o, use_lang=False)
    assert got.item() == pytest.approx(other, rel=1e-12)
    both = reward.language_loss(w, e_l, e_o, other_coef=2.0)
    assert both.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 2 * other, rel=1e-12)


# --------------------------------------------------------------------------------- metrics


def test_ce_equals_the_original_bce_and_is_ln2_at_w_zero():
    rng = np.random.default_rng(0)
    learned, true = rng.standard_normal(12) * 2, rng.standard_normal(12) * 3
    bce = torch.nn.BCELoss()
    ref = []
    for i in range(12):
        for j in range(i + 1, 12):
            true_probs = torch.softmax(torch.tensor([true[i], true[j]]), dim=0)
            learned_probs = torch.softmax(torch.tensor([learned[i], learned[j]]), dim=0)
            ref.append(bce(learned_probs, true_probs).item())
    assert reward.pair_ce(learned, true) == pytest.approx(np.mean(ref), rel=1e-12)
    assert reward.pair_ce(np.stack([learned, learned]), true) == pytest.approx([np.mean(ref)] * 2)
    # w = 0: every pair is 50:50, whatever the true rewards
    phi = rng.standard_normal((12, 4))
    curves = reward.evaluate(np.zeros((3, 4)), phi, true)
    np.testing.assert_allclose(curves["ce"], LN2, rtol=1e-14)
    assert np.isnan(curves["pearson"]).all()


def test_pearson_and_argmax_reward():
    phi = np.eye(4)
    true = np.array([0.0, 1.0, 3.0, 2.0])
    curves = reward.evaluate(np.array([[0.0, 1.0, 3.0, 2.0], [3.0, 2.0, 0.0, 1.0]]), phi, true)
    np.testing.assert_allclose(curves["pearson"], [1.0, -1.0])
    np.testing.assert_allclose(curves["reward"], [1.0, 0.0])  # normalised over the pool


# -------------------------------------------------------------------------------- learning


@pytest.mark.parametrize("method", ["language", "comparisons"])
def test_learning_with_a_perfect_latent_lowers_ce_below_ln2(method):
    data = perfect_latent()
    for seed in (0, 1, 2):
        curves = reward.run_seed(method, seed, *data, 60, reward.PAPER_LR[method])
        assert set(curves) == set(reward.CURVES)
        assert all(len(c) == 61 for c in curves.values())
        assert curves["ce"][0] == pytest.approx(LN2, abs=1e-3)  # w_0 ~ N(0, 0.001^2)
        assert curves["ce"][-1] < LN2 - 0.03
        assert curves["pearson"][-1] > 0.5


def test_language_ablations_and_boltzmann_labels_learn():
    data = perfect_latent()
    for options in ({"use_lang": False}, {"use_other": False}, {"mode": "argmax"}):
        ce = reward.run_seed("language", 3, *data, 30, 0.1, **options)["ce"]
        assert ce[-1] < LN2 - 0.05, options
    ce = reward.run_seed("comparisons", 3, *data, 30, 0.1, labels="boltzmann")["ce"]
    assert ce[-1] < LN2 - 0.03


def test_runs_are_seeded_and_methods_share_w0():
    data = perfect_latent(n_train=50, n_test=30)
    a = reward.run_seed("language", 7, *data, 10, 0.01)
    b = reward.run_seed("language", 7, *data, 10, 0.01)
    c = reward.run_seed("comparisons", 7, *data, 10, 0.01)
    for key in reward.CURVES:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["ce"][0] == c["ce"][0] and a["ce"][1] != c["ce"][1]


def test_select_lr_picks_the_lowest_mean_ce():
    ptr, ftr, pva, fva, utt = perfect_latent(n_train=60, n_test=40)
    best, scores = reward.select_lr(
        "comparisons", ptr, ftr, pva, fva, utt, seeds=[100, 101], n_queries=10, lrs=(1e-3, 1e-1)
    )
    assert list(scores) == [1e-3, 1e-1] and best == min(scores, key=scores.get)
    assert best == 1e-1  # a larger step moves further from ln 2 in 10 queries
    assert reward.protocol_lr("language") == 0.01 and reward.protocol_lr("comparisons") == 0.008
    with pytest.raises(AlignlabError, match=r"seeds \[101\] are also test seeds"):
        reward.select_lr(
            "language", ptr, ftr, pva, fva, utt, seeds=[100, 101], n_queries=5, avoid_seeds=[101]
        )


def test_bad_inputs_give_one_error_listing_the_valid_values():
    data = perfect_latent(n_train=20, n_test=10)
    w = np.ones(5)
    rng = np.random.default_rng(0)
    with pytest.raises(AlignlabError, match="valid: language, comparisons"):
        reward.learn("lang", *data, w, 5, 0.01, rng)
    with pytest.raises(AlignlabError, match="valid: paper, tuned"):
        reward.protocol_lr("language", "fast")
    with pytest.raises(AlignlabError, match="valid: deterministic, boltzmann"):
        reward.learn("comparisons", *data, w, 5, 0.01, rng, labels="noisy")
    with pytest.raises(AlignlabError, match="valid: zscore, minmax"):
        reward.learn("comparisons", *data, w, 5, 0.01, rng, scaling="max")
    with pytest.raises(AlignlabError, match="use_lang or use_other"):
        reward.learn("language", *data, w, 5, 0.01, rng, use_lang=False, use_other=False)
