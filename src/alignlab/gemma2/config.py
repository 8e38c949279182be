"""The Gemma 2 hyperparameters: one dataclass, the paper's sizes as named presets.

Numbers from paper Table 1 and the Hugging Face / gemma_pytorch configs. Field names follow
the paper where it names them (`d_model`) and HF otherwise (`intermediate_size`,
`query_pre_attn_scalar`); `alignlab.gemma2.hf` maps them to HF's names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from alignlab.core.errors import AlignlabError, did_you_mean

PAPER_VOCAB_SIZE = 256128  # the padded vocabulary Table 2 counts (HF checkpoints use 256000)
HF_VOCAB_SIZE = 256000
ATTN_IMPLS = ("eager", "fast")


@dataclass
class Gemma2Config:
    """Gemma 2 architecture (paper §2, Table 1). The defaults are the 2B model with HF's vocab.

    `intermediate_size` is the width of *each* of the GeGLU gate and up branches, i.e. half
    the paper's "feedforward dim" (2B: 18432 / 2 = 9216). Layer i uses a sliding window of
    `sliding_window` tokens when i is even and global causal attention when i is odd.
    A soft-cap of None disables it. `attn_impl` picks the attention kernel: "eager" is the
    explicit reference (scores, soft-cap, mask, fp32 softmax, as HF's eager), "fast" the same
    operations over blocks of queries, skipping the key blocks the mask removes entirely.
    """

    vocab_size: int = HF_VOCAB_SIZE
    d_model: int = 2304
    intermediate_size: int = 9216
    num_layers: int = 26
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 256
    query_pre_attn_scalar: float = 256  # queries are scaled by its ^-0.5 (27B: 144, not 128)
    sliding_window: int = 4096
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    attn_logit_softcap: float | None = 50.0
    final_logit_softcap: float | None = 30.0
    pad_token_id: int = 0  # the Gemma tokenizer: <pad>=0, <eos>=1, <bos>=2
    eos_token_id: int = 1
    bos_token_id: int = 2
    initializer_range: float = 0.02
    attn_impl: str = "fast"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise AlignlabError naming the first inconsistent field."""
        for name in (
            "vocab_size",
            "d_model",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "sliding_window",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AlignlabError(
                    f"Gemma2Config.{name} must be a positive integer, got {value!r}"
                )
        if self.num_heads % self.num_kv_heads:
            raise AlignlabError(
                f"Gemma2Config.num_heads ({self.num_heads}) must be divisible by num_kv_heads "
                f"({self.num_kv_heads}): each KV head serves num_heads / num_kv_heads query heads"
            )
        if self.head_dim % 2:
            raise AlignlabError(
                f"Gemma2Config.head_dim must be even for rotary embeddings, got {self.head_dim}"
            )
        for name in ("query_pre_attn_scalar", "rope_theta", "rms_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise AlignlabError(f"Gemma2Config.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("attn_logit_softcap", "final_logit_softcap"):
            cap = getattr(self, name)
            if cap is not None and not cap > 0:
                raise AlignlabError(f"Gemma2Config.{name} must be > 0 or None, got {cap!r}")
        for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
            token = getattr(self, name)
            if not 0 <= token < self.vocab_size:
                raise AlignlabError(
                    f"Gemma2Config.{name}={token} is outside the vocabulary [0, {self.vocab_size})"
                )
        if self.attn_impl not in ATTN_IMPLS:
            raise AlignlabError(
                f"unknown Gemma2Config.attn_impl {self.attn_impl!r}; valid: {', '.join(ATTN_IMPLS)}"
            )

    @property
    def num_kv_groups(self) -> int:
        """Query heads per KV head (paper §2: "num_groups = 2" for every size)."""
        return self.num_heads // self.num_kv_heads

    def is_sliding(self, layer: int) -> bool:
        """Layer 0 is local: even layers use the sliding window, odd layers are global."""
        return layer % 2 == 0

    def window(self, layer: int) -> int | None:
        """The attention span of `layer`: `sliding_window` on even layers, None (global) on odd."""
        return self.sliding_window if self.is_sliding(layer) else None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Gemma2Config:
        """A named size: "2b", "9b", "27b" (paper Table 1) or a CPU size "tiny"/"small"/"medium".

        Overrides replace fields, e.g. `preset("2b", vocab_size=PAPER_VOCAB_SIZE)` for the padded
        vocabulary that paper Table 2 counts.
        """
        if name not in PRESETS:
            raise AlignlabError(
                f"unknown Gemma 2 preset {name!r}; valid presets: {', '.join(PRESETS)}."
                + did_you_mean(name, PRESETS)
            )
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gemma2Config:
        """Inverse of to_dict; unknown keys are an error (a typo must not pass silently)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise AlignlabError(
                f"unknown Gemma2Config field(s): {', '.join(unknown)}."
                + did_you_mean(unknown[0], fields)
            )
        return cls(**d)


# Paper Table 1; intermediate_size = "feedforward dim" / 2. The 27B scales queries by
# (d_model / num_heads)^-0.5 = 144^-0.5 rather than head_dim^-0.5.
PRESETS: dict[str, dict[str, Any]] = {
    "2b": dict(
        d_model=2304, intermediate_size=9216, num_layers=26, num_heads=8, num_kv_heads=4,
        head_dim=256, query_pre_attn_scalar=256,
    ),
    "9b": dict(
        d_model=3584, intermediate_size=14336, num_layers=42, num_heads=16, num_kv_heads=8,
        head_dim=256, query_pre_attn_scalar=256,
    ),
    "27b": dict(
        d_model=4608, intermediate_size=36864, num_layers=46, num_heads=32, num_kv_heads=16,
        head_dim=128, query_pre_attn_scalar=144,
    ),
    # CPU sizes. tiny: unit tests (~0.2M params). small: ~1.6M params, trains in a minute or
    # two. medium: ~7M params, the size the attention benchmarks use.
    "tiny": dict(
        vocab_size=512, d_model=64, intermediate_size=128, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
        max_position_embeddings=256,
    ),
    "small": dict(
        vocab_size=4096, d_model=128, intermediate_size=512, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=32, query_pre_attn_scalar=32, sliding_window=64,
        max_position_embeddings=512,
    ),
    "medium": dict(
        vocab_size=4096, d_model=256, intermediate_size=1024, num_layers=6, num_heads=4,
        num_kv_heads=2, head_dim=64, query_pre_attn_scalar=64, sliding_window=128,
        max_position_embeddings=1024,
    ),
}  # fmt: skip
