"""A 2x super-resolution diffusion model: the stand-in for Imagen 3's upsamplers.

Imagen 3 generates 1024x1024 images and offers "2x, 4x or 8x upsampling" (Imagen Team 2024,
Sec. 1); the report says nothing about how. This is the cascaded-diffusion recipe (Saharia et
al. 2022, Ho et al. 2022) at toy scale, in pixel space: a diffusers `UNet2DModel` predicts the
noise of a noisy high-resolution image concatenated (channel-wise) with the bilinearly
upsampled low-resolution image. Training pairs come from high-resolution renders of the
simulated shapes world, each downsampled by area averaging; sampling is DDIM (20 steps) from
per-image noise (`core.seeding.torch_generator(seed, i)`), so an output does not depend on
batching. Used by the smoke and paper presets only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from alignlab.core.config import ConfigError, param
from alignlab.core.context import Context, require_context
from alignlab.core.seeding import torch_generator
from alignlab.t2i.model import images_to_tensor, tensor_to_uint8
from alignlab.t2i.train import _bar, _init_seeds, _torch_generator, _Training

PIXEL_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=True,
)


@dataclass(frozen=True)
class UpsamplerConfig:
    low_res: int = param(32, ge=4, help="input side in pixels")
    factor: int = param(2, choices=(2, 4, 8), help="upsampling factor (the report's 2/4/8x)")
    channels: tuple[int, ...] = param((32, 64), ge=1, nonempty=True, help="UNet2DModel widths")
    layers_per_block: int = param(1, ge=1, help="UNet2DModel layers per block")
    norm_groups: int = param(16, ge=1, help="group-norm groups")

    @property
    def high_res(self) -> int:
        return self.low_res * self.factor

    def validate(self) -> None:
        down = 2 ** (len(self.channels) - 1)
        if self.high_res % down:
            raise ConfigError(
                "channels", f"the output side {self.high_res} must be divisible by {down}"
            )
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ConfigError("channels", f"must be divisible by norm_groups, got {bad}")


@dataclass(frozen=True)
class UpsamplerTrainConfig:
    steps: int = param(1000, ge=0, help="gradient steps")
    batch: int = param(32, ge=1, help="images per step")
    lr: float = param(1e-3, gt=0, help="AdamW learning rate")
    log_every: int = param(50, ge=1, help="steps between metric lines")
    checkpoint_every: int = param(500, ge=0, help="steps between checkpoints; 0: only the last")


class TrainedUpsampler(NamedTuple):
    model: Any  # UNet2DModel, eval mode
    metrics: dict[str, Any]


def build_upsampler(cfg: UpsamplerConfig, seed: int = 0):
    """A `UNet2DModel` on 6 channels (noisy high-res + upsampled low-res) -> 3 (the noise)."""
    from diffusers import UNet2DModel

    from alignlab.t2i.model import _seeded

    cfg.validate()
    n = len(cfg.channels)
    with _seeded(seed):
        return UNet2DModel(
            sample_size=cfg.high_res,
            in_channels=6,
            out_channels=3,
            block_out_channels=tuple(cfg.channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=cfg.norm_groups,
        )


def downsample(x, factor: int):
    """Area-average downsampling of float (N, 3, H, W)."""
    import torch.nn.functional as F

    return F.avg_pool2d(x, factor)


def condition(low, factor: int):
    """The conditioning image: the low-resolution image upsampled bilinearly."""
    import torch.nn.functional as F

    return F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False)


def bilinear(low_images: np.ndarray, factor: int) -> np.ndarray:
    """The baseline: uint8 images upsampled bilinearly (the upsampler's conditioning image)."""
    import torch

    with torch.no_grad():
        return tensor_to_uint8(condition(images_to_tensor(np.asarray(low_images)), factor))


def _check(images: np.ndarray, side: int, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (side, side, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"{what} must be uint8 (N, {side}, {side}, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{what} is empty")
    return images


def train_upsampler(
    high_images: np.ndarray,
    cfg: UpsamplerConfig,
    tcfg: UpsamplerTrainConfig,
    rng: np.random.Generator,
    ctx: Context | None = None,
) -> TrainedUpsampler:
    """Train the upsampler on uint8 (N, high_res, high_res, 3) images (their area-downsampled
    versions are the inputs); checkpoints and resume as `train.train_unet`."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    if ctx is not None:
        require_context(ctx)
    high_images = _check(high_images, cfg.high_res, "high_images")
    init_seed, noise_seed = _init_seeds(rng, 2)
    model = build_upsampler(cfg, seed=init_seed).train()
    sched = DDPMScheduler(**PIXEL_SCHEDULE)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr)
    gen = _torch_generator(noise_seed)
    run = _Training(
        ctx,
        tcfg.log_every,
        modules={"upsampler": model},
        optimizers={"adamw": opt},
        generators={"rng": rng, "noise": gen},
    )
    with _bar(ctx, tcfg.steps, "upsampler", run.start) as bar:
        for step in range(run.start, tcfg.steps):
            rows = rng.integers(0, len(high_images), size=tcfg.batch)
            x = images_to_tensor(high_images[rows])
            cond = condition(downsample(x, cfg.factor), cfg.factor)
            noise = torch.randn(x.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (len(x),), generator=gen)
            pred = model(torch.cat([sched.add_noise(x, noise, t), cond], 1), t).sample
            loss = F.mse_loss(pred, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            run.prog.add(done, done == tcfg.steps, loss=float(loss.detach()))
            bar.advance(1)
            if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < tcfg.steps:
                run.save(done)
    if run.start < tcfg.steps:
        run.save(tcfg.steps)
    model.eval().requires_grad_(False)
    return TrainedUpsampler(model, run.metrics())


def upsample(
    model: Any, low_images: np.ndarray, seed: int, steps: int = 20, batch: int = 64
) -> np.ndarray:
    """uint8 (N, f·h, f·w, 3) from uint8 (N, h, w, 3): DDIM `steps` steps, image i's noise
    from (seed, i)."""
    import torch
    from diffusers import DDIMScheduler

    high = int(model.config.sample_size)
    factor = high // np.asarray(low_images).shape[1] if np.asarray(low_images).ndim == 4 else 0
    if factor not in (2, 4, 8) or factor * np.asarray(low_images).shape[1] != high:
        raise ValueError(
            f"low_images must be uint8 (N, h, h, 3) with h = {high} / 2, 4 or 8 for this "
            f"model (output side {high}), got shape {np.asarray(low_images).shape}"
        )
    low_images = _check(low_images, high // factor, "low_images")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    out = []
    with torch.no_grad():
        for lo in range(0, len(low_images), batch):
            low = images_to_tensor(low_images[lo : lo + batch])
            cond = condition(low, factor)
            x = torch.stack(
                [
                    torch.randn(cond.shape[1:], generator=torch_generator(seed, i))
                    for i in range(lo, lo + len(low))
                ]
            )
            sched = DDIMScheduler(**PIXEL_SCHEDULE, set_alpha_to_one=False, steps_offset=1)
            sched.set_timesteps(int(steps))
            for t in sched.timesteps:
                eps = model(torch.cat([x, cond], 1), t).sample
                x = sched.step(eps, t, x, eta=0.0).prev_sample
            out.append(tensor_to_uint8(x))
    return np.concatenate(out)
