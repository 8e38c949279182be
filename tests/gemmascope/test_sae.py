"""The JumpReLU SAE: STE gradients (hand cases, finite differences), init, fold, the release
parameters, and the Gemma Scope training step (schedules, decoder constraint, checkpoints)."""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.core.checkpoint import Checkpointer
from alignlab.core.config import validate
from alignlab.core.errors import AlignlabError
from alignlab.gemmascope.sae import PARAM_NAMES, JumpReLUSAE, jumprelu, rectangle, step
from alignlab.gemmascope.train import (
    SAETrainConfig,
    SAETrainer,
    _JumpReLUWithL0,
    count_true,
    estimate_input_scale,
    l0_coefficient_at,
    lr_at,
    new_sae,
    restore_trainers,
    save_trainers,
    train_sae,
)


def random_sae(d_in=6, d_sae=10, seed=0, **kw) -> JumpReLUSAE:
    g = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(d_in, d_sae, generator=g, **kw)
    with torch.no_grad():
        sae.W_enc.normal_(generator=g)
        sae.W_dec.normal_(generator=g)
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
        sae.threshold.copy_(torch.rand(d_sae, generator=g) * 0.5 + 0.1)
    return sae


# ---------------------------------------------------------------------------------------
# straight-through estimators


def test_rectangle_kernel_is_open_interval():
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.6])
    assert rectangle(u).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_jumprelu_and_step_hand_case():
    # θ = 1, ε = 0.1: z within (0.95, 1.05) is "near"; 0.97 is near and below θ (masked),
    # 1.02 near and above θ (passes), 0.5 and 2 far.
    z = torch.tensor([[0.5, 0.97, 1.02, 2.0]], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 1.0, 1.0], requires_grad=True)
    f = jumprelu(z, theta, 0.1)
    assert f[0].tolist() == pytest.approx([0.0, 0.0, 1.02, 2.0])
    f.sum().backward()
    assert z.grad[0].tolist() == [0.0, 0.0, 1.0, 1.0]  # the plain mask, no STE to z
    assert theta.grad.tolist() == pytest.approx([0.0, -10.0, -10.0, 0.0])  # −θ/ε on near
    z.grad, theta.grad = None, None
    h = step(z, theta, 0.1)
    assert h[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    (h * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert z.grad is None or torch.all(z.grad == 0)  # no gradient to the input
    assert theta.grad.tolist() == pytest.approx([0.0, -20.0, -30.0, 0.0])  # −(1/ε) K g


def test_threshold_gradient_sums_over_batch_and_scales_with_theta():
    z = torch.tensor([[0.2, 3.0], [0.21, 2.99], [5.0, 3.01]])
    theta = torch.tensor([0.2, 3.0], requires_grad=True)
    jumprelu(z, theta, 0.05).sum().backward()
    # column 0: two near entries (0.2, 0.21) → −2 θ/ε = −8; column 1: three → −180
    assert theta.grad.tolist() == pytest.approx([-8.0, -180.0])


def test_step_ste_is_the_finite_difference_of_the_count_over_the_bandwidth():
    """−(1/ε) #near equals the central difference of Σ H(z − θ) with step ε/2 (JumpReLU App.
    J: the rectangle-kernel estimate of the density of z at θ)."""
    g = torch.Generator().manual_seed(1)
    z = torch.rand(4000, 3, generator=g, dtype=torch.float64)
    theta = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64, requires_grad=True)
    eps = 0.02
    step(z, theta, eps).sum().backward()
    with torch.no_grad():
        hi = (z > theta + eps / 2).sum(0).double()
        lo = (z > theta - eps / 2).sum(0).double()
    fd = (hi - lo) / eps
    assert torch.allclose(theta.grad, fd, atol=1 / eps)  # at most one boundary tie apart
    assert (theta.grad < -1000).all()  # the density ~ 4000 per unit, well above zero


def test_jumprelu_ste_matches_the_finite_difference_up_to_theta_for_z():
    """The JumpReLU STE replaces z by θ in −(1/ε) Σ_near z: the central difference of
    Σ z H(z − θ) with step ε/2 is −(1/ε) Σ_near z, within ε/2 per near entry."""
    g = torch.Generator().manual_seed(2)
    z = torch.rand(5000, 2, generator=g, dtype=torch.float64) * 2
    theta = torch.tensor([0.8, 1.3], dtype=torch.float64, requires_grad=True)
    eps = 0.01
    jumprelu(z, theta, eps).sum().backward()
    with torch.no_grad():
        near = ((z - theta).abs() < eps / 2).double()
        fd = -(z * near).sum(0) / eps
        bound = near.sum(0) * (eps / 2) / eps
    assert ((theta.grad - fd).abs() <= bound + 1e-9).all()


def test_input_gradient_of_the_loss_matches_finite_differences_away_from_thresholds():
    """Everything but θ has a true gradient: gradcheck the training loss in float64 for
    W_enc, W_dec, b_enc, b_dec at a point where no pre-activation is near a threshold."""
    torch.manual_seed(3)
    d_in, d_sae = 4, 6
    x = torch.randn(5, d_in, dtype=torch.float64)
    theta = torch.full((d_sae,), 0.05, dtype=torch.float64)
    params = [
        torch.randn(d_in, d_sae, dtype=torch.float64, requires_grad=True),
        torch.randn(d_sae, d_in, dtype=torch.float64, requires_grad=True),
        torch.randn(d_sae, dtype=torch.float64, requires_grad=True),
        torch.randn(d_in, dtype=torch.float64, requires_grad=True),
    ]

    def loss(W_enc, W_dec, b_enc, b_dec):
        pre = (x - b_dec) @ W_enc + b_enc
        f = jumprelu(pre, theta, 1e-3)
        return ((f @ W_dec + b_dec - x) ** 2).sum(-1).mean()

    pre = (x - params[3]) @ params[0] + params[2]
    assert ((pre - theta).abs() > 1e-3).all()
    assert torch.autograd.gradcheck(loss, params, eps=1e-7, atol=1e-5)


def test_fused_jumprelu_with_l0_equals_the_separate_functions():
    g = torch.Generator().manual_seed(4)
    z0 = torch.rand(64, 8, generator=g) * 0.2
    th0 = torch.rand(8, generator=g) * 0.1 + 0.05
    gf = torch.randn(64, 8, generator=g)
    gl = torch.randn(64, generator=g)
    eps = 0.03

    z1, t1 = z0.clone().requires_grad_(), th0.clone().requires_grad_()
    f1 = jumprelu(z1, t1, eps)
    l1 = step(z1, t1, eps).sum(-1)
    ((f1 * gf).sum() + (l1 * gl).sum()).backward()

    z2, t2 = z0.clone().requires_grad_(), th0.clone().requires_grad_()
    f2, l2, off2 = _JumpReLUWithL0.apply(z2, t2, eps)
    ((f2 * gf).sum() + (l2 * gl).sum()).backward()
    assert torch.equal(f1, f2) and torch.equal(l1, l2)
    assert torch.equal(z1.grad, z2.grad)
    assert torch.allclose(t1.grad, t2.grad, rtol=1e-5, atol=1e-4)
    assert (t1.grad != 0).any()


def _fused_grads(z0, th0, gf, gl, eps, **kw):
    z = z0.clone().requires_grad_()
    t = th0.clone().requires_grad_()
    pre = z * 1.0  # a non-leaf, so that it may be overwritten in place
    f, l0, off = _JumpReLUWithL0.apply(pre, t, eps, *kw.values())
    ((f @ gf).sum() + (l0 * gl).sum()).backward()
    return f.detach().clone(), l0, off, z.grad, t.grad


@pytest.mark.parametrize("dense", [False, True])
def test_fused_jumprelu_fast_paths_are_bit_identical(monkeypatch, dense):
    """In place with a reused workspace, and the dense θ-gradient (used off the CPU), give
    exactly the bits of the out-of-place sparse form; θ-gradient entries are really hit."""
    import alignlab.gemmascope.train as train_mod

    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(300, 520, generator=g) * 0.05
    th0 = torch.rand(520, generator=g) * 0.05 + 1e-3
    gf = torch.randn(520, 7, generator=g)
    gl = torch.randn(300, generator=g)
    eps = 0.01
    ref = _fused_grads(z0, th0, gf, gl, eps)
    if dense:
        monkeypatch.setattr(train_mod, "_SPARSE_THETA_GRAD_DEVICES", ())
    work = torch.full_like(z0, float("nan"))
    for _ in range(2):  # the workspace is reused
        out = _fused_grads(z0, th0, gf, gl, eps, inplace=True, workspace=work)
        for a, b in zip(ref, out):
            assert torch.equal(a, b)
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))  # signs of zero too
    assert (ref[4] != 0).sum() > 100
    assert torch.equal(ref[2], z0 <= th0)


