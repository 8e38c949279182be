"""Gemma 2: Improving Open Language Models at a Practical Size (Gemma Team, 2024, arXiv 2408.00118).

The decoder of paper §2 (alternating sliding-window and global attention, GQA, sandwich
RMSNorms, attention and final logit soft-capping), its paper sizes as presets, a KV-cached
sampler, Hugging Face checkpoint conversion, and the Gemma Scope hook sites.

    from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM, generate
    model = Gemma2ForCausalLM(Gemma2Config.preset("tiny"))
    logits = model(ids)                                   # (B, T, vocab)
    generate(model, [[2, 5, 7], [2, 9]], max_new_tokens=8, temperature=0)

`alignlab.gemma2.hf` (from_pretrained / save_pretrained) reads and writes HF checkpoints
without importing transformers.
"""

from alignlab.gemma2.config import PAPER_VOCAB_SIZE, PRESETS, Gemma2Config
from alignlab.gemma2.generate import generate, sample
from alignlab.gemma2.hf import from_pretrained, save_pretrained
from alignlab.gemma2.model import (
    SITES,
    Gemma2ForCausalLM,
    Gemma2Model,
    HookPoint,
    KVCache,
    count_parameters,
)

__all__ = [
    "PAPER_VOCAB_SIZE",
    "PRESETS",
    "SITES",
    "Gemma2Config",
    "Gemma2ForCausalLM",
    "Gemma2Model",
    "HookPoint",
    "KVCache",
    "count_parameters",
    "from_pretrained",
    "generate",
    "sample",
    "save_pretrained",
]
