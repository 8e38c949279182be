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


class _JumpReLUWithL0(torch.autograd.Function):
    """f = JumpReLU_θ(z) and the per-token L0 Σ_i H(z_i − θ_i) in one pass, with the same
    STEs as `sae.jumprelu` and `sae.step` (tested equal): the kernel K((z − θ)/ε) is
    computed once in the backward pass instead of twice, and nothing (B, d_sae)-sized but
    z is kept for it."""

    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float):
        off = z <= threshold
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        l0 = z.shape[-1] - off.sum(-1).to(z.dtype)
        return z.masked_fill(off, 0.0), l0

    @staticmethod
    def backward(ctx, grad_f, grad_l0):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        diff = z - threshold
        grad_z = grad_f.masked_fill(diff <= 0, 0.0) if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            # −(θ/ε) K g_f − (1/ε) K g_l0 summed over the batch, K = 1[|z − θ| < ε/2]
            far = diff.abs_() >= 0.5 * eps
            g = torch.addcmul(grad_l0.unsqueeze(-1), grad_f, threshold).masked_fill_(far, 0.0)
            grad_theta = g.sum(0).mul_(-1.0 / eps)
        return grad_z, grad_theta, None


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

    def schedules(self) -> dict[str, int]:
        return {"lr_warmup_steps": self.lr_warmup, "l0_warmup_steps": self.l0_warmup}

    def step(self, xn: torch.Tensor) -> dict[str, float]:
        sae, cfg = self.sae, self.cfg
        lr = lr_at(self.n_steps, cfg.lr, self.lr_warmup)
        lam = l0_coefficient_at(self.n_steps, cfg.l0_coefficient, self.l0_warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        pre = sae.pre_acts_normalised(xn)
        f, l0 = _JumpReLUWithL0.apply(pre, sae.threshold, sae.bandwidth)
        x_hat = sae.decode_normalised(f)
        mse = (x_hat - xn).pow(2).sum(-1).mean()
        l0_mean = l0.mean()
        loss = mse + lam * l0_mean
        dead_loss = None
        if cfg.dead_loss_coefficient > 0:
            dead = (self.tokens - self.last_fired) >= cfg.dead_window
            if bool(dead.any()):
                # Σ over dead latents of relu(θ − z)·‖W_dec,i‖, averaged over tokens
                gap = (sae.threshold - pre).relu() * dead
                dead_loss = (gap * sae.W_dec.norm(dim=1)).sum(-1).mean()
                loss = loss + cfg.dead_loss_coefficient * dead_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        with torch.no_grad():
            sae.normalise_decoder()
            sae.threshold.clamp_(min=1e-6)  # θ > 0 (log θ keeps it positive in the paper)
            fired = (f > 0).sum(0)
        self._account(fired, xn.shape[0])
        self.n_steps += 1
        out = {
            "loss": loss.item(),
            "mse": mse.item(),
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
