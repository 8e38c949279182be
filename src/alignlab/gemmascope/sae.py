"""The JumpReLU sparse autoencoder exactly as trained for Gemma Scope.

Lieberum et al. 2024 (Gemma Scope, arXiv 2408.05147) §3.2 and App. A, with the JumpReLU
SAE of Rajamanoharan et al. 2024 (arXiv 2407.14435) §3 and App. J:

    f(x)  = JumpReLU_θ(W_encᵀ x + b_enc),  JumpReLU_θ(z) = z ⊙ H(z − θ)     (JumpReLU eq. 3-4)
    x̂(f) = W_decᵀ f + b_dec
    L     = ‖x − x̂(f(x))‖²₂ + λ ‖f(x)‖₀                                         (JumpReLU eq. 9)

`W_enc` is stored [d_in, d_sae] and `W_dec` [d_sae, d_in], so the rows of `W_dec` are the
latent directions (the Gemma Scope release layout). θ is one threshold per latent and is
parameterised directly, not as log θ: under Adam a log parameterisation moves θ by only about
θ·lr per step and freezes small thresholds (decoderesearch/SAELens, GitHub #494 and #382).

Straight-through estimators (JumpReLU App. J, rectangle kernel K(u) = 1[−½ < u < ½],
bandwidth ε):

    ∂JumpReLU_θ(z)/∂θ := −(θ/ε) K((z − θ)/ε)      ∂JumpReLU_θ(z)/∂z := H(z − θ)
    ∂H(z − θ)/∂θ      := −(1/ε) K((z − θ)/ε)      ∂H(z − θ)/∂z      := 0

so the L0 term sends gradient only to θ, and the input gets the plain mask (no STE to z).

Training works on normalised activations x / C with C fixed so that E‖x/C‖² = 1 (Gemma
Scope §3.2 "Inputs"), and the encoder sees x/C − b_dec (the pre-encoder bias). `folded()`
applies App. A so the released SAE takes raw activations with no pre-encoder bias:

    b_enc′ = C·b_enc − C·W_encᵀ b_dec,  b_dec′ = C·b_dec,  θ′ = C·θ,  W_enc, W_dec unchanged.

`encode`, `decode` and `forward` always take and give RAW-scale quantities (latents in the
released units, i.e. C × the training latents), so they agree before and after folding up
to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import AlignlabError

PARAM_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


# ---------------------------------------------------------------------------------------
# straight-through estimators


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The rectangle kernel K(u) = 1[−½ < u < ½] (JumpReLU App. J), as the dtype of u."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back over the leading (batch) dimensions to `shape`."""
    return grad.reshape(-1, *shape).sum(0) if grad.shape != shape else grad


class _JumpReLU(torch.autograd.Function):
    """z ⊙ H(z − θ); gradient H(z − θ) to z and −(θ/ε) K((z − θ)/ε) to θ."""

    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float):
        mask = z > threshold
        ctx.save_for_backward(z, threshold, mask)
        ctx.bandwidth = bandwidth
        return z * mask

    @staticmethod
    def backward(ctx, grad_out):
        z, threshold, mask = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad_out * mask if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            g = -(threshold / eps) * rectangle((z - threshold) / eps) * grad_out
            grad_theta = _sum_to(g, threshold.shape)
        return grad_z, grad_theta, None


class _Step(torch.autograd.Function):
    """H(z − θ); no gradient to z, −(1/ε) K((z − θ)/ε) to θ."""

    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float):
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = None
        if ctx.needs_input_grad[1]:
            g = -(1.0 / eps) * rectangle((z - threshold) / eps) * grad_out
            grad_theta = _sum_to(g, threshold.shape)
        return None, grad_theta, None


