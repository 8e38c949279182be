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


# --- the language side: frozen, adapter, finetuned MiniLM (one torch thread: float sums are
# reproducible run to run only at a fixed thread count, and tiny batches run faster on one) ---


def _reference_stage(encoder, adapter, obs, feats, emb, utt_class, val, cfg, rng, noise):
    """The stage as a plain loop (the code before the `Language` interface): one Adam group of
    Φ's then the adapter's parameters, the same draws in the same order."""
    params = list(encoder.parameters()) + (list(adapter.parameters()) if adapter else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    lang = (lambda e: adapter(e)) if adapter is not None else (lambda e: e)
    x, e_all, feat_std = torch.as_tensor(obs), torch.as_tensor(emb), feats.std(0)

    def validate():
        encoder.eval()
        with torch.no_grad():
            v = lang(torch.as_tensor(val[2]))
            r = L.pair_accuracy(encoder(torch.as_tensor(val[0])), val[1], v, val[3])
        encoder.train()
        return r["cos"]

    def state():
        mods = {"encoder": encoder, **({"adapter": adapter} if adapter else {})}
        return {(m, k): v.clone() for m, mod in mods.items() for k, v in mod.state_dict().items()}

    best = validate()
    best_state, history = state(), [(0, best)]
    for step in range(cfg.steps):
        rows = rng.choice(len(x), size=min(cfg.trajectories, len(x)), replace=False)
        a, b, u = L.sample_triplets(rng, feats[rows], cfg.triplets, utt_class, noise, feat_std)
        phi = encoder(x[torch.as_tensor(rows)])
        loss = L.alignment_loss(phi[a], phi[b], lang(e_all[torch.as_tensor(u)]))
        for g in opt.param_groups:
            g["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            history.append((step + 1, validate()))
            if history[-1][1] > best:
                best, best_state = history[-1][1], state()
    encoder.load_state_dict({k: v for (m, k), v in best_state.items() if m == "encoder"})
    if adapter is not None:
        adapter.load_state_dict({k: v for (m, k), v in best_state.items() if m == "adapter"})
    return {"best_val_cos": best, "val_cos": history}


def _toy(seed=0, n=60, T=4, n_utt=10):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, T, 24)).astype(np.float32)
    feats = np.round(obs[:, :, :2].mean(1), 1).astype(float)  # rounded: ties occur
    emb = rng.normal(size=(n_utt, L.LATENT)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    utt_class = np.arange(n_utt) % 4
    return obs, feats, emb, utt_class


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("noise", ["none", "sigmoid"])
@pytest.mark.parametrize("side", ["frozen", "adapter", "frozen-kw", "adapter-kw"])
def test_frozen_and_adapter_sides_are_bit_identical_to_the_plain_loop(side, noise):
    obs, feats, emb, utt_class = _toy()
    val = (obs[:20], feats[:20], emb, utt_class)
    cfg = L.StageConfig(steps=9, lr=3e-3, triplets=128, trajectories=24, eval_every=2)
    runs = []
    for impl in ("reference", "train_stage"):
        torch.manual_seed(3)
        enc = L.TrajEncoder()
        enc.set_normaliser(obs)
        adapter = L.Adapter() if side.startswith("adapter") else None
        if adapter is not None:  # a non-zero start, so that the adapter's path matters
            torch.nn.init.normal_(adapter.fc2.weight, std=0.05)
        rng = np.random.default_rng(4)
        args = (obs, feats, emb, utt_class, val, cfg, rng, noise)
        if impl == "reference":
            out = _reference_stage(enc, adapter, *args)
        elif side.endswith("-kw"):  # the explicit form: emb and val[2] are not read
            lang = L.Adapted(emb, emb, adapter) if adapter is not None else L.Frozen(emb, emb)
            v = (val[0], val[1], None, val[3])
            out = L.train_stage(
                enc, None, obs, feats, None, utt_class, v, cfg, rng, noise, language=lang
            )
        else:
            out = L.train_stage(enc, adapter, *args)
        weights = dict(enc.state_dict()) | (
            {f"ad.{k}": v for k, v in adapter.state_dict().items()} if adapter else {}
        )
        runs.append((out, weights, rng.integers(0, 2**62, 4).tolist()))
    (ref, w_ref, draws_ref), (got, w_got, draws_got) = runs
    assert got == ref and draws_got == draws_ref
    assert w_got.keys() == w_ref.keys()
    assert all(torch.equal(w_got[k], w_ref[k]) for k in w_ref)


def test_train_stage_checks_its_language_arguments():
    obs, feats, emb, utt_class = _toy()
    val = (obs[:20], feats[:20], emb, utt_class)
    cfg = L.StageConfig(steps=1, triplets=8, trajectories=8)
    enc, rng = L.TrajEncoder(), np.random.default_rng(0)
    with pytest.raises(AlignlabError, match="not both"):
        L.train_stage(
            enc, L.Adapter(), obs, feats, emb, utt_class, val, cfg, rng,
            language=L.Frozen(emb, emb),
        )  # fmt: skip
    with pytest.raises(AlignlabError, match="utt_class has 9"):
        L.train_stage(enc, None, obs, feats, emb, utt_class[:9], val, cfg, rng)
    with pytest.raises(AlignlabError, match="lm_lr"):
        L.train_stage(enc, None, obs, feats, emb, utt_class, val, cfg, rng, lm_lr=-1.0)


@pytest.fixture(scope="module")
def finetune_problem():
    """24 trajectories of T = 6 from the world, one training and one validation utterance of
    each of the 10 classes, and MiniLM with its initial weights."""
    pytest.importorskip("transformers")
    from alignlab.langfeedback import minilm as M
    from alignlab.langfeedback import world as W
    from alignlab.langfeedback.utterances import CLASSES, build_splits

    wc = W.WorldConfig(horizon=6)
    traj = W.generate(24, np.random.default_rng(0), wc)
    obs, feats = traj.observations(), W.features(traj, wc)
    utt = build_splits(0)

    def pick(split):
        return [utt.get(split, c)[0] for c in CLASSES], np.arange(len(CLASSES))

    lm = M.MiniLMEncoder()
    init = {k: v.clone() for k, v in lm.state_dict().items()}
    return {"obs": obs, "feats": feats}, pick("train"), pick("val"), lm, init


def _finetune(problem, monkeypatch, cos=None, steps=3, lm_lr=1e-4, on_step=None):
    """One seeded Finetuned stage from MiniLM's initial weights: (Φ, result, Φ at init).
    `cos`, when given, replaces the validation cos at each validation (for the rule's test);
    `on_step(step, Φ)` runs after each optimiser step."""
    p, (tr, trc), (va, vac), lm, init = problem
    lm.load_state_dict(init)
    lm.eval()
    if cos is not None:
        seq, real = list(cos), L.pair_accuracy

        def fake(*args):
            return real(*args) | {"cos": seq.pop(0)}

        monkeypatch.setattr(L, "pair_accuracy", fake)
    torch.manual_seed(0)
    phi = L.TrajEncoder()
    phi.set_normaliser(p["obs"][:16])
    phi0 = {k: v.clone() for k, v in phi.state_dict().items()}
    cfg = L.StageConfig(steps=steps, lr=1e-3, triplets=48, trajectories=12, eval_every=1)
    val = (p["obs"][16:], p["feats"][16:], None, vac)
    out = L.train_stage(
        phi, None, p["obs"][:16], p["feats"][:16], None, trc, val, cfg,
        np.random.default_rng(1), language=L.Finetuned(lm, tr, va),
        on_step=None if on_step is None else (lambda step, m: on_step(step, phi)),
        lm_lr=lm_lr,
    )  # fmt: skip
    monkeypatch.undo()
    return phi, out, phi0


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.usefixtures("one_torch_thread")
def test_finetuning_minilm_trains_it_keeps_the_best_checkpoint_and_is_deterministic(
    finetune_problem, monkeypatch
):
    *_, lm, init = finetune_problem
    snaps = {}

    def snapshot(step, phi):
        if step == 2:  # the best validation below: the state to come back to
            snaps["lm"] = {k: v.clone() for k, v in lm.state_dict().items()}
            snaps["phi"] = {k: v.clone() for k, v in phi.state_dict().items()}
        assert lm.training  # trained in train mode (dropout 0.1)

    runs = []
    for _ in range(2):
        phi, out, _ = _finetune(
            finetune_problem, monkeypatch, cos=[0.1, 0.2, 0.5, 0.3], on_step=snapshot
        )
        assert not lm.training  # given back in the mode it came in
        runs.append((phi.state_dict(), {k: v.clone() for k, v in lm.state_dict().items()}))
        assert out["best_val_cos"] == 0.5 and [s for s, _ in out["val_cos"]] == [0, 1, 2, 3]
        assert _same(runs[-1][1], snaps["lm"]) and _same(runs[-1][0], snaps["phi"])
    assert not _same(runs[0][1], init)  # MiniLM's weights moved
    changed = [k for k in init if not torch.equal(init[k], runs[0][1][k])]
    assert any(".layer.0." in k for k in changed) and any(".layer.5." in k for k in changed)
    assert _same(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])  # same seed: same


