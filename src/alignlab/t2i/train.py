"""Training the latent diffusion model: the VAE once, then the UNet and text encoder jointly.

Imagen 3 (Imagen Team 2024) is "a latent diffusion model" (Sec. 1); the report describes
neither its objective nor its optimiser, so this follows the usual diffusers recipe
(`examples/text_to_image/train_text_to_image.py`) on the simulated shapes world:

- `train_vae`: `AutoencoderKL` on uint8 images, loss MSE + L1 + kl·KL (kl = 1e-6), AdamW,
  batch 32. Afterwards the latents (posterior means) of all training images are encoded and
  `scaling_factor` = 1 / their standard deviation (Rombach et al. 2022's recipe), stored in
  the VAE's config as diffusers expects.
- `train_unet`: DDPM ε-prediction loss over 1000 steps with scaled_linear betas
  0.00085-0.012 (`DDPMScheduler.add_noise`), min-SNR-γ weighting with γ = 5 (Hang et al.
  2023; `snr_gamma` in diffusers' script: weight min(SNR, γ) / SNR), caption dropout 0.1 (an
  empty caption, which classifier-free guidance needs at sampling time), AdamW lr 1e-3,
  batch 64, gradient-norm clipping 1.0, and an `EMAModel` over the UNet and text-encoder
  parameters. The text encoder is trained jointly with the UNet (it is not a frozen T5-XXL;
  see `model.py`). Rows are drawn with replacement by the data pipeline's sampling weights
  (dedup and fairness down-weighting, Sec. 2), and each row's caption by the caller's
  `captions(rows, rng)` (original or synthetic captions, Sec. 2).

Both run in a context (a run's `ctx.stage(name, steps)`, a unit, or `RunContext.standalone`):
metric lines every `log_every` steps, and every `checkpoint_every` steps a checkpoint of the
modules, the AdamW states, the EMA shadow weights and the numpy/torch generators, so a killed
training resumed with `ctx.resume` ends with byte-identical weights. Everything random comes
from the caller's numpy Generator (and a torch Generator seeded from it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from alignlab.core.config import param
from alignlab.core.context import Context, require_context
from alignlab.t2i.model import (
    ModelConfig,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
    images_to_tensor,
    latent_std,
    tokenize,
)

CaptionFn = Callable[[np.ndarray, np.random.Generator], Sequence[str]]


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = param(2000, ge=0, help="VAE gradient steps")
    batch: int = param(32, ge=1, help="images per VAE step")
    lr: float = param(1e-3, gt=0, help="AdamW learning rate")
    weight_decay: float = param(0.0, ge=0, help="AdamW weight decay")
    kl: float = param(1e-6, ge=0, help="weight of the KL term (MSE + L1 + kl * KL)")
    encode_batch: int = param(256, ge=1, help="images per batch when encoding latents")
    log_every: int = param(50, ge=1, help="steps between metric lines")
    checkpoint_every: int = param(500, ge=0, help="steps between checkpoints; 0: only the last")


@dataclass(frozen=True)
class UNetTrainConfig:
    steps: int = param(4000, ge=0, help="UNet + text-encoder gradient steps")
    batch: int = param(64, ge=1, help="rows per step")
    lr: float = param(1e-3, gt=0, help="AdamW learning rate")
    weight_decay: float = param(1e-2, ge=0, help="AdamW weight decay")
    snr_gamma: float = param(5.0, ge=0, help="min-SNR-γ loss weighting (Hang et al. 2023); 0: off")
    caption_dropout: float = param(0.1, ge=0, le=1, help="probability of an empty caption")
    ema_decay: float = param(0.999, ge=0, le=1, help="EMAModel's maximum decay")
    grad_clip: float = param(1.0, ge=0, help="gradient-norm clip; 0: off")
    log_every: int = param(50, ge=1, help="steps between metric lines")
    checkpoint_every: int = param(500, ge=0, help="steps between checkpoints; 0: only the last")


class TrainedVAE(NamedTuple):
    vae: Any  # AutoencoderKL, eval mode, config.scaling_factor set
    scaling_factor: float
    metrics: dict[str, Any]


class TrainedT2I(NamedTuple):
    unet: Any  # UNet2DConditionModel with the EMA weights, eval mode
    text_encoder: Any  # CLIPTextModel with the EMA weights, eval mode
    metrics: dict[str, Any]


def _init_seeds(rng: np.random.Generator, n: int) -> list[int]:
    return [int(s) for s in rng.integers(0, 2**62, size=n)]


def _torch_generator(seed: int):
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _check_images(images: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (cfg.res, cfg.res, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (N, {cfg.res}, {cfg.res}, 3) for res={cfg.res}, got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError("images is empty: nothing to train on")
    return images


class _Progress:
    """Metric lines averaged over the steps since the last line, and the loss curve; both
    survive a resume through the checkpoint state."""

    def __init__(self, ctx: Context | None, every: int):
        self.ctx, self.every = ctx, every
        self.curve: list[tuple[int, float]] = []
        self.window: dict[str, float] = {}
        self.n, self.t0, self.timed = 0, time.perf_counter(), 0

    def state(self) -> dict[str, Any]:
        return {"curve": self.curve, "window": self.window, "n": self.n}

    def load(self, s: dict[str, Any]) -> None:
        self.curve = [tuple(c) for c in s["curve"]]
        self.window, self.n = dict(s["window"]), int(s["n"])

    def add(self, step: int, last: bool, **values: float) -> None:
        for k, v in values.items():
            self.window[k] = self.window.get(k, 0.0) + float(v)
        self.n += 1
        self.timed += 1
        if step % self.every == 0 or last:
            now = time.perf_counter()
            mean = {k: v / self.n for k, v in self.window.items()}
            self.curve.append((step, mean["loss"]))
            if self.ctx is not None:
                self.ctx.log_metrics(step, **mean, step_time_s=(now - self.t0) / max(self.timed, 1))
            self.window, self.n, self.t0, self.timed = {}, 0, now, 0


class _Training:
    """A checkpointed loop's bookkeeping: its progress, the resume from ctx's checkpoint (when
    ctx.resume) and saving `training` (modules, optimizers, generators) in one key scheme."""

    def __init__(self, ctx: Context | None, log_every: int, **training):
        self.ctx, self.training = ctx, training
        self.prog = _Progress(ctx, log_every)
        self.ckpt = ctx.checkpoint.load() if ctx is not None and ctx.resume else None
        self.start = 0
        if self.ckpt is not None:
            self.ckpt.restore(**training)
            ctx.log(f"resuming at step {self.ckpt.step}")
            self.start = self.ckpt.step
            self.prog.load(self.ckpt.state["progress"])

    def save(self, step: int, tensors: dict | None = None, **state: Any) -> None:
        if self.ctx is not None:
            state = {"progress": self.prog.state(), **state}
            self.ctx.checkpoint.save(step, tensors, state, **self.training)

    def metrics(self) -> dict[str, Any]:
        return {
            "loss_curve": list(self.prog.curve),
            "final_loss": self.prog.curve[-1][1] if self.prog.curve else float("nan"),
        }


def _bar(ctx: Context | None, total: int, what: str, start: int):
    from alignlab.core.console import Bar

    if ctx is None:
        return Bar(total, "", enabled=False)
    return ctx.bar(total, f"{ctx.name} {what}", completed=start)


# ---------------------------------------------------------------------------------------
# VAE


def vae_loss(vae, x, kl: float, generator) -> tuple[Any, dict[str, float]]:
    """MSE + L1 + kl·KL on a batch x in [-1, 1] (posterior sampled with `generator`)."""
    import torch.nn.functional as F

    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator=generator)).sample
    mse, l1, kld = F.mse_loss(rec, x), F.l1_loss(rec, x), post.kl().mean()
    loss = mse + l1 + kl * kld
    parts = {"loss": loss, "mse": mse, "l1": l1, "kl": kld}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def train_vae(
    images: np.ndarray,
    mcfg: ModelConfig,
    tcfg: VAETrainConfig,
    rng: np.random.Generator,
    ctx: Context | None = None,
) -> TrainedVAE:
    """Train an `AutoencoderKL` on uint8 (N, res, res, 3) images (module docstring).

    rng: the caller's stream; the initial weights, batches and posterior noise all come from
    it. ctx: where metric lines and checkpoints go (resumed from when ctx.resume); None:
    nothing is written. Returns (vae, scaling_factor, metrics) with vae.config.scaling_factor
    = scaling_factor = 1 / std of the training set's latents.
    """
    import torch

    if ctx is not None:
        require_context(ctx)
    images = _check_images(images, mcfg)
    init_seed, noise_seed = _init_seeds(rng, 2)
    vae = build_vae(mcfg, seed=init_seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    gen = _torch_generator(noise_seed)
    run = _Training(
        ctx,
        tcfg.log_every,
        modules={"vae": vae},
        optimizers={"adamw": opt},
        generators={"rng": rng, "noise": gen},
    )
    with _bar(ctx, tcfg.steps, "vae", run.start) as bar:
        for step in range(run.start, tcfg.steps):
            rows = rng.integers(0, len(images), size=tcfg.batch)
            x = images_to_tensor(images[rows])
            loss, parts = vae_loss(vae, x, tcfg.kl, gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            run.prog.add(done, done == tcfg.steps, **parts)
            bar.advance(1)
            if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < tcfg.steps:
                run.save(done)
    if run.start < tcfg.steps:
        run.save(tcfg.steps)
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=1.0)
    std = latent_std(encode_images(vae, images, tcfg.encode_batch))
    vae.register_to_config(scaling_factor=1.0 / std)
    return TrainedVAE(vae, 1.0 / std, {**run.metrics(), "latent_std": std})


def encode_images(vae, images: np.ndarray, batch: int = 256):
    """Scaled latents of uint8 (N, H, W, 3) images: the posterior mean (deterministic) times
    vae.config.scaling_factor, float32 (N, C, H/f, W/f)."""
    import torch

    images = np.asarray(images)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images_to_tensor(images[i : i + batch])
            out.append(vae.encode(x).latent_dist.mode())
    if not out:
        raise ValueError("images is empty: nothing to encode")
    return torch.cat(out) * float(vae.config.scaling_factor)


def decode_latents(vae, latents, batch: int = 256) -> np.ndarray:
    """uint8 images from scaled latents (the inverse of `encode_images`, up to the VAE)."""
    import torch

    from alignlab.t2i.model import tensor_to_uint8

    out = []
    with torch.no_grad():
        for i in range(0, len(latents), batch):
            z = latents[i : i + batch] / float(vae.config.scaling_factor)
            out.append(tensor_to_uint8(vae.decode(z).sample))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------
# UNet + text encoder


def diffusion_loss(unet, text_encoder, scheduler, latents, ids, generator, snr_gamma: float):
    """The ε-prediction loss with min-SNR-γ weighting (as in diffusers' text-to-image script)."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    noise = torch.randn(latents.shape, generator=generator)
    t = torch.randint(
        0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator
    ).long()
    noisy = scheduler.add_noise(latents, noise, t)
    states = text_encoder(ids)[0]
    pred = unet(noisy, t, encoder_hidden_states=states).sample
    if not snr_gamma:
        return F.mse_loss(pred.float(), noise.float())
    snr = compute_snr(scheduler, t)
    w = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0] / snr
    loss = F.mse_loss(pred.float(), noise.float(), reduction="none")
    return (loss.mean(dim=list(range(1, loss.ndim))) * w).mean()


