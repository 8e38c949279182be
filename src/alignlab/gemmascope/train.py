"""Training JumpReLU SAEs as Gemma Scope did (§3.2), one or many in lockstep on one stream.

- Adam with (β1, β2) = (0, 0.999), ε = 1e-8, learning rate η.
- Learning-rate warmup: cosine from 0.1 η to η over the first steps (1,000 in the paper).
- Sparsity warmup: λ rises linearly from 0 over the first steps (10,000 in the paper).
- Unit-norm latent directions: the gradient component parallel to each row of W_dec is
  projected out before the Adam update, and the rows are renormalised after it.
- Inputs divided by a fixed scalar C with E‖x/C‖² = 1, estimated before training from its
  own batches; `JumpReLUSAE.folded()` folds C back in afterwards (App. A).
- fp32 throughout. No resampling, ghost grads or auxiliary loss (Gemma Scope has none); an
  optional dead-latent loss, off by default, is offered for research and is *not* part of
  Gemma Scope (Anthropic's 2025 pre-activation loss, as SAELens' `pre_act_loss_coefficient`).

The warmups are given as fractions of the run so that they scale with the training length;
the defaults are the paper's own fractions for an 8B-token run at batch 4,096
(1,953,125 steps): 1,000 and 10,000 steps. The step counts actually used are logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.core.checkpoint import Checkpoint, Checkpointer
from alignlab.core.config import param, validate
from alignlab.core.errors import AlignlabError

from .sae import JumpReLUSAE

PAPER_STEPS = 8_000_000_000 // 4096  # 1,953,125 steps of 4,096 activations (8B tokens)


@dataclass
class SAETrainConfig:
    """One SAE's training settings (Gemma Scope §3.2 defaults)."""

    d_sae: int = param(4096, ge=1, help="latents of the SAE (its width)")
    l0_coefficient: float = param(1e-3, ge=0, help="λ, the sparsity coefficient (Fig. 3 uses 1e-3)")
    lr: float = param(7e-5, gt=0, help="Adam's learning rate η")
    adam_beta1: float = param(0.0, ge=0, lt=1, help="Adam's β1")
    adam_beta2: float = param(0.999, ge=0, lt=1, help="Adam's β2")
    adam_eps: float = param(1e-8, gt=0, help="Adam's ε")
    bandwidth: float = param(1e-3, gt=0, help="the STE bandwidth ε, in units where E‖x‖² = 1")
    threshold_init: float = param(1e-3, gt=0, help="θ₀, every latent's initial threshold")
    lr_warmup_frac: float = param(1_000 / PAPER_STEPS, ge=0, lt=1, help="LR warmup as run fraction")
    l0_warmup_frac: float = param(10_000 / PAPER_STEPS, ge=0, lt=1, help="λ warmup as run fraction")
    dead_window: int = param(1_000_000, ge=1, help="tokens in a dead/dense counting window")
    dense_threshold: float = param(0.1, gt=0, le=1, help='"dense": fires on > this frac. of tokens')
    dead_loss_coefficient: float = param(0.0, ge=0, help="non-Gemma-Scope dead-latent pre-act loss")
    init_seed: int = param(0, help="seeds the SAE's initialisation")

    def warmup_steps(self, total_steps: int) -> tuple[int, int]:
        """(lr warmup, λ warmup) in steps for a run of `total_steps` (at least 1 each when
        the fraction is non-zero)."""
        lr = max(1, round(self.lr_warmup_frac * total_steps)) if self.lr_warmup_frac else 0
        l0 = max(1, round(self.l0_warmup_frac * total_steps)) if self.l0_warmup_frac else 0
        return lr, l0


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Cosine warmup from 0.1 η to η over `warmup` steps, then η (Gemma Scope §3.2)."""
    if step >= warmup:
        return lr
    return lr * (0.1 + 0.9 * 0.5 * (1.0 - math.cos(math.pi * step / warmup)))


def l0_coefficient_at(step: int, coefficient: float, warmup: int) -> float:
    """λ rising linearly from 0 over `warmup` steps (Gemma Scope §3.2)."""
    return coefficient if step >= warmup else coefficient * step / warmup


def count_true(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """The number of True entries of a 2-D bool tensor along `dim` (0 or -1), as int64.

    Exact, like `mask.sum(dim)`; on the CPU that first copies the whole mask to int64 (8 bytes
    an entry), so here blocks of 255 entries are summed as uint8 first (they cannot overflow)
    and only the block counts are widened."""
    k = 255
    if mask.device.type != "cpu" or mask.dim() != 2 or dim not in (0, -1, 1):
        return mask.sum(dim)
    rows, cols = mask.shape
    u = mask.view(torch.uint8)
    if dim == 0:
        q = rows // k
        out = u[: q * k].reshape(q, k, cols).sum(1, dtype=torch.uint8).sum(0)
        return out + mask[q * k :].sum(0) if rows % k else out
    q = cols // k
    out = u[:, : q * k].reshape(rows, q, k).sum(-1, dtype=torch.uint8).sum(-1)
    return out + mask[:, q * k :].sum(-1) if cols % k else out


# where the θ-gradient gathers at the near entries (see _JumpReLUWithL0); dense elsewhere
_SPARSE_THETA_GRAD_DEVICES = ("cpu",)


class _JumpReLUWithL0(torch.autograd.Function):
    """f = JumpReLU_θ(z), the per-token L0 Σ_i H(z_i − θ_i) and the mask H(θ − z) (True where
    the latent is off; not differentiable), with the STEs of `sae.jumprelu` and `sae.step`
    (JumpReLU App. J; tested equal):

        ∂L/∂z = H(z − θ) ∂L/∂f,    ∂L/∂θ = −(1/ε) Σ_batch K((z − θ)/ε) (θ ∂L/∂f + ∂L/∂L0).

    K is non-zero only on the few entries within ε/2 of θ. On the CPU they are found once in
    the forward pass (as flat indices) and the backward pass gathers the gradients there
    instead of forming the dense (B, d_sae) product; the batch sum still runs over a dense,
    zero-filled (B, d_sae) buffer, so its order, and every bit of ∂L/∂θ, is the dense form's.
    Elsewhere (a GPU, where finding the indices would stall the stream) the dense form is
    used. Nothing (B, d_sae)-sized is kept for the backward pass but that buffer and masks.

    With `inplace` the mask is applied to z itself (which then is f; z must not be needed
    afterwards) and the incoming gradient of f is masked in place (it must be f's alone, as it
    is when f feeds only the decoder's matmul). `workspace`, a tensor shaped and typed like z
    and free until the backward pass has run, is used for that buffer; reusing one across
    steps saves allocating (and page-faulting) 4·B·d_sae fresh bytes every step."""

    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float, inplace: bool = False, workspace=None):
        ctx.set_materialize_grads(False)
        off = z <= threshold
        d = z.shape[-1]
        l0 = d - count_true(off.reshape(-1, d), -1).reshape(off.shape[:-1]).to(z.dtype)
        far = near = buf = None
        if ctx.needs_input_grad[1]:
            # K((z − θ)/ε) = 0 ⟺ |z − θ| ≥ ε/2, computed as in the dense form (a NaN is kept)
            buf = torch.sub(z, threshold, out=workspace) if workspace is not None else z - threshold
            far = buf.abs_() >= 0.5 * bandwidth
            if z.device.type in _SPARSE_THETA_GRAD_DEVICES:
                near, far = far.logical_not_().view(-1).nonzero().squeeze(1), None
        if inplace:
            f = z.masked_fill_(off, 0.0)
            ctx.mark_dirty(z)
        else:
            f = z.masked_fill(off, 0.0)
        ctx.mark_non_differentiable(off)
        ctx.save_for_backward(threshold, off)
        ctx.near, ctx.far, ctx.buf, ctx.bandwidth, ctx.inplace = near, far, buf, bandwidth, inplace
        return f, l0, off

    @staticmethod
    def backward(ctx, grad_f, grad_l0, _grad_off):
        threshold, off = ctx.saved_tensors
        near, far, buf, eps = ctx.near, ctx.far, ctx.buf, ctx.bandwidth
        grad_theta = None
        if ctx.needs_input_grad[1]:
            d = off.shape[-1]
            g = buf.view(-1, d)
            gl = grad_l0.reshape(-1, 1) if grad_l0 is not None else None
            if near is None:  # dense: (θ g_f + g_l0) K over the whole batch
                if grad_f is None:
                    g.copy_(gl.expand_as(g) if gl is not None else torch.zeros((), dtype=g.dtype))
                elif gl is None:
                    torch.mul(grad_f.reshape(-1, d), threshold, out=g)
                else:
                    torch.addcmul(gl, grad_f.reshape(-1, d), threshold, out=g)
                g.masked_fill_(far.view(-1, d), 0.0)
            else:  # the same products at the near entries only, in a zero-filled buffer
                rows, cols = near // d, near % d
                if grad_f is not None:
                    gf = grad_f.reshape(-1)[near]
                    gln = gl.view(-1)[rows] if gl is not None else torch.zeros_like(gf)
                    vals = torch.addcmul(gln, gf, threshold[cols])
                else:
                    vals = gl.view(-1)[rows] if gl is not None else None
                g.zero_()
                if vals is not None:
                    g.view(-1)[near] = vals.to(g.dtype)  # bf16 z (autocast), fp32 θ
            grad_theta = g.sum(0).mul_(-1.0 / eps)
        grad_z = None
        if ctx.needs_input_grad[0] and grad_f is not None:
            if ctx.inplace:
                grad_z = grad_f.masked_fill_(off, 0.0)
            else:
                grad_z = grad_f.masked_fill(off, 0.0)
        return grad_z, grad_theta, None, None, None


class SAETrainer:
    """One SAE's optimiser, schedules and dead/dense accounting; `step(xn)` trains on one
    batch of *normalised* activations (N, d_in) and returns its scalar metrics."""

    def __init__(self, sae: JumpReLUSAE, cfg: SAETrainConfig, total_steps: int):
        validate(cfg)
        if total_steps < 1:
            raise AlignlabError(f"total_steps must be >= 1, got {total_steps}")
        self.sae, self.cfg, self.total_steps = sae, cfg, int(total_steps)
        self.lr_warmup, self.l0_warmup = cfg.warmup_steps(self.total_steps)
        self.optimizer = torch.optim.Adam(
            sae.parameters(),
            lr=cfg.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            foreach=True,
        )
        self.n_steps = 0
        self.tokens = 0
        d = sae.d_sae
        dev = sae.W_enc.device
        self.window_counts = torch.zeros(d, dtype=torch.int64, device=dev)
        self.window_tokens = 0
        self.last_fired = torch.zeros(d, dtype=torch.int64, device=dev)  # token count
        self.dead_fraction = float("nan")
        self.dense_fraction = float("nan")
        self._workspace: torch.Tensor | None = None  # the θ-gradient buffer, reused per step

    def schedules(self) -> dict[str, int]:
        return {"lr_warmup_steps": self.lr_warmup, "l0_warmup_steps": self.l0_warmup}

    def step(self, xn: torch.Tensor) -> dict[str, float]:
        sae, cfg = self.sae, self.cfg
        lr = lr_at(self.n_steps, cfg.lr, self.lr_warmup)
        lam = l0_coefficient_at(self.n_steps, cfg.l0_coefficient, self.l0_warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        pre = sae.pre_acts_normalised(xn)
        dead_loss = None
        if cfg.dead_loss_coefficient > 0:
            dead = (self.tokens - self.last_fired) >= cfg.dead_window
            if bool(dead.any()):
                # Σ over dead latents of relu(θ − z)·‖W_dec,i‖, averaged over tokens; taken
                # before f overwrites pre in place
                gap = (sae.threshold - pre).relu() * dead
                dead_loss = (gap * sae.W_dec.norm(dim=1)).sum(-1).mean()
        theta_nonneg = bool((sae.threshold >= 0).all())
        w = self._workspace
        if w is None or (w.shape, w.dtype, w.device) != (pre.shape, pre.dtype, pre.device):
            self._workspace = torch.empty_like(pre)
        f, l0, off = _JumpReLUWithL0.apply(pre, sae.threshold, sae.bandwidth, True, self._workspace)
        x_hat = sae.decode_normalised(f)
        mse = (x_hat - xn).pow(2).sum(-1).mean()
        l0_mean = l0.mean()
        loss = mse + lam * l0_mean
        if dead_loss is not None:
            loss = loss + cfg.dead_loss_coefficient * dead_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        mse_value = mse.item()
        with torch.no_grad():
            sae.normalise_decoder()
            sae.threshold.clamp_(min=1e-6)  # θ > 0 (log θ keeps it positive in the paper)
            if theta_nonneg and math.isfinite(mse_value):
                # f > 0 exactly where the latent is on: z > θ ≥ 0 there, and a finite MSE
                # rules out NaN or ±inf in f
                fired = xn.shape[0] - count_true(off, 0)
            else:
                fired = (f > 0).sum(0)
        self._account(fired, xn.shape[0])
        self.n_steps += 1
        out = {
            "loss": loss.item(),
            "mse": mse_value,
            "l0": l0_mean.item(),
            "lr": lr,
            "l0_coefficient": lam,
            "dead_fraction": self.dead_fraction,
            "dense_fraction": self.dense_fraction,
        }
        if dead_loss is not None:
            out["dead_loss"] = float(dead_loss)
        return out

    def _account(self, fired: torch.Tensor, n: int) -> None:
        self.tokens += n
        self.last_fired[fired > 0] = self.tokens
        self.window_counts += fired
        self.window_tokens += n
        if self.window_tokens >= self.cfg.dead_window:
            freq = self.window_counts.double() / self.window_tokens
            self.dead_fraction = float((self.window_counts == 0).double().mean())
            self.dense_fraction = float((freq > self.cfg.dense_threshold).double().mean())
            self.window_counts.zero_()
            self.window_tokens = 0

    # --- checkpointing: the accounting counters (the SAE and Adam go by the core's scheme) --

    def counter_tensors(self) -> dict[str, torch.Tensor]:
        return {"window_counts": self.window_counts, "last_fired": self.last_fired}

    def counter_state(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "tokens": self.tokens,
            "window_tokens": self.window_tokens,
            "dead_fraction": self.dead_fraction,
            "dense_fraction": self.dense_fraction,
            "input_scale": self.sae.input_scale,
        }

    def load_counters(self, tensors: Mapping[str, torch.Tensor], state: Mapping) -> None:
        self.window_counts.copy_(tensors["window_counts"])
        self.last_fired.copy_(tensors["last_fired"])
        self.n_steps = int(state["n_steps"])
        self.tokens = int(state["tokens"])
        self.window_tokens = int(state["window_tokens"])
        self.dead_fraction = float(state["dead_fraction"])
        self.dense_fraction = float(state["dense_fraction"])
        self.sae.input_scale = float(state["input_scale"])


def save_trainers(checkpoint: Checkpointer, step: int, trainers: Mapping[str, SAETrainer]) -> None:
    """Checkpoint SAE trainers trained in lockstep: the i-th trainer's SAE and Adam as the
    module and optimiser `sae<i>` (the core's training-state scheme), its counters as tensors
    `sae<i>.<counter>` and JSON state under its name."""
    tensors: dict[str, torch.Tensor] = {}
    state, modules, optimizers = {}, {}, {}
    for i, (name, tr) in enumerate(trainers.items()):
        key = f"sae{i}"
        modules[key], optimizers[key] = tr.sae, tr.optimizer
        tensors.update({f"{key}.{k}": v for k, v in tr.counter_tensors().items()})
        state[name] = tr.counter_state()
    checkpoint.save(step, tensors, {"trainers": state}, modules=modules, optimizers=optimizers)


def restore_trainers(ck: Checkpoint, trainers: Mapping[str, SAETrainer]) -> None:
    """Load what `save_trainers` saved into trainers of the same names, in the same order."""
    if list(ck.state["trainers"]) != list(trainers):
        raise AlignlabError("the checkpoint holds other SAEs than this run trains")
    keys = {f"sae{i}": tr for i, tr in enumerate(trainers.values())}
    ck.restore(
        modules={k: tr.sae for k, tr in keys.items()},
        optimizers={k: tr.optimizer for k, tr in keys.items()},
    )
    for (key, tr), name in zip(keys.items(), trainers):
        counters = {n: ck.tensors[f"{key}.{n}"] for n in tr.counter_tensors()}
        tr.load_counters(counters, ck.state["trainers"][name])


def estimate_input_scale(batches: Iterable[torch.Tensor]) -> float:
    """C = sqrt(E‖x‖²) over the given batches, so that E‖x/C‖² = 1 (§3.2 "Inputs")."""
    total, n = 0.0, 0
    for x in batches:
        total += float(x.double().pow(2).sum())
        n += x.shape[0]
    if n == 0 or not total > 0:
        raise AlignlabError("cannot estimate the input scale: no tokens or all-zero activations")
    return math.sqrt(total / n)


def new_sae(d_in: int, cfg: SAETrainConfig, input_scale: float = 1.0) -> JumpReLUSAE:
    """An SAE in training form (pre-encoder bias on) initialised from `cfg.init_seed`."""
    g = torch.Generator().manual_seed(cfg.init_seed)
    return JumpReLUSAE(
        d_in,
        cfg.d_sae,
        bandwidth=cfg.bandwidth,
        threshold_init=cfg.threshold_init,
        apply_b_dec_to_input=True,
        input_scale=input_scale,
        generator=g,
    )


def train_sae(
    batches: Iterator[torch.Tensor],
    d_in: int,
    cfg: SAETrainConfig,
    steps: int,
    *,
    scale_batches: int = 16,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[JumpReLUSAE, SAETrainer]:
    """Train one SAE on `steps` batches of raw activations after estimating C from the next
    `scale_batches` ones. Returns the trained SAE (training form; `.folded()` gives the
    release form) and its trainer."""
    scale = estimate_input_scale(next(batches) for _ in range(scale_batches))
    sae = new_sae(d_in, cfg, scale)
    trainer = SAETrainer(sae, cfg, steps)
    for i in range(steps):
        x = next(batches)
        m = trainer.step(x / scale)
        if on_step is not None:
            on_step(i, m)
    return sae, trainer