@pytest.mark.usefixtures("one_torch_thread")
def test_finetuning_with_the_best_at_step_zero_returns_to_the_initial_weights(
    finetune_problem, monkeypatch
):
    *_, lm, init = finetune_problem
    phi, out, phi0 = _finetune(finetune_problem, monkeypatch, cos=[0.9, 0.1], steps=1)
    assert out["best_val_cos"] == 0.9
    assert _same(phi.state_dict(), phi0) and _same(lm.state_dict(), init)


@pytest.mark.usefixtures("one_torch_thread")
def test_finetuning_puts_minilm_in_a_parameter_group_of_its_own(finetune_problem, monkeypatch):
    """lm_lr = 0 leaves MiniLM as it was while Φ trains at its own rate, exactly as Φ does
    with lm_lr = 1e-4 (one step: the gradients at the start are the same)."""
    *_, lm, init = finetune_problem
    runs = {}
    for lm_lr in (0.0, 1e-4):
        phi, _, phi0 = _finetune(
            finetune_problem, monkeypatch, cos=[0.0, 1.0], steps=1, lm_lr=lm_lr
        )
        runs[lm_lr] = (phi.state_dict(), {k: v.clone() for k, v in lm.state_dict().items()})
    assert _same(runs[0.0][1], init) and not _same(runs[1e-4][1], init)
    assert not _same(runs[0.0][0], phi0) and _same(runs[0.0][0], runs[1e-4][0])
