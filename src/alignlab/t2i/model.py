"""The model of alignlab.t2i: a small latent text-to-image diffusion model from diffusers blocks.

Imagen 3 (Imagen Team 2024, Sec. 1) is "a latent diffusion model" with 2x/4x/8x upsampling,
but the report gives no architecture: no backbone, parameter count, text encoder or sampler.
The "frozen T5-XXL" text encoder that some write-ups attribute to it is a third-party blog
claim, not the report's (it probably carries over from Imagen 1). Here the text encoder is a
small `transformers.CLIPTextModel` on a closed word-level vocabulary, trained jointly with the
UNet from scratch; nothing is pretrained and the images come from a procedural shapes world
(a simulation, not photographs).

Blocks (all plain diffusers / transformers classes, so a trained model saves as a
`StableDiffusionPipeline` folder, `sample.py`):

- `AutoencoderKL`, factor 2^(len(vae_channels) - 1) (quick: [16, 32, 32], 32x32 -> 8x8x4);
- `UNet2DConditionModel` with cross-attention on the text encoder's token sequence
  (quick: (32, 64), one layer per block, cross-attention 64, about 1.0M parameters);
- `CLIPTextModel` (quick: hidden 64, 2 layers, 4 heads), fed by `build_tokenizer(vocab)`, a
  `tokenizers` WordLevel model wrapped as a `PreTrainedTokenizerFast`; out-of-vocabulary
  words map to <unk> and are counted by `count_unk`.

`PRESETS["paper"]` is the GPU-scale preset: 64x64 images (16x16x4 latents) and a
(128, 256, 256) UNet of about 40M parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from alignlab.core.config import ConfigError, param

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)

# the noise schedule of Stable Diffusion (and of the diffusers test components)
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the VAE, UNet and text encoder (module docstring)."""

    res: int = param(32, ge=8, help="image side in pixels (divisible by the VAE factor)")
    vae_channels: tuple[int, ...] = param(
        (16, 32, 32), ge=1, nonempty=True, help="AutoencoderKL block_out_channels"
    )
    vae_layers: int = param(1, ge=1, help="AutoencoderKL layers_per_block")
    latent_channels: int = param(4, ge=1, help="latent channels")
    unet_channels: tuple[int, ...] = param(
        (32, 64), ge=1, nonempty=True, help="UNet2DConditionModel block_out_channels"
    )
    layers_per_block: int = param(1, ge=1, help="UNet layers per block")
    cross_attention_dim: int = param(64, ge=1, help="UNet cross-attention width")
    attention_head_dim: int = param(8, ge=1, help="UNet attention heads per block")
    norm_groups: int = param(16, ge=1, help="group-norm groups in the VAE and UNet")
    text_hidden: int = param(64, ge=1, help="CLIPTextModel hidden size")
    text_layers: int = param(2, ge=1, help="CLIPTextModel layers")
    text_heads: int = param(4, ge=1, help="CLIPTextModel attention heads")
    max_len: int = param(48, ge=3, help="tokens per caption, <bos> and <eos> included")

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_res(self) -> int:
        return self.res // self.vae_factor

    def validate(self) -> None:
        check_config(self)


def check_config(cfg: ModelConfig) -> None:
    """Cross-field rules: one ConfigError naming the field and the valid values."""
    if cfg.res % cfg.vae_factor:
        lo = cfg.res - cfg.res % cfg.vae_factor
        near = [r for r in (lo, lo + cfg.vae_factor) if r > 0]
        raise ConfigError(
            "res",
            f"must be divisible by the VAE factor {cfg.vae_factor} (2^(len(vae_channels) - 1) "
            f"for vae_channels={list(cfg.vae_channels)}), got {cfg.res}; nearest valid: {near}",
        )
    down = 2 ** (len(cfg.unet_channels) - 1)
    if cfg.latent_res % down:
        raise ConfigError(
            "unet_channels",
            f"{len(cfg.unet_channels)} UNet blocks halve the {cfg.latent_res}x{cfg.latent_res} "
            f"latents {len(cfg.unet_channels) - 1} times; the latent side must be divisible "
            f"by {down}",
        )
    for key, chans in (("vae_channels", cfg.vae_channels), ("unet_channels", cfg.unet_channels)):
        bad = [c for c in chans if c % cfg.norm_groups]
        if bad:
            raise ConfigError(
                key, f"every width must be divisible by norm_groups={cfg.norm_groups}, got {bad}"
            )
    if cfg.text_hidden % cfg.text_heads:
        raise ConfigError(
            "text_heads",
            f"text_hidden={cfg.text_hidden} must be divisible by text_heads={cfg.text_heads}",
        )