def jumprelu(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU_θ(z) with the rectangle-kernel STE of bandwidth ε for θ (plain mask to z)."""
    return _JumpReLU.apply(z, threshold, float(bandwidth))


def step(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """H(z − θ) with the rectangle-kernel STE of bandwidth ε for θ (no gradient to z)."""
    return _Step.apply(z, threshold, float(bandwidth))


# ---------------------------------------------------------------------------------------
# the SAE


def check_release_shapes(
    shapes: Mapping[str, tuple[int, ...]], where: str = "SAE parameters"
) -> tuple[int, int]:
    """(d_in, d_sae) from a key → shape map of the release parameters; one AlignlabError
    naming every missing or unexpected key, or every inconsistent shape."""
    missing = [k for k in PARAM_NAMES if k not in shapes]
    extra = sorted(set(shapes) - set(PARAM_NAMES))
    if missing or extra:
        raise AlignlabError(
            f"{where}: missing keys {missing or 'none'}, unexpected keys {extra or 'none'}; "
            f"a JumpReLU SAE has exactly {', '.join(PARAM_NAMES)}"
        )
    if len(shapes["W_enc"]) != 2:
        raise AlignlabError(
            f"{where}: W_enc must be 2-D [d_in, d_sae], got shape {tuple(shapes['W_enc'])}"
        )
    d_in, d_sae = (int(v) for v in shapes["W_enc"])
    want = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_enc": (d_sae,),
        "b_dec": (d_in,),
        "threshold": (d_sae,),
    }
    bad = [
        f"{k} {tuple(shapes[k])} (expected {w})" for k, w in want.items() if tuple(shapes[k]) != w
    ]
    if bad:
        raise AlignlabError(
            f"{where}: inconsistent shapes for d_in={d_in}, d_sae={d_sae}: {'; '.join(bad)}"
        )
    return d_in, d_sae


def _check_dims(d_in: int, d_sae: int) -> None:
    for name, v in (("d_in", d_in), ("d_sae", d_sae)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise AlignlabError(f"{name} must be a positive integer, got {v!r}")


class JumpReLUSAE(nn.Module):
    """A JumpReLU SAE (Gemma Scope §3.2) in fp32.

    Args:
        d_in, d_sae: input and dictionary widths.
        bandwidth: the STE bandwidth ε (0.001 for every Gemma Scope SAE, in units where
            E‖x‖² = 1).
        threshold_init: θ₀ for every latent (0.001 in Gemma Scope).
        apply_b_dec_to_input: the encoder sees x − b_dec (training form); False once folded.
        input_scale: the normaliser C; the SAE works internally on x / C. 1 once folded.
        generator: a torch.Generator for the initialisation (He-uniform W_dec, rows rescaled
            to unit norm, W_enc = W_decᵀ, zero biases).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        bandwidth: float = 1e-3,
        threshold_init: float = 1e-3,
        apply_b_dec_to_input: bool = False,
        input_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        _check_dims(d_in, d_sae)
        if not bandwidth > 0:
            raise AlignlabError(f"bandwidth must be > 0, got {bandwidth}")
        if not threshold_init > 0:
            raise AlignlabError(f"threshold_init must be > 0, got {threshold_init}")
        if not (math.isfinite(input_scale) and input_scale > 0):
            raise AlignlabError(f"input_scale must be a finite number > 0, got {input_scale}")
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.bandwidth = float(bandwidth)
        self.threshold_init = float(threshold_init)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.input_scale = float(input_scale)
        f32 = torch.float32
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae, dtype=f32))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in, dtype=f32))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=f32))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=f32))
        self.threshold = nn.Parameter(torch.full((d_sae,), self.threshold_init, dtype=f32))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gemma Scope §3.2 "Initialisation": W_dec He-uniform, each latent (row) rescaled to
        unit norm, W_enc = W_decᵀ, b_enc = b_dec = 0, θ = θ₀."""
        bound = math.sqrt(6.0 / self.d_sae)  # He-uniform, fan_in = d_sae (W_dec maps f → x)
        w = torch.rand(self.d_sae, self.d_in, generator=generator, dtype=torch.float32)
        w = (2 * w - 1) * bound
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        self.threshold.fill_(self.threshold_init)

    # --- the training-unit maps (x already divided by C) ---------------------------------

    def pre_acts_normalised(self, xn: torch.Tensor) -> torch.Tensor:
        """W_encᵀ(x/C − b_dec) + b_enc for normalised inputs (b_dec only in training form)."""
        if self.apply_b_dec_to_input:
            xn = xn - self.b_dec
        # x @ W + b, not addmm: the same rounding as SAELens' JumpReLUSAE (bit-identical).
        # The bias is added in place (same kernel, same bits): one (N, d_sae) buffer fewer.
        return (xn @ self.W_enc).add_(self.b_enc)

    def decode_normalised(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    # --- raw-activation API -------------------------------------------------------------

    def _check_input(self, x: torch.Tensor, width: int, what: str) -> None:
        if x.shape[-1] != width:
            raise AlignlabError(
                f"{what} has last dimension {x.shape[-1]}, but this SAE expects {width}"
            )

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations in released units (C × the training ones)."""
        self._check_input(x, self.d_in, "input")
        C = self.input_scale
        if C == 1.0:
            return self.pre_acts_normalised(x)
        return self.pre_acts_normalised(x / C) * C

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for raw activations x (..., d_in): 1[pre > θ]·pre, latents in released units.

        With θ > 0 this equals the release code's `mask * relu(pre_acts)`."""
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold * self.input_scale)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """x̂ = W_decᵀ f + b_dec for latents f (..., d_sae) in released units."""
        self._check_input(f, self.d_sae, "latents")
        C = self.input_scale
        if C == 1.0:
            return self.decode_normalised(f)
        return self.decode_normalised(f / C) * C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def training_forward(
        self, xn: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """On normalised inputs: (x̂, f, pre-activations, the per-token L0 with its STE)."""
        pre = self.pre_acts_normalised(xn)
        f = jumprelu(pre, self.threshold, self.bandwidth)
        l0 = step(pre, self.threshold, self.bandwidth).sum(-1)
        return self.decode_normalised(f), f, pre, l0

    # --- folding and the release format --------------------------------------------------

    @torch.no_grad()
    def folded(self) -> JumpReLUSAE:
        """Gemma Scope App. A: the equivalent SAE on raw activations with no pre-encoder bias
        (input_scale 1, apply_b_dec_to_input False). The fold is done in float64."""
        C = self.input_scale
        W_enc = self.W_enc.double()
        b_dec = self.b_dec.double()
        b_enc = self.b_enc.double()
        if self.apply_b_dec_to_input:
            b_enc = b_enc - b_dec @ W_enc
        out = JumpReLUSAE(
            self.d_in,
            self.d_sae,
            bandwidth=self.bandwidth * C,
            threshold_init=self.threshold_init * C,
        )
        out.W_enc.copy_(self.W_enc)
        out.W_dec.copy_(self.W_dec)
        out.b_enc.copy_((C * b_enc).float())
        out.b_dec.copy_((C * b_dec).float())
        out.threshold.copy_((C * self.threshold.double()).float())
        return out.to(self.W_enc.device)

    def release_params(self) -> dict[str, torch.Tensor]:
        """The folded tensors under the Gemma Scope `params.npz` keys (fp32, on the CPU)."""
        f = self.folded()
        return {k: getattr(f, k).detach().cpu().float().contiguous() for k in PARAM_NAMES}

    @classmethod
    def from_release_params(
        cls, params: Mapping[str, torch.Tensor | np.ndarray], bandwidth: float = 1e-3
    ) -> JumpReLUSAE:
        """An SAE (released form: raw activations) from `W_enc, W_dec, b_enc, b_dec,
        threshold`; shapes are checked and every problem is named in one error."""
        t = {
            k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v)
            for k, v in params.items()
        }
        d_in, d_sae = check_release_shapes({k: tuple(v.shape) for k, v in t.items()})
        sae = cls(int(d_in), int(d_sae), bandwidth=bandwidth)
        with torch.no_grad():
            for k in PARAM_NAMES:
                getattr(sae, k).copy_(t[k].float())
        return sae

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rescale every latent direction (row of W_dec) to unit norm (§3.2)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out of W_dec's gradient its component along each (unit) latent direction,
        before the optimiser step (§3.2)."""
        g = self.W_dec.grad
        if g is not None:
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_sae={self.d_sae}, bandwidth={self.bandwidth:g}, "
            f"input_scale={self.input_scale:g}, apply_b_dec_to_input={self.apply_b_dec_to_input}"
        )
