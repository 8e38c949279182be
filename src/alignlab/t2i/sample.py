"""Sampling and saving: DDIM with classifier-free guidance, and a plain diffusers folder.

Imagen 3's report (Imagen Team 2024) names no sampler; this is the usual latent-diffusion
one: DDIM (20 steps, eta 0) on the scaled_linear schedule, classifier-free guidance
ε = ε_u + w (ε_c − ε_u) with the empty caption's embedding as ε_u's condition (the text
encoder saw empty captions through caption dropout), w = 4 by default. It is the same
computation as diffusers' `StableDiffusionPipeline.__call__`, done without its per-call
checks and progress bar, and the noise of prompt i comes from its own generator
(`core.seeding.torch_generator(seed, i)`), so an image does not depend on which other prompts
share its batch.

`T2IPipeline.save(folder)` writes a plain `StableDiffusionPipeline` folder (no safety
checker, no feature extractor, the word-level tokenizer as a `PreTrainedTokenizerFast`), and
`diffusers.DiffusionPipeline.from_pretrained(folder)` given the same initial latents
(`T2IPipeline.initial_latents`) reproduces `__call__`'s images bit for bit
(`diffusers_images`). diffusers skips guidance when w <= 1, and so does `__call__` at w = 1
(ε_c alone, the same value); for 0 <= w < 1 `__call__` still applies the formula, which a
diffusers pipeline does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.io import atomic_folder
from alignlab.core.seeding import torch_generator
from alignlab.t2i.model import SCHEDULE, tensor_to_uint8, tokenize

# what a complete pipeline folder holds: component -> the files it needs
REQUIRED_FILES = {
    "": ("model_index.json",),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json"),
    "scheduler": ("scheduler_config.json",),
}


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, got one string; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty: give at least one prompt")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"every prompt must be a string, got {type(bad[0]).__name__}")
    return prompts


def check_sampling(guidance: float, steps: int, batch: int) -> None:
    if not np.isfinite(guidance) or guidance < 0:
        raise ValueError(
            f"guidance must be >= 0 (0: unconditional, 1: conditional only, > 1: "
            f"classifier-free guidance), got {guidance}"
        )
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")


class T2IPipeline:
    """A trained text-to-image model: `pipe(prompts, seed) -> uint8 (N, res, res, 3)`.

    vae: AutoencoderKL; text_encoder: CLIPTextModel; tokenizer: `build_tokenizer(...)`;
    unet: UNet2DConditionModel; scaling_factor: the latent scale (default the VAE config's;
    stored there, as diffusers reads it); scheduler_config: DDIM settings (default
    `model.SCHEDULE`).
    """

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scaling_factor: float | None = None,
        scheduler_config: dict[str, Any] | None = None,
    ):
        from diffusers import DDIMScheduler

        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        if scaling_factor is not None:
            vae.register_to_config(scaling_factor=float(scaling_factor))
        self.scheduler = DDIMScheduler.from_config(dict(scheduler_config or SCHEDULE))
        for m in (vae, text_encoder, unet):
            m.eval().requires_grad_(False)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), s, s)

    @property
    def res(self) -> int:
        return self.latent_shape[1] * 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -----------------------------------------------------------------------------------

    def initial_latents(self, n: int, seed: int, start: int = 0):
        """The initial noise of prompts start..start+n-1: prompt i's from its own generator
        (torch_generator(seed, i)), so it does not depend on batching."""
        import torch

        shape = self.latent_shape
        return torch.stack(
            [
                torch.randn(shape, generator=torch_generator(seed, i))
                for i in range(start, start + n)
            ]
        )

    def encode_prompts(self, prompts: Sequence[str]):
        """The text encoder's last hidden states (N, max_len, width), as diffusers computes
        them (padded to max length, no attention mask)."""
        return self.text_encoder(tokenize(self.tokenizer, prompts))[0]

    def denoise(self, latents, cond, uncond, guidance: float, steps: int):
        """DDIM from `latents` under the text states `cond` (and `uncond` for guidance)."""
        import torch

        sched = self.scheduler.__class__.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        latents = latents * sched.init_noise_sigma
        guided = guidance != 1.0
        states = torch.cat([uncond, cond]) if guided else cond
        for t in sched.timesteps:
            x = torch.cat([latents] * 2) if guided else latents
            x = sched.scale_model_input(x, t)
            eps = self.unet(x, t, encoder_hidden_states=states, return_dict=False)[0]
            if guided:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            latents = sched.step(eps, t, latents, eta=0.0, return_dict=False)[0]
        return latents

    def decode(self, latents) -> np.ndarray:
        return tensor_to_uint8(self.vae.decode(latents / self.scaling_factor).sample)

    def __call__(
        self,
        prompts: Sequence[str],
        seed: int,
        guidance: float = 4.0,
        steps: int = 20,
        batch: int = 64,
    ) -> np.ndarray:
        """uint8 (N, res, res, 3): prompt i's image from DDIM `steps` steps with guidance w,
        its initial noise from (seed, i). Deterministic given the arguments."""
        import torch

        prompts = check_prompts(prompts)
        check_sampling(guidance, steps, batch)
        out = []
        with torch.inference_mode():  # the same arithmetic as no_grad, less bookkeeping
            for lo in range(0, len(prompts), batch):
                chunk = prompts[lo : lo + batch]
                latents = self.initial_latents(len(chunk), seed, start=lo)
                cond = self.encode_prompts(chunk)
                uncond = self.encode_prompts([""] * len(chunk)) if guidance != 1.0 else None
                latents = self.denoise(latents, cond, uncond, float(guidance), int(steps))
                out.append(self.decode(latents))
        return np.concatenate(out)

    # -----------------------------------------------------------------------------------

    def to_diffusers(self):
        """The same components as a `diffusers.StableDiffusionPipeline` (shared, not copied)."""
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler.__class__.from_config(self.scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, folder: str | Path) -> Path:
        """Write a plain StableDiffusionPipeline folder, atomically (all of it or nothing)."""
        folder = Path(folder)
        with quiet_hf(), atomic_folder(folder) as tmp:
            self.to_diffusers().save_pretrained(tmp, safe_serialization=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> T2IPipeline:
        """See `_load`; the libraries' loading chatter (progress bars, the note that
        `accelerate` is absent) is silenced while it runs."""
        with quiet_hf():
            return cls._load(folder)

    @classmethod
    def _load(cls, folder: str | Path) -> T2IPipeline:
        """Load a folder written by `save` (or any compatible StableDiffusionPipeline folder
        with a DDIM-compatible scheduler); a missing component is one clear error."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"pipeline folder {folder} does not exist")
        for part, files in REQUIRED_FILES.items():
            missing = [f for f in files if not (folder / part / f).is_file()]
            if missing:
                what = f"component {part!r}" if part else "the pipeline index"
                raise ValueError(
                    f"incomplete pipeline folder {folder}: {what} lacks {missing} (expected "
                    f"{', '.join(str(Path(part) / f) for f in files)})"
                )
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        return cls(
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae"),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
            tokenizer=PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer"),
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
            scheduler_config=dict(sched.config),
        )


@contextmanager
def quiet_hf():
    """diffusers' and transformers' loggers at error level, their progress bars off; restored
    afterwards."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        if bars[0]:
            dlog.enable_progress_bar()
        if bars[1]:
            tlog.enable_progress_bar()


def diffusers_images(
    pipe: Any,
    prompts: Sequence[str],
    latents: Any,
    guidance: float = 4.0,
    steps: int = 20,
) -> np.ndarray:
    """Images from a diffusers text-to-image pipeline (e.g. `DiffusionPipeline.from_pretrained`
    on a saved folder) given the initial latents, converted to uint8 as `T2IPipeline` does;
    one call, so give the prompts of one `T2IPipeline` batch."""
    out = pipe(
        list(prompts),
        latents=latents,
        guidance_scale=float(guidance),
        num_inference_steps=int(steps),
        output_type="np",
    ).images
    return (np.asarray(out) * 255).round().astype(np.uint8)