def test_fused_jumprelu_on_bf16_latents_sparse_equals_dense(monkeypatch):
    """bf16 latents with an fp32 θ (a step under bf16 autocast): the CPU's gathered θ-gradient
    is rounded into the bf16 buffer exactly as the dense form rounds it."""
    import alignlab.gemmascope.train as train_mod

    g = torch.Generator().manual_seed(6)
    z0 = (torch.randn(64, 130, generator=g) * 0.05).bfloat16()
    th0 = torch.rand(130, generator=g) * 0.05 + 1e-3
    gf = torch.randn(130, 5, generator=g).bfloat16()
    gl = torch.randn(64, generator=g).bfloat16()
    kw = dict(inplace=True, workspace=torch.empty_like(z0))  # the trainer's bf16 workspace
    sparse = _fused_grads(z0, th0, gf, gl, 0.01, **kw)
    monkeypatch.setattr(train_mod, "_SPARSE_THETA_GRAD_DEVICES", ())
    dense = _fused_grads(z0, th0, gf, gl, 0.01, **kw)
    for a, b in zip(sparse, dense):
        assert torch.equal(a, b)
    assert sparse[0].dtype == torch.bfloat16 and (sparse[4] != 0).sum() > 10


@pytest.mark.parametrize("shape", [(300, 520), (255, 255), (7, 1000), (1000, 3), (0, 4)])
def test_count_true_equals_sum(shape):
    m = torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.4
    for mask in (m, m.T):
        for dim in (0, 1, -1):
            assert torch.equal(count_true(mask, dim), mask.sum(dim))


