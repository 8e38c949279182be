"""Anchor against SAELens (sae-lens 6.54.12): forward pass, STE gradients, on-disk format.

Runs only where `sae_lens` is installed (the `anchors` extra; a separate venv, since SAELens
pulls in transformer-lens, wandb, datasets, …):

    .venv-anchors/bin/python -m pytest tests/gemmascope/test_saelens_anchor.py

Exactness. Everything is compared with torch.equal: the STE gradients (the same elementwise
formulas and the same `sum(0)` over the batch), which latents fire, and the encode/decode
values, since our SAE computes `x @ W + b` exactly as SAELens does.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from sae_lens import SAE  # noqa: E402
from sae_lens.saes.jumprelu_sae import JumpReLU as SLJumpReLU  # noqa: E402
from sae_lens.saes.jumprelu_sae import JumpReLUSAE as SLJumpReLUSAE  # noqa: E402
from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig as SLJumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.jumprelu_sae import Step as SLStep  # noqa: E402

from alignlab.gemmascope.formats import load_saelens, save_saelens  # noqa: E402
from alignlab.gemmascope.sae import PARAM_NAMES, JumpReLUSAE, jumprelu, step  # noqa: E402

HOOK = "blocks.6.hook_resid_post"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def random_params(d_in=64, d_sae=512, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * d_in**-0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * d_sae**-0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "b_dec": torch.randn(d_in, generator=g) * 0.3,
        "threshold": torch.rand(d_sae, generator=g) * 0.45 + 0.05,  # positive
    }


def inputs(d_in=64, n=1024, seed=1) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))


def ours_from(p, apply_b_dec_to_input=False) -> JumpReLUSAE:
    sae = JumpReLUSAE.from_release_params(p)
    sae.apply_b_dec_to_input = apply_b_dec_to_input
    return sae


def theirs_from(p, apply_b_dec_to_input=False) -> SLJumpReLUSAE:
    d_in, d_sae = p["W_enc"].shape
    cfg = SLJumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec_to_input)
    sae = SLJumpReLUSAE(cfg)
    sae.load_state_dict({k: v.clone() for k, v in p.items()})
    return sae


def assert_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(ours, theirs), float((ours - theirs).abs().max())


def assert_encode_decode_match(ours, theirs, x) -> None:
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert torch.equal(f_ours != 0, f_theirs != 0)  # the same latents fire
        assert_match(f_ours, f_theirs)
        # decode the same latents on both sides, so only decode's arithmetic is compared
        assert_match(ours.decode(f_theirs), theirs.decode(f_theirs))
        assert_match(ours(x), theirs(x))


# ---------------------------------------------------------------------------------------
# (1) forward


@pytest.mark.parametrize("apply_b_dec_to_input", [False, True])
@pytest.mark.parametrize("shape", [(8, 32), (64, 512), (256, 2048)])
def test_forward_matches_saelens(shape, apply_b_dec_to_input):
    p = random_params(*shape)
    x = inputs(shape[0])
    ours = ours_from(p, apply_b_dec_to_input)
    theirs = theirs_from(p, apply_b_dec_to_input)
    f = theirs.encode(x)
    assert 0 < float((f != 0).float().mean()) < 1  # some but not all latents fire
    assert_encode_decode_match(ours, theirs, x)


def test_forward_of_our_folded_training_form_matches_saelens_release_form():
    """Our training form (input scale C, pre-encoder bias) vs SAELens on the App. A fold."""
    p = random_params()
    ours = ours_from(p, apply_b_dec_to_input=True)
    ours.input_scale = 2.5
    theirs = theirs_from(ours.release_params(), apply_b_dec_to_input=False)
    x = inputs() * 2.5
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert torch.equal(f_ours != 0, f_theirs != 0)
        torch.testing.assert_close(f_ours, f_theirs, rtol=1e-5, atol=1e-5)  # fold rounding
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# (2) straight-through estimators


def ste_inputs(n=512, d=256, bandwidth=1e-3, seed=2):
    """Pre-activations with a third of them within ±ε of θ, so the kernel fires often."""
    g = torch.Generator().manual_seed(seed)
    threshold = torch.rand(d, generator=g) * 0.5 + 0.01
    z = torch.randn(n, d, generator=g)
    near = torch.rand(n, d, generator=g) < 1 / 3
    z = torch.where(near, threshold + bandwidth * (2 * torch.rand(n, d, generator=g) - 1), z)
    grad_out = torch.randn(n, d, generator=g)
    return z, threshold, grad_out


@pytest.mark.parametrize("bandwidth", [1e-3, 0.05])
def test_jumprelu_ste_gradients_match_saelens(bandwidth):
    z0, t0, grad_out = ste_inputs(bandwidth=bandwidth)
    grads = []
    for fn in (
        lambda z, t: jumprelu(z, t, bandwidth),
        lambda z, t: SLJumpReLU.apply(z, t, bandwidth, False),
    ):
        z, t = z0.clone().requires_grad_(), t0.clone().requires_grad_()
        out = fn(z, t)
        out.backward(grad_out)
        grads.append((out.detach(), z.grad, t.grad))
    (o1, gz1, gt1), (o2, gz2, gt2) = grads
    assert torch.equal(o1, o2)
    assert torch.equal(gz1, gz2)
    assert torch.equal(gt1, gt2)
    assert float(gt1.abs().sum()) > 0  # the kernel was hit


@pytest.mark.parametrize("bandwidth", [1e-3, 0.05])
def test_step_ste_gradients_match_saelens(bandwidth):
    z0, t0, _ = ste_inputs(bandwidth=bandwidth, seed=3)
    grads = []
    for fn in (
        lambda z, t: step(z, t, bandwidth),
        lambda z, t: SLStep.apply(z, t, bandwidth, False),
    ):
        z, t = z0.clone().requires_grad_(), t0.clone().requires_grad_()
        out = fn(z, t)
        # the L0 term as both use it: per-token sum, then the batch mean
        out.sum(-1).mean().backward()
        grads.append((out.detach(), z.grad, t.grad))
    (o1, gz1, gt1), (o2, gz2, gt2) = grads
    assert torch.equal(o1, o2)
    assert gt1 is not None and torch.equal(gt1, gt2)
    assert float(gt1.abs().sum()) > 0
    # neither sends gradient to the pre-activations (SAELens gives None, we give None too)
    assert gz1 is None and gz2 is None


def test_training_loss_gradients_match_saelens_jumprelu_training_sae():
    """One loss evaluation of SAELens' JumpReLUTrainingSAE vs the same loss built from our
    STEs, on identical parameters: the θ gradient of MSE + λ·L0 is bit-identical; the other
    gradients flow through addmm vs matmul + add (rounding only)."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    bandwidth, lam = 0.05, 0.3
    p = random_params(32, 128, seed=4)
    x = inputs(32, 256, seed=5)
    cfg = JumpReLUTrainingSAEConfig(
        d_in=32,
        d_sae=128,
        jumprelu_bandwidth=bandwidth,
        l0_coefficient=lam,
        apply_b_dec_to_input=True,
    )
    theirs = JumpReLUTrainingSAE(cfg)
    theirs.load_state_dict({k: v.clone() for k, v in p.items()})
    out = theirs.training_forward_pass(
        TrainStepInput(
            sae_in=x,
            coefficients={"l0": lam},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
    )
    out.loss.backward()

    ours = ours_from(p, apply_b_dec_to_input=True)
    ours.bandwidth = bandwidth
    x_hat, f, pre, l0 = ours.training_forward(x)
    loss = (x_hat - x).pow(2).sum(-1).mean() + lam * l0.mean()
    loss.backward()
    torch.testing.assert_close(loss, out.loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(f != 0, out.feature_acts != 0)
    for k in PARAM_NAMES:
        g_ours, g_theirs = getattr(ours, k).grad, getattr(theirs, k).grad
        assert g_ours is not None and g_theirs is not None, k
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------
# (3) the on-disk format, both directions


def test_our_export_loads_in_saelens(tmp_path):
    p = random_params(64, 512, seed=6)
    ours = ours_from(p, apply_b_dec_to_input=True)
    ours.input_scale = 1.7  # training form: the export is the App. A fold
    folder = save_saelens(ours, tmp_path / "sae", hook_name=HOOK, model_name="gemma-2-2b")
    theirs = SAE.load_from_disk(folder)
    assert isinstance(theirs, SLJumpReLUSAE)
    assert theirs.cfg.apply_b_dec_to_input is False
    assert theirs.cfg.normalize_activations == "none"
    assert theirs.cfg.metadata.hook_name == HOOK
    assert theirs.cfg.metadata.model_name == "gemma-2-2b"
    released = ours_from(ours.release_params())
    for k in PARAM_NAMES:
        assert torch.equal(getattr(theirs, k).detach(), getattr(released, k).detach()), k
    assert_encode_decode_match(released, theirs, inputs(64) * 1.7)
    assert_encode_decode_match(load_saelens(folder), theirs, inputs(64) * 1.7)


def test_our_hook_z_export_loads_in_saelens(tmp_path):
    n_heads, d_head = 4, 16
    p = random_params(n_heads * d_head, 256, seed=7)
    ours = ours_from(p)
    folder = save_saelens(ours, tmp_path / "att", hook_name="blocks.2.attn.hook_z")
    theirs = SAE.load_from_disk(folder)
    assert theirs.cfg.reshape_activations == "hook_z"
    z = inputs(n_heads * d_head).reshape(-1, 8, n_heads, d_head)  # [batch, pos, heads, d_head]
    with torch.no_grad():
        f_theirs = theirs.encode(z)
        f_ours = ours.encode(z.flatten(-2))
        assert torch.equal(f_ours != 0, f_theirs != 0)
        assert_match(f_ours, f_theirs)
        assert_match(ours(z.flatten(-2)), theirs(z).flatten(-2))


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_saelens_saved_sae_loads_in_ours(tmp_path, apply_b_dec_to_input):
    p = random_params(64, 512, seed=8)
    theirs = theirs_from(p, apply_b_dec_to_input)
    theirs.save_model(tmp_path / "sl")
    ours = load_saelens(tmp_path / "sl")
    assert ours.apply_b_dec_to_input is False and ours.input_scale == 1.0
    x = inputs(64)
    if not apply_b_dec_to_input:
        for k in PARAM_NAMES:
            assert torch.equal(getattr(ours, k), p[k]), k
        assert_encode_decode_match(ours, theirs, x)
    else:
        # folded: b_enc' = b_enc − W_encᵀ b_dec, so the encoder's rounding differs slightly
        with torch.no_grad():
            f_ours, f_theirs = ours.encode(x), theirs.encode(x)
            assert torch.equal(f_ours != 0, f_theirs != 0)
            torch.testing.assert_close(f_ours, f_theirs, rtol=1e-5, atol=1e-5)
            assert_match(ours.decode(f_theirs), theirs.decode(f_theirs))


def test_saelens_training_sae_and_trainer_checkpoint_load_in_ours(tmp_path):
    """A JumpReLUTrainingSAE saved by SAELens (training fields in cfg.json), and a trainer
    checkpoint with unfolded `expected_average_only_in` scaling + activation_scaler.json."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d_in, d_sae = 32, 128
    p = random_params(d_in, d_sae, seed=9)
    cfg = JumpReLUTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in"
    )
    sae = JumpReLUTrainingSAE(cfg)
    sae.load_state_dict({k: v.clone() for k, v in p.items()})
    sae.save_model(tmp_path / "training_sae")  # cfg.json carries the training fields
    trainer = SAETrainer(
        SAETrainerConfig(total_training_samples=64, train_batch_size_samples=32, lr_end=3e-5),
        sae,
        data_provider=iter(()),
    )
    s = 0.4
    trainer.activation_scaler.scaling_factor = s
    trainer.save_checkpoint("ckpt", base_path=tmp_path)
    saved = json.loads((tmp_path / "ckpt" / "cfg.json").read_text())
    assert saved["normalize_activations"] == "expected_average_only_in"

    ours = load_saelens(tmp_path / "ckpt")  # folds s in: takes raw activations
    reference = SAE.load_from_disk(tmp_path / "ckpt")
    reference.fold_activation_norm_scaling_factor(s)  # SAELens' own fold
    x = inputs(d_in) / s
    with torch.no_grad():
        f_ours, f_ref = ours.encode(x), reference.encode(x)
        assert torch.equal(f_ours != 0, f_ref != 0)
        torch.testing.assert_close(f_ours, f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        # and the unscaled SAELens model on scaled inputs, unscaled outputs
        torch.testing.assert_close(ours(x), sae(x * s) / s, rtol=1e-5, atol=1e-5)

    # without the scaler file the training-SAE folder (no scaling recorded) is refused
    from alignlab.core.errors import AlignlabError

    with pytest.raises(AlignlabError, match="activation_scaler.json"):
        load_saelens(tmp_path / "training_sae")
