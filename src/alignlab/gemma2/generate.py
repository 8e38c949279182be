"""Sampling from Gemma 2: batched prompts, a KV cache, temperature / top-k / top-p / min-p, stop
tokens.

Prompts of different lengths are left-padded, so every row's next token is in the last
column; the padding mask keeps pad columns out of attention and out of the positions
(each prompt starts at position 0, as if it were alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.model import Gemma2ForCausalLM, hooked


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) left-padded with `pad_id`, and the mask (B, T): 1 for real tokens."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for b, p in enumerate(prompts):
        if len(p):
            ids[b, T - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[b, T - len(p) :] = 1
    return ids, mask


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """One token per row of `logits` (B, V): greedy when temperature == 0, else sampled.

    `min_p` keeps the tokens whose probability (after temperature) is at least `min_p` times
    the most likely token's (Nguyen et al. 2024, "min-p sampling"), applied after top-k/top-p.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        # Nucleus: the smallest set of most likely tokens whose mass reaches top_p (at least
        # one): a token is dropped once the mass before it has reached top_p.
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    if min_p is not None and min_p > 0:
        # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
        floor = logits.max(-1, keepdim=True).values + math.log(min_p)
        logits = logits.masked_fill(logits < floor, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(
    model: Gemma2ForCausalLM,
    prompts: torch.Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    min_p: float | None = None,
) -> list[list[int]]:
    """The new tokens for each prompt, each list ending at its first stop token (included).

    `prompts` is a (B, T) tensor of ids (no padding) or a list of id lists of any lengths.
    `stop_tokens` defaults to the config's eos. `temperature=0` is greedy decoding; `top_k`,
    `top_p` and then `min_p` filter before sampling with `generator` (see `sample`).
    `use_cache=False` recomputes the whole sequence at every step (the reference the KV cache
    is tested against).
    """
    cfg = model.config
    if isinstance(prompts, torch.Tensor):
        prompts = [prompts.tolist()] if prompts.ndim == 1 else prompts.tolist()
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise AlignlabError(
            "generate needs at least one prompt, and every prompt at least one token"
        )
    if max_new_tokens < 0:
        raise AlignlabError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise AlignlabError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise AlignlabError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise AlignlabError(f"top_p must be in (0, 1] or None, got {top_p}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise AlignlabError(f"min_p must be in [0, 1] or None, got {min_p}")
    stop = {cfg.eos_token_id} if stop_tokens is None else set(stop_tokens)

    # inference mode (no autograd bookkeeping at all) unless a hook could keep an activation,
    # which would then be an inference tensor, unusable outside it
    hooks = any(hooked(module) for module in model.modules())
    with torch.no_grad() if hooks else torch.inference_mode():
        device = model.model.embed_tokens.weight.device
        ids, mask = left_pad(prompts, cfg.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        padded = bool((mask == 0).any())
        B = ids.shape[0]
        # buffers for the prompt and up to 512 new tokens; they double if more are generated
        cache = model.new_cache(B, ids.shape[1] + min(max_new_tokens, 512)) if use_cache else None
        step_ids, step_mask = ids, mask if padded else None
        out: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        for _ in range(max_new_tokens):
            if use_cache:
                h = model.model(step_ids, attention_mask=step_mask, cache=cache)
            else:
                h = model.model(ids, attention_mask=mask if padded else None)
            token = sample(model.logits(h[:, -1]), temperature, top_k, top_p, generator, min_p)
            for b, t in enumerate(token.tolist()):
                if not done[b]:
                    out[b].append(t)
                    done[b] = t in stop
            if all(done):
                break
            step_ids, step_mask = token[:, None], None  # the cache remembers the prompt's padding
            if not use_cache:
                ids = torch.cat([ids, step_ids], dim=1)
                mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        return out
