"""The latent space: Φ's mean-first form against the official per-step order, the alignment
loss (hand-worked case, float64 gradcheck), triplets, the accuracy measure and a stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import latent as L


def test_mean_first_equals_the_per_step_encoder_values_and_gradients():
    torch.manual_seed(0)
    enc = L.TrajEncoder().double()
    enc.set_normaliser(np.random.default_rng(0).normal(size=(5, 7, 24)) * 3 + 1)
    x = torch.randn(6, 11, 24, dtype=torch.float64)
    a, b = enc(x), enc.forward_per_step(x)
    assert torch.allclose(a, b, atol=1e-12)
    ga = torch.autograd.grad(a.square().sum(), list(enc.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(enc.parameters()))
    assert all(torch.allclose(u, v, atol=1e-10) for u, v in zip(ga, gb))


def test_the_loss_on_a_hand_worked_case():
    phi_a = torch.tensor([[0.0, 0.0]])
    phi_b = torch.tensor([[2.0, 0.0]])  # ‖Φ_b‖ = 2: the margin term adds 0.01 (2 - 1)
    e = torch.tensor([[0.5, 3.0]])  # (Φ_b - Φ_a)·e = 1
    want = -math.log(1 / (1 + math.exp(-1.0))) + 0.01 * 1.0
    assert float(L.alignment_loss(phi_a, phi_b, e)) == pytest.approx(want, abs=1e-6)
    # swapping a and b is the opposite statement: its loss is that of logit -1
    swapped = -math.log(1 / (1 + math.exp(1.0))) + 0.01
    assert float(L.alignment_loss(phi_b, phi_a, e)) == pytest.approx(swapped, abs=1e-6)


def test_the_loss_passes_a_float64_gradcheck():
    g = torch.Generator().manual_seed(1)
    args = [
        torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3)
    ]
    assert torch.autograd.gradcheck(L.alignment_loss, args)


def test_triplets_take_the_class_from_the_feature_difference_and_drop_ties():
    feats = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    utt_class = np.array([0, 1, 2, 3, 0, 2])
    rng = np.random.default_rng(0)
    a, b, u = L.sample_triplets(rng, feats, 4000, utt_class)
    assert len(a) < 4000  # pairs with a == b, or equal feature values, are dropped
    cls = utt_class[u]
    k, direction = cls // 2, np.where(cls % 2 == 0, 1, -1)
    assert np.all(np.sign(feats[b, k] - feats[a, k]) == direction)
    assert set(np.unique(cls)) == {0, 1, 2, 3}  # both directions of both features occur
    with pytest.raises(AlignlabError, match="valid: none, sigmoid"):
        L.sample_triplets(rng, feats, 10, utt_class, label_noise="gauss")
    with pytest.raises(AlignlabError, match="classes"):
        L.sample_triplets(rng, feats, 10, np.array([0, 1]))


def test_sigmoid_label_noise_follows_the_feature_difference():
    feats = np.array([[0.0], [1.0]])
    rng = np.random.default_rng(0)
    a, b, u = L.sample_triplets(rng, feats, 20000, np.array([0, 1]), "sigmoid", np.array([1.0]))
    up = (a == 0) & (b == 1)
    p = np.mean(u[up] == 0)  # class 0: "greater"
    assert p == pytest.approx(1 / (1 + math.exp(-1)), abs=0.02)


def test_accuracy_is_one_for_a_perfect_latent_and_half_for_a_random_one():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 3))
    emb = np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5]]  # class 2k: +e_k, 2k+1: -e_k
    utt_class = np.arange(6)
    r = L.pair_accuracy(feats, feats, emb, utt_class)
    assert r["accuracy"] == 1.0 and r["cases"] == 3 * 30 * 29
    rand = L.pair_accuracy(rng.normal(size=(30, 3)), feats, emb, utt_class)
    assert 0.3 < rand["accuracy"] < 0.7


def test_a_stage_learns_a_separable_toy_and_keeps_the_best_checkpoint():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n, T = 120, 4
    obs = rng.normal(size=(n, T, 24)).astype(np.float32)
    feats = obs[:, :, :2].mean(1).astype(float)  # two features, linear in the observations
    emb = rng.normal(size=(8, L.LATENT)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    utt_class = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    enc = L.TrajEncoder()
    enc.set_normaliser(obs)
    val = (obs[:40], feats[:40], emb, utt_class)
    before = L.pair_accuracy(enc(torch.as_tensor(obs[:40])).detach(), feats[:40], emb, utt_class)
    cfg = L.StageConfig(steps=150, lr=3e-3, triplets=256, trajectories=64, eval_every=25)
    out = L.train_stage(enc, None, obs, feats, emb, utt_class, val, cfg, rng)
    after = L.pair_accuracy(enc(torch.as_tensor(obs[:40])).detach(), feats[:40], emb, utt_class)
    assert after["accuracy"] > 0.9 > before["accuracy"]
    assert out["best_val_cos"] == max(c for _, c in out["val_cos"])
    assert after["cos"] == pytest.approx(out["best_val_cos"], abs=1e-5)


def test_the_adapter_starts_as_the_identity():
    ad = L.Adapter()
    e = torch.randn(3, L.LATENT)
    assert torch.equal(ad(e), e)


def test_the_latent_cache_key_follows_the_data(monkeypatch, tmp_path):
    """New sentences or another encoder's embeddings are a new latent space, never a stale one."""
    from alignlab.langfeedback.experiments import common as C

    lc = C.smoke_latent()
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    key = C.latent_key(lc, 0, 0)
    d = C.load_data(lc.data, 0)
    assert C.latent_key(lc, 0, 1) != key and C.latent_key(lc, 1, 0) != key
    emb = d.emb["train"]
    monkeypatch.setitem(d.emb, "train", emb + 1e-3)  # as if MiniLM or the sentences changed
    assert C.latent_key(lc, 0, 0) != key
    monkeypatch.setitem(d.emb, "train", emb)
    assert C.latent_key(lc, 0, 0) == key


def test_latent_training_is_deterministic_from_a_cold_cache(tmp_path, monkeypatch):
    from alignlab.core.run import RunSpec, execute

    results = []
    for i in range(2):
        monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / f"cache{i}"))
        out = tmp_path / f"run{i}"
        execute(RunSpec("langfeedback.latent", preset="smoke", out=str(out), quiet=True, threads=1))
        results.append((out / "results.json").read_bytes())
        weights = sorted((tmp_path / f"cache{i}").glob("langfeedback-latent/*/stage2.safetensors"))
        results.append(b"".join(w.read_bytes() for w in weights))
    assert results[0] == results[2] and results[1] == results[3] and results[1]