# ---------------------------------------------------------------------------------------
# the SAE


def test_init_is_gemma_scope():
    sae = JumpReLUSAE(16, 40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(40))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert torch.all(sae.b_enc == 0) and torch.all(sae.b_dec == 0)
    assert torch.all(sae.threshold == 1e-3)
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    same = JumpReLUSAE(16, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sae.W_dec, same.W_dec)


def test_encode_matches_the_release_inference_code():
    """acts = 1[pre > θ]·relu(pre), pre = x W_enc + b_enc (the Gemma Scope HF tutorial)."""
    sae = random_sae()
    x = torch.randn(7, 6)
    pre = x @ sae.W_enc + sae.b_enc
    ref = (pre > sae.threshold) * torch.relu(pre)
    assert torch.allclose(sae.encode(x), ref)
    assert torch.allclose(sae.decode(ref), ref @ sae.W_dec + sae.b_dec)
    assert torch.allclose(sae(x), ref @ sae.W_dec + sae.b_dec)
    assert sae.encode(torch.randn(2, 3, 6)).shape == (2, 3, 10)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_folding_leaves_outputs_unchanged(apply_b_dec):
    """App. A: b_enc' = C b_enc − C W_encᵀ b_dec, b_dec' = C b_dec, θ' = C θ."""
    sae = random_sae(apply_b_dec_to_input=apply_b_dec, input_scale=3.7)
    x = torch.randn(200, 6) * 3.7
    f = sae.folded()
    assert f.input_scale == 1.0 and not f.apply_b_dec_to_input
    assert torch.equal(f.W_enc, sae.W_enc) and torch.equal(f.W_dec, sae.W_dec)
    assert torch.allclose(f.threshold, 3.7 * sae.threshold)
    assert torch.allclose(f.b_dec, 3.7 * sae.b_dec)
    b_enc = 3.7 * sae.b_enc - (3.7 * sae.b_dec @ sae.W_enc if apply_b_dec else 0)
    assert torch.allclose(f.b_enc, b_enc, atol=1e-5)
    assert torch.allclose(f.encode(x), sae.encode(x), atol=1e-5)
    assert torch.allclose(f(x), sae(x), atol=1e-5)
    assert torch.equal(sae.encode(x) > 0, f.encode(x) > 0)
    # the released latents are C × the training latents
    xn = x / 3.7
    pre = sae.pre_acts_normalised(xn)
    train_f = pre * (pre > sae.threshold)
    assert torch.allclose(f.encode(x), 3.7 * train_f, atol=1e-5)