def _check_weights(weights, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have one entry per latent row ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


def train_unet(
    latents,
    captions: CaptionFn,
    weights,
    tokenizer,
    mcfg: ModelConfig,
    tcfg: UNetTrainConfig,
    rng: np.random.Generator,
    ctx: Context | None = None,
    snapshots: Sequence[int] = (),
    on_snapshot: Callable[[int, Any, Any, dict], None] | None = None,
) -> TrainedT2I:
    """Train a UNet2DConditionModel and a CLIPTextModel jointly (module docstring).

    latents: float (N, C, h, w), already scaled (`encode_images`); weights: (N,) sampling
        weights (normalised here); captions(rows, rng) -> one caption per row, rows being
        positions into `latents`; tokenizer: `build_tokenizer(vocab, mcfg.max_len)`.
    rng: the caller's stream; initial weights, batches, captions, dropout and (via a torch
        Generator seeded from it) noise and timesteps all come from it.
    ctx: where metric lines and checkpoints go (resumed from when ctx.resume); None: nothing
        is written. Returns (unet, text_encoder, metrics), the models holding the EMA weights.
    snapshots, on_snapshot: after each step in `snapshots`, `on_snapshot(step, unet,
        text_encoder, metrics)` receives copies holding the EMA weights at that step (earlier
        versions of one run, e.g. an equal-compute anchor), before that step's checkpoint.
    """
    import torch
    from diffusers.training_utils import EMAModel

    if ctx is not None:
        require_context(ctx)
    latents = torch.as_tensor(latents, dtype=torch.float32)
    shape = (mcfg.latent_channels, mcfg.latent_res, mcfg.latent_res)
    if latents.ndim != 4 or tuple(latents.shape[1:]) != shape or len(latents) == 0:
        raise ValueError(
            f"latents must be (N, {', '.join(map(str, shape))}), got {tuple(latents.shape)}"
        )
    p = _check_weights(weights, len(latents))
    if tokenizer.model_max_length != mcfg.max_len:
        raise ValueError(
            f"the tokenizer pads to {tokenizer.model_max_length} tokens but mcfg.max_len is "
            f"{mcfg.max_len}; build it with build_tokenizer(vocab, max_len={mcfg.max_len})"
        )
    unet_seed, text_seed, noise_seed = _init_seeds(rng, 3)
    unet = build_unet(mcfg, seed=unet_seed).train()
    text_encoder = build_text_encoder(mcfg, len(tokenizer), seed=text_seed).train()
    scheduler = build_scheduler("ddpm")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ema = EMAModel(params, decay=tcfg.ema_decay, foreach=True)
    gen = _torch_generator(noise_seed)
    training = dict(
        modules={"unet": unet, "text_encoder": text_encoder},
        optimizers={"adamw": opt},
        generators={"rng": rng, "noise": gen},
    )
    run = _Training(ctx, tcfg.log_every, **training)
    if run.ckpt is not None:
        for i, s in enumerate(ema.shadow_params):
            s.copy_(run.ckpt.tensors[f"ema.{i}"])
        ema.optimization_step = int(run.ckpt.state["ema_step"])

    def save(step: int) -> None:
        shadow = {f"ema.{i}": s for i, s in enumerate(ema.shadow_params)}
        run.save(step, shadow, ema_step=int(ema.optimization_step))

    with _bar(ctx, tcfg.steps, "unet", run.start) as bar:
        for step in range(run.start, tcfg.steps):
            rows = rng.choice(len(latents), size=tcfg.batch, p=p)
            texts = list(captions(rows, rng))
            if len(texts) != len(rows):
                raise ValueError(f"captions returned {len(texts)} captions for {len(rows)} rows")
            drop = rng.random(len(rows)) < tcfg.caption_dropout
            texts = ["" if d else t for d, t in zip(drop, texts)]
            ids = tokenize(tokenizer, texts)
            loss = diffusion_loss(
                unet, text_encoder, scheduler, latents[rows], ids, gen, tcfg.snr_gamma
            )
            loss.backward()
            if tcfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(params)
            done = step + 1
            run.prog.add(done, done == tcfg.steps, loss=float(loss.detach()))
            bar.advance(1)
            if on_snapshot is not None and done in snapshots:
                on_snapshot(done, *ema_copies(unet, text_encoder, ema), run.metrics())
            if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < tcfg.steps:
                save(done)
    if run.start < tcfg.steps:
        save(tcfg.steps)
    return TrainedT2I(*ema_copies(unet, text_encoder, ema), run.metrics())


def ema_copies(unet, text_encoder, ema) -> tuple[Any, Any]:
    """Copies of the UNet and the text encoder holding the EMA weights, in eval mode."""
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    ema.copy_to(list(ema_unet.parameters()) + list(ema_text.parameters()))
    for m in (ema_unet, ema_text):
        m.eval().requires_grad_(False)
    return ema_unet, ema_text