PRESETS = {
    "smoke": ModelConfig(
        res=16, vae_channels=(16, 16, 16), unet_channels=(16, 32), cross_attention_dim=32,
        text_hidden=32, attention_head_dim=4,
    ),
    "quick": ModelConfig(),
    "paper": ModelConfig(
        res=64, vae_channels=(64, 128, 128), vae_layers=2, unet_channels=(128, 256, 256),
        layers_per_block=2, cross_attention_dim=256, attention_head_dim=8, norm_groups=32,
        text_hidden=256, text_layers=4, text_heads=4,
    ),
}  # fmt: skip


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic initialisation that leaves torch's global generator as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def build_vae(cfg: ModelConfig, seed: int = 0, scaling_factor: float = 1.0):
    """An `AutoencoderKL` of factor cfg.vae_factor, initialised from `seed`."""
    from diffusers import AutoencoderKL

    check_config(cfg)
    n = len(cfg.vae_channels)
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.vae_channels),
            layers_per_block=cfg.vae_layers,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_groups,
            sample_size=cfg.res,
            scaling_factor=float(scaling_factor),
        )


def build_unet(cfg: ModelConfig, seed: int = 0):
    """A `UNet2DConditionModel` on cfg.latent_res latents: the first block without attention
    (as in the diffusers test components), the others with cross-attention."""
    from diffusers import UNet2DConditionModel

    check_config(cfg)
    n = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=cfg.latent_res,
            in_channels=cfg.latent_channels,
            out_channels=cfg.latent_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(cfg.unet_channels),
            layers_per_block=cfg.layers_per_block,
            cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_groups,
        )


def build_text_encoder(cfg: ModelConfig, vocab_size: int, seed: int = 0):
    """A `CLIPTextModel` over a `build_tokenizer` vocabulary (ids 0-3 are the special tokens),
    projecting to the UNet's cross-attention width."""
    from transformers import CLIPTextConfig, CLIPTextModel

    check_config(cfg)
    if cfg.text_hidden != cfg.cross_attention_dim:
        raise ConfigError(
            "text_hidden",
            f"must equal cross_attention_dim={cfg.cross_attention_dim} (the UNet attends to "
            f"the text encoder's hidden states), got {cfg.text_hidden}",
        )
    config = CLIPTextConfig(
        vocab_size=int(vocab_size),
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_len,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        projection_dim=cfg.text_hidden,
    )
    with _seeded(seed):
        return CLIPTextModel(config)


def build_scheduler(kind: str = "ddim"):
    """The noise schedule: "ddpm" (training, `add_noise`) or "ddim" (sampling), both with
    1000 steps and scaled_linear betas 0.00085-0.012."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddpm":
        return DDPMScheduler(
            **{k: v for k, v in SCHEDULE.items() if k not in ("set_alpha_to_one",)}
        )
    if kind == "ddim":
        return DDIMScheduler(**SCHEDULE)
    raise ValueError(f"unknown scheduler {kind!r}; valid: 'ddpm', 'ddim'")


# ---------------------------------------------------------------------------------------
# the word-level tokenizer


def build_tokenizer(vocab: Sequence[str], max_len: int = 48):
    """A word-level `PreTrainedTokenizerFast`: lower-cased, punctuation split off and dropped
    (the world's vocabulary has none), split on whitespace, `<bos> words <eos>`, padded with
    <pad> (and truncated) to `max_len`.

    Ids: <pad> 0, <unk> 1, <bos> 2, <eos> 3, then the vocabulary's words in the given order
    (duplicates dropped). A word not in `vocab` is <unk> (`count_unk`). The tokenizer is built
    in memory (no network).
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [str(w).lower() for w in vocab]
    if not words:
        raise ValueError("vocab is empty: give the list of words captions and prompts use")
    spaced = [w for w in words if not w.strip() or any(c.isspace() for c in w)]
    if spaced:
        raise ValueError(f"vocabulary entries must be single words, got {spaced[:3]}")
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 (<bos>, a word, <eos>), got {max_len}")
    table = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        table.setdefault(w, len(table))
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, table[BOS]), (EOS, table[EOS])],
    )
    tok.enable_padding(pad_id=table[PAD], pad_token=PAD, length=max_len)
    tok.enable_truncation(max_length=max_len)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_len,
        padding_side="right",
        truncation_side="right",
    )


def tokenize(tokenizer, texts: Sequence[str]):
    """(N, max_len) int64 ids, padded to the tokenizer's max length as the diffusers
    StableDiffusionPipeline does."""
    return tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def count_unk(tokenizer, texts: Sequence[str] | str) -> int:
    """How many words (and punctuation marks) of `texts` map to <unk>."""
    if isinstance(texts, str):
        texts = [texts]
    unk = tokenizer.unk_token_id
    enc = tokenizer(list(texts), padding=False, truncation=False, add_special_tokens=False)
    return int(sum(ids.count(unk) for ids in enc["input_ids"]))


# ---------------------------------------------------------------------------------------
# helpers shared by training and sampling


def images_to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    import torch

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_uint8(x) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), exactly as diffusers'
    VaeImageProcessor.postprocess(output_type="np") followed by `(x * 255).round()`."""
    x = (x / 2 + 0.5).clamp(0, 1)
    arr = x.cpu().permute(0, 2, 3, 1).float().numpy()
    return (arr * 255).round().astype(np.uint8)


def n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def latent_std(latents) -> float:
    """The standard deviation of all latent values (scaling_factor = 1 / this)."""
    v = float(latents.double().std())
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"latent standard deviation must be positive and finite, got {v}")
    return v