def test_release_params_round_trip():
    sae = random_sae(apply_b_dec_to_input=True, input_scale=2.0)
    params = sae.release_params()
    assert set(params) == set(PARAM_NAMES)
    assert params["W_enc"].shape == (6, 10) and params["W_dec"].shape == (10, 6)
    back = JumpReLUSAE.from_release_params({k: v.numpy() for k, v in params.items()})
    x = torch.randn(30, 6)
    assert torch.equal(back.encode(x), sae.folded().encode(x))
    for k in PARAM_NAMES:
        assert torch.equal(getattr(back, k), params[k])


def test_release_params_errors_name_the_problem():
    params = random_sae().release_params()
    with pytest.raises(AlignlabError, match=r"missing keys \['threshold'\]"):
        JumpReLUSAE.from_release_params({k: v for k, v in params.items() if k != "threshold"})
    with pytest.raises(AlignlabError, match="unexpected"):
        JumpReLUSAE.from_release_params({**params, "W_extra": params["b_dec"]})
    bad = dict(params, b_dec=torch.zeros(5))
    with pytest.raises(AlignlabError, match="b_dec"):
        JumpReLUSAE.from_release_params(bad)


def test_bad_sizes_and_inputs_are_refused():
    with pytest.raises(AlignlabError, match="d_sae"):
        JumpReLUSAE(4, 0)
    with pytest.raises(AlignlabError, match="bandwidth"):
        JumpReLUSAE(4, 8, bandwidth=0)
    with pytest.raises(AlignlabError, match="expects 6"):
        random_sae().encode(torch.randn(3, 5))


# ---------------------------------------------------------------------------------------
# training


def test_schedules():
    assert lr_at(0, 1.0, 100) == pytest.approx(0.1)
    assert lr_at(50, 1.0, 100) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 100) == 1.0 and lr_at(10**6, 1.0, 100) == 1.0
    assert all(lr_at(s, 1.0, 100) < lr_at(s + 1, 1.0, 100) for s in range(99))
    assert l0_coefficient_at(0, 2.0, 10) == 0.0
    assert l0_coefficient_at(5, 2.0, 10) == pytest.approx(1.0)
    assert l0_coefficient_at(10, 2.0, 10) == 2.0


def test_warmups_scale_with_the_run_and_default_to_the_papers_fractions():
    cfg = SAETrainConfig()
    assert cfg.warmup_steps(1_953_125) == (1_000, 10_000)
    assert cfg.warmup_steps(195_312) == (100, 1_000)
    assert cfg.warmup_steps(10) == (1, 1)
    assert SAETrainConfig(lr_warmup_frac=0.0).warmup_steps(100)[0] == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(d_sae=0), "d_sae must be >= 1, got 0"),
        (dict(lr=0.0), "lr must be > 0, got 0.0"),
        (dict(l0_coefficient=-1.0), "l0_coefficient must be >= 0, got -1.0"),
        (dict(adam_beta2=1.0), r"adam_beta2 must be in \[0, 1\), got 1.0"),
        (dict(dense_threshold=0.0), r"dense_threshold must be in \(0, 1\], got 0.0"),
    ],
)
def test_config_errors_name_the_field(bad, message):
    with pytest.raises(AlignlabError, match=f"^Invalid config: {message}$"):
        validate(SAETrainConfig(**bad))
    with pytest.raises(AlignlabError, match=f"^Invalid config: {message}$"):
        SAETrainer(new_sae(4, SAETrainConfig(d_sae=8)), SAETrainConfig(**bad), 10)


def _data(n=512, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 5 + 1


def test_input_scale_gives_unit_mean_squared_norm():
    x = _data()
    C = estimate_input_scale(x.split(100))
    assert (x / C).pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-6)


def test_training_step_is_gemma_scope():
    """Adam (0, 0.999); the decoder gradient has no component along its rows when Adam sees
    it; rows have unit norm after every step; θ stays positive."""
    cfg = SAETrainConfig(d_sae=32, lr=1e-2, l0_coefficient=1e-2, lr_warmup_frac=0.1)
    x = _data()
    C = estimate_input_scale([x])
    sae = new_sae(8, cfg, C)
    tr = SAETrainer(sae, cfg, total_steps=20)
    assert tr.optimizer.param_groups[0]["betas"] == (0.0, 0.999)
    seen = []

    def check_grad(opt, args, kwargs):
        g, W = sae.W_dec.grad, sae.W_dec
        seen.append(float((g * W.detach()).sum(1).abs().max()))

    tr.optimizer.register_step_pre_hook(check_grad)
    for batch in x.split(64):
        m = tr.step(batch / C)
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-6)
        assert (sae.threshold > 0).all()
        assert math.isfinite(m["loss"])
    assert max(seen) < 1e-6
    assert tr.n_steps == 8 and tr.tokens == 512
    assert tr.schedules() == {"lr_warmup_steps": 2, "l0_warmup_steps": 1}


