"""What the t2i experiments share: the trained models, their galleries and the rated studies.

The six models compared (Imagen 3 Sec. 3.1 compares six systems on every aspect):

| name      | what                                                                  |
|-----------|-----------------------------------------------------------------------|
| `full`    | every data stage of Sec. 2, original + synthetic captions, 4k steps   |
| `full@2k` | `full`'s EMA weights at 2k steps: the equal-compute anchor            |
| `short`   | the same filtered images, original (short, noisy) captions only, 2k   |
| `raw`     | the unfiltered, unweighted pool, 20/80 captions, 2k steps             |
| `full@1k` | `full`'s EMA weights at 1k steps: the "older version"                 |
| `full@w1` | `full` sampled without guidance (w = 1)                               |

The VAE is trained once and shared; each variant is trained once (one unit each, in
parallel) and cached in `ALIGNLAB_CACHE` as a plain `StableDiffusionPipeline` folder, keyed by
everything its weights depend on (the data, the model, the training config and the run
seed), so the four experiments of one seed train them once. Galleries (one image per prompt,
the same initial noise for every model: comparisons are paired) are cached beside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import ConfigError, param
from alignlab.core.io import atomic_write_json, read_json
from alignlab.core.resources import torch_threads
from alignlab.core.seeding import generator, int_seed
from alignlab.core.units import run_units
from alignlab.t2i import data as D
from alignlab.t2i import prompts as P
from alignlab.t2i import world as W
from alignlab.t2i.eval.artifacts import load_gallery, save_gallery
from alignlab.t2i.model import ModelConfig, build_tokenizer
from alignlab.t2i.sample import T2IPipeline, quiet_hf
from alignlab.t2i.train import UNetTrainConfig, VAETrainConfig, encode_images, train_unet, train_vae

MODELS = ("full", "full@2k", "short", "raw", "full@1k", "full@w1")
VARIANT_UNITS = ("full", "short", "raw")


@dataclass
class ModelsConfig:
    """The data, the networks and the training of the six compared models."""

    data: D.DataConfig = param(factory=D.DataConfig, help="the raw pool and its filters (Sec. 2)")
    model: ModelConfig = param(factory=ModelConfig, help="VAE, text encoder and UNet sizes")
    vae: VAETrainConfig = param(
        factory=lambda: VAETrainConfig(steps=2400), help="the shared VAE's training"
    )
    unet: UNetTrainConfig = param(
        factory=UNetTrainConfig, help="UNet + text-encoder training; `full` runs unet.steps"
    )
    short_steps: int = param(2000, ge=1, help="steps of `short` and `raw` (equal compute)")
    anchor_steps: int = param(2000, ge=1, help="the `full@2k` snapshot (equal-compute anchor)")
    older_steps: int = param(1000, ge=1, help="the `full@1k` snapshot (the older version)")
    max_objects: int = param(5, ge=1, le=8, help="objects per scene at most (paper preset: 8)")
    guidance: float = param(4.0, ge=0, help="classifier-free guidance w at sampling")
    sample_steps: int = param(20, ge=1, help="DDIM steps at sampling")

    def validate(self) -> None:
        for key in ("anchor_steps", "older_steps"):
            if getattr(self, key) > self.unet.steps:
                raise ConfigError(key, f"must be <= unet.steps ({self.unet.steps})")
        if self.model.res % self.model.vae_factor:
            raise ConfigError("model.res", f"{self.model.res} is not divisible by the VAE factor")


def smoke_models() -> ModelsConfig:
    return ModelsConfig(
        data=D.DataConfig(n_raw=240, n_calib=60),
        vae=VAETrainConfig(steps=6, batch=8, log_every=2, checkpoint_every=0),
        unet=UNetTrainConfig(steps=8, batch=8, log_every=2, checkpoint_every=4),
        short_steps=4,
        anchor_steps=4,
        older_steps=2,
        sample_steps=2,
    )


def paper_models() -> ModelsConfig:
    """The GPU preset (docs/t2i.md: 64x64, 16x16x4 latents, a ~40M UNet)."""
    from alignlab.t2i.model import PRESETS as MODEL_PRESETS

    return ModelsConfig(
        data=D.DataConfig(n_raw=300_000),
        model=MODEL_PRESETS["paper"],
        vae=VAETrainConfig(steps=20_000, batch=64),
        unet=UNetTrainConfig(steps=100_000, batch=256, checkpoint_every=5000),
        short_steps=50_000,
        anchor_steps=50_000,
        older_steps=25_000,
        max_objects=8,
    )


# -- sources of the six models -----------------------------------------------------------------


def sources(mc: ModelsConfig) -> dict[str, tuple[str, int, float]]:
    """model name -> (trained variant, its EMA snapshot's step, guidance)."""
    w = mc.guidance
    return {
        "full": ("full", mc.unet.steps, w),
        "full@2k": ("full", mc.anchor_steps, w),
        "short": ("short", mc.short_steps, w),
        "raw": ("raw", mc.short_steps, w),
        "full@1k": ("full", mc.older_steps, w),
        "full@w1": ("full", mc.unet.steps, 1.0),
    }


def world_config(mc: ModelsConfig) -> W.WorldConfig:
    return W.WorldConfig(res=mc.model.res, max_objects=mc.max_objects)


CACHE_VERSION = 1  # bump when a change to the model or training code changes trained weights
CACHED_THREADS = 2  # torch threads of the VAE, the encoding and sampling: float reductions
# may differ across thread counts, and cached bytes must not depend on `--threads`


def _spec(mc: ModelsConfig, seed: int) -> dict:
    """What every cached model depends on besides its own training: the pool's bytes (its
    fingerprint), the filters' settings, the network config, the seed, the library versions,
    the thread count of the cached computations and the code version."""
    import diffusers
    import torch
    import transformers

    return {
        "pool": pool_hash(mc, seed),
        "data": asdict(mc.data),  # the filters' settings decide each variant's rows
        "model": asdict(mc.model),
        "seed": int(seed),
        "versions": [
            torch.__version__.split("+")[0],
            diffusers.__version__,
            transformers.__version__,
        ],
        "threads": CACHED_THREADS,
        "v": CACHE_VERSION,
    }


def vae_key(mc: ModelsConfig, seed: int) -> str:
    return content_key({"vae": asdict(mc.vae), **_spec(mc, seed)})


def variant_steps(mc: ModelsConfig, variant: str) -> int:
    return mc.unet.steps if variant == "full" else mc.short_steps


def snapshot_key(mc: ModelsConfig, seed: int, variant: str, step: int) -> str:
    unet = dataclasses.replace(mc.unet, steps=variant_steps(mc, variant))
    train = {k: v for k, v in asdict(unet).items() if k not in ("log_every", "checkpoint_every")}
    return content_key(
        {
            "variant": variant,
            "step": step,
            "unet": train,
            "vae": vae_key(mc, seed),
            **_spec(mc, seed),
        }
    )


def snapshots_of(mc: ModelsConfig, variant: str) -> list[int]:
    steps = {s for name, (v, s, _) in sources(mc).items() if v == variant}
    return sorted(steps)


# -- data and training ---------------------------------------------------------------------------

_MEMO: dict[str, Any] = {}  # per process; forked unit workers inherit it


def pool(mc: ModelsConfig, seed: int) -> D.Pool:
    key = "pool-" + content_key(
        {"data": asdict(mc.data), "wc": asdict(world_config(mc)), "seed": seed}
    )
    if key not in _MEMO:
        _MEMO[key] = D.cached_pool(mc.data, seed, world_config(mc))
    return _MEMO[key]


def pool_hash(mc: ModelsConfig, seed: int) -> str:
    import hashlib

    key = "pool-hash-" + content_key(
        {"data": asdict(mc.data), "wc": asdict(world_config(mc)), "seed": seed}
    )
    if key not in _MEMO:
        _MEMO[key] = hashlib.sha256(pool(mc, seed).fingerprint()).hexdigest()
    return _MEMO[key]


def vocabulary() -> tuple[str, ...]:
    return W.VOCAB


def tokenizer(mc: ModelsConfig):
    return build_tokenizer(vocabulary(), mc.model.max_len)


def get_vae(ctx, mc: ModelsConfig) -> tuple[Any, dict]:
    """The shared VAE: from the cache, or trained now in the run's stage "vae" and cached."""
    from diffusers import AutoencoderKL

    key = vae_key(mc, ctx.seed)
    stage = ctx.stage("vae", mc.vae.steps)
    folder = artifact_dir("t2i-vae", key)
    if not is_complete(folder):
        p = pool(mc, ctx.seed)
        clean = ~np.any(
            np.stack([p.labels[k] for k in ("unsafe", "low_quality", "ai_generated")]), 0
        )
        ctx.log(f"vae: training AutoencoderKL on {int(clean.sum())} clean pool images")
        with torch_threads(CACHED_THREADS):
            trained = train_vae(
                p.images[clean], mc.model, mc.vae, generator(ctx.seed, "t2i-vae"), ctx=stage
            )

        def build(tmp: Path) -> None:
            trained.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            atomic_write_json(tmp / "info.json", {"key": key, **trained.metrics})

        cached_folder("t2i-vae", key, build)
    with quiet_hf():
        vae = AutoencoderKL.from_pretrained(folder / "vae").eval().requires_grad_(False)
    return vae, read_json(folder / "info.json")


def latents_of(mc: ModelsConfig, seed: int, vae) -> Any:
    key = "latents-" + vae_key(mc, seed)
    if key not in _MEMO:
        with torch_threads(CACHED_THREADS):
            _MEMO[key] = encode_images(vae, pool(mc, seed).images)
    return _MEMO[key]


def _train_unit(key: str, uctx) -> dict:
    """One variant's UNet + text encoder (a unit): trained, its snapshots cached."""
    mc: ModelsConfig = uctx.config.models
    variant = key
    tcfg = dataclasses.replace(mc.unet, steps=variant_steps(mc, variant))
    snaps = snapshots_of(mc, variant)
    keys = {s: snapshot_key(mc, uctx.seed, variant, s) for s in snaps}
    if all(is_complete(artifact_dir("t2i-model", k)) for k in keys.values()):
        uctx.advance(mc.unet.steps)
        return {str(s): k for s, k in keys.items()}
    vae = _MEMO["vae-" + vae_key(mc, uctx.seed)]
    lat = latents_of(mc, uctx.seed, vae)
    ts = D.run_pipeline(pool(mc, uctx.seed), variant)
    tok = tokenizer(mc)

    def save(step: int, unet, text_encoder, metrics: dict) -> None:
        skey = snapshot_key(mc, uctx.seed, variant, step)

        def build(tmp: Path) -> None:
            pipe = T2IPipeline(vae, text_encoder, tok, unet)
            pipe.save(tmp / "pipeline")
            atomic_write_json(
                tmp / "info.json",
                {"variant": variant, "step": step, "key": skey, "rows": len(ts), **metrics},
            )

        cached_folder("t2i-model", skey, build)

    train_unet(
        lat[ts.indices],
        ts.captions,
        ts.weights,
        tok,
        mc.model,
        tcfg,
        generator(uctx.seed, "t2i-unet", variant),
        ctx=uctx,
        snapshots=tuple(snaps),
        on_snapshot=save,
    )
    return {str(s): k for s, k in keys.items()}


def get_models(
    ctx, mc: ModelsConfig, extra: dict[str, Callable[[], Any]] | None = None
) -> dict[str, tuple[T2IPipeline, float, dict]]:
    """The six models: name -> (pipeline, guidance, info), training what is not cached.

    The three variants (and `extra` cache builders, e.g. evaluators: `extra[key]()` trains and
    caches one, or finds it cached) are the units of one `run_units` call, one per core; a
    cached variant's unit only reports its progress."""
    extra = extra or {}
    vae, _ = get_vae(ctx, mc)
    _MEMO["vae-" + vae_key(mc, ctx.seed)] = vae
    missing = [
        v
        for v in VARIANT_UNITS
        if any(
            not is_complete(artifact_dir("t2i-model", snapshot_key(mc, ctx.seed, v, s)))
            for s in snapshots_of(mc, v)
        )
    ]
    if missing:
        latents_of(mc, ctx.seed, vae)  # once, before the workers fork
        ctx.log(f"models: training {', '.join(missing)} ({mc.unet.steps} / {mc.short_steps} steps)")

    def unit(key: str, uctx) -> dict:
        if key in extra:
            extra[key]()
            uctx.advance(mc.unet.steps)
            return {}
        return _train_unit(key, uctx)

    run_units(ctx, [*VARIANT_UNITS, *extra], unit, size=mc.unet.steps, description="t2i models")
    out = {}
    loaded: dict[str, T2IPipeline] = {}
    for name, (variant, step, w) in sources(mc).items():
        folder = artifact_dir("t2i-model", snapshot_key(mc, ctx.seed, variant, step))
        if folder not in loaded:
            loaded[folder] = T2IPipeline.load(folder / "pipeline")
        out[name] = (loaded[folder], w, read_json(folder / "info.json"))
    return out


# -- galleries -------------------------------------------------------------------------------------


def gallery(
    ctx, mc: ModelsConfig, models: dict, name: str, prompts: list[P.Prompt], set_name: str
) -> np.ndarray:
    """uint8 (N, res, res, 3): model `name`'s image for each prompt, the initial noise of
    prompt i from (run seed, set, i) for every model (paired comparisons); cached."""
    pipe, w, info = models[name]
    texts = [p.text for p in prompts]
    seed = int_seed(ctx.seed, "t2i-sample", set_name)
    key = content_key(
        {"model": info["key"], "w": w, "steps": mc.sample_steps, "seed": seed, "texts": texts}
    )
    folder = artifact_dir("t2i-gallery", key)
    if not is_complete(folder):
        with torch_threads(CACHED_THREADS):
            images = pipe(texts, seed, guidance=w, steps=mc.sample_steps)

        def build(tmp: Path) -> None:
            save_gallery(tmp / "gallery.safetensors", images, texts)

        cached_folder("t2i-gallery", key, build)
    images, _, _ = load_gallery(folder / "gallery.safetensors")
    keep = Path(ctx.dir) / "galleries" / f"{set_name}-{name}.safetensors"
    if not keep.exists():  # the run keeps its galleries: every figure can be recomputed
        save_gallery(keep, images, texts, {"model": name, "set": set_name, "seed": str(seed)})
    return images