def test_training_reduces_the_loss_and_lambda_controls_sparsity():
    x = _data(4096, 8, seed=5)

    def run(lam):
        cfg = SAETrainConfig(d_sae=32, lr=3e-3, l0_coefficient=lam, l0_warmup_frac=0.1)
        batches = iter(list(x.split(256)) * 20)
        sae, tr = train_sae(batches, 8, cfg, 300, scale_batches=4)
        return sae, tr

    lo, tr_lo = run(1e-3)
    hi, _ = run(1e-1)
    xt = _data(1000, 8, seed=6)
    l0 = [float((s.encode(xt) > 0).sum(-1).float().mean()) for s in (lo, hi)]
    assert l0[1] < l0[0]
    fvu = float(((lo(xt) - xt) ** 2).sum() / ((xt - xt.mean(0)) ** 2).sum())
    assert fvu < 0.2


def test_checkpoint_round_trip_continues_identically(tmp_path):
    """Trainers saved mid-run (SAE, Adam, counters) and loaded into fresh ones continue
    exactly as the uninterrupted trainers do."""
    x = _data(640, 8, seed=7)
    cfgs = [
        SAETrainConfig(d_sae=16, lr=1e-2, l0_coefficient=lam, dead_window=200)
        for lam in (1e-2, 1e-1)
    ]
    C = estimate_input_scale([x])
    batches = [b / C for b in x.split(64)]

    a = {f"sae/{i}": SAETrainer(new_sae(8, c, C), c, 10) for i, c in enumerate(cfgs)}
    for b in batches[:4]:
        for tr in a.values():
            tr.step(b)
    save_trainers(Checkpointer(tmp_path), 4, a)
    for b in batches[4:]:
        for tr in a.values():
            tr.step(b)

    fresh = SAETrainConfig(d_sae=16, init_seed=9)
    b_tr = {f"sae/{i}": SAETrainer(new_sae(8, fresh, 1.0), c, 10) for i, c in enumerate(cfgs)}
    ck = Checkpointer(tmp_path).load()
    assert ck.step == 4 and any(k.startswith("optim.sae1.") for k in ck.tensors)
    restore_trainers(ck, b_tr)
    for b in batches[4:]:
        for tr in b_tr.values():
            tr.step(b)
    for name in a:
        for k in PARAM_NAMES:
            assert torch.equal(getattr(a[name].sae, k), getattr(b_tr[name].sae, k)), (name, k)
        assert a[name].sae.input_scale == b_tr[name].sae.input_scale == C
        assert a[name].dead_fraction == b_tr[name].dead_fraction
        assert a[name].tokens == b_tr[name].tokens == 640
        assert torch.equal(a[name].last_fired, b_tr[name].last_fired)
    with pytest.raises(AlignlabError, match="other SAEs"):
        restore_trainers(ck, {"another": b_tr["sae/0"]})


def test_dead_and_dense_accounting():
    cfg = SAETrainConfig(d_sae=4, dead_window=100, dense_threshold=0.5)
    sae = new_sae(2, cfg)
    tr = SAETrainer(sae, cfg, 10)
    fired = torch.tensor([0, 60, 10, 100])
    tr._account(fired, 100)
    assert tr.dead_fraction == 0.25 and tr.dense_fraction == 0.5
    assert tr.window_tokens == 0
    assert tr.last_fired.tolist() == [0, 100, 100, 100]


def test_optional_dead_latent_loss_is_off_by_default_and_raises_dead_pre_acts():
    assert SAETrainConfig().dead_loss_coefficient == 0.0
    x = _data(256, 8, seed=8)
    cfg = SAETrainConfig(d_sae=16, dead_loss_coefficient=1.0, dead_window=64)
    sae = new_sae(8, cfg, estimate_input_scale([x]))
    with torch.no_grad():
        sae.threshold.fill_(100.0)  # nothing fires: every latent goes dead
    tr = SAETrainer(sae, cfg, 10)
    outs = [tr.step(b / sae.input_scale) for b in x.split(64)]
    assert "dead_loss" not in outs[0] and "dead_loss" in outs[-1]
