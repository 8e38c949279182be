"""`LocalChatModel`: a `Gemma2ForCausalLM` trained here, as a `ChatModel`.

The feedback-gaming repo runs its agent through Hugging Face models
(`backend/hf_backend.py`: chat template, batched `generate`, and the next-token softmax for
`get_next_token_probs_normalized`); this is the same for our own Gemma 2, with a `ChatFormat`
in place of the chat template.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.generate import generate, left_pad
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.llm.base import check_conversations, check_sampling, check_top, merge_logprobs
from alignlab.llm.formats import ChatFormat, Message, PlainFormat


class LocalChatModel:
    """Chat with a local Gemma 2: encode with `format` (default `PlainFormat`), sample with
    `alignlab.gemma2.generate.generate`, decode the new tokens.

    `chat` batches the conversations (`batch_size` at a time) through one `torch.Generator`
    seeded with `seed`, so the same conversations and seed give the same replies. A reply is
    decoded without its stop token and without special tokens, then stripped. `min_p` is passed
    to `generate` (min-p sampling). One call runs at a time, so
    the server's threads can share one instance.
    """

    def __init__(
        self,
        model: Gemma2ForCausalLM,
        tokenizer,
        format: ChatFormat | None = None,
        name: str = "local",
        min_p: float | None = None,
        batch_size: int = 16,
    ):
        if not isinstance(model, Gemma2ForCausalLM):
            raise AlignlabError(
                f"LocalChatModel needs an alignlab Gemma2ForCausalLM, got {type(model).__name__}"
            )
        if batch_size < 1:
            raise AlignlabError(f"batch_size must be >= 1, got {batch_size}")
        if min_p is not None and not 0 <= min_p <= 1:
            raise AlignlabError(f"min_p must be in [0, 1] or None, got {min_p}")
        self.model = model
        self.tokenizer = tokenizer
        self.format = format if format is not None else PlainFormat(tokenizer)
        self.name = name
        self.min_p = min_p
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalChatModel(name={self.name!r}, format={type(self.format).__name__})"

    @property
    def device(self) -> torch.device:
        return self.model.model.embed_tokens.weight.device

    def _batches(self, items: list) -> list[list]:
        return [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        convs = check_conversations(conversations)
        check_sampling(max_tokens, temperature, seed)
        if not convs:
            return []
        prompts = [self.format.encode(c) for c in convs]
        stop = set(self.format.stop_ids())
        new: list[list[int]] = []
        with self._lock:
            generator = None
            if seed is not None:
                generator = torch.Generator(device=self.device).manual_seed(seed)
            for batch in self._batches(prompts):
                new += generate(
                    self.model,
                    batch,
                    max_tokens,
                    temperature=temperature,
                    stop_tokens=stop,
                    generator=generator,
                    min_p=self.min_p,
                )
        replies = []
        for ids in new:
            if ids and ids[-1] in stop:
                ids = ids[:-1]
            replies.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return replies

    @torch.no_grad()
    def top_logprobs(
        self, conversations: Sequence[Sequence[Message]], *, top: int = 20
    ) -> list[dict[str, float]]:
        """The log-softmax of the next-token logits after each prompt (one forward pass per
        batch, prompts left-padded), the `top` most likely tokens keyed by their decoded text."""
        convs = check_conversations(conversations)
        check_top(top)
        if not convs:
            return []
        prompts = [self.format.encode(c) for c in convs]
        pad = self.model.config.pad_token_id
        k = min(top, self.model.config.vocab_size)
        out = []
        with self._lock:
            for batch in self._batches(prompts):
                ids, mask = left_pad(batch, pad)
                ids, mask = ids.to(self.device), mask.to(self.device)
                padded = bool((mask == 0).any())
                h = self.model.model(ids, attention_mask=mask if padded else None)
                logprobs = torch.log_softmax(self.model.logits(h[:, -1]).float(), dim=-1)
                values, indices = logprobs.topk(k, dim=-1)
                for vs, ix in zip(values.tolist(), indices.tolist()):
                    pairs = ((self.tokenizer.decode([i]), v) for i, v in zip(ix, vs))
                    out.append(merge_logprobs(pairs))
        return out

    def usage(self, conversation: Sequence[Message], replies: Sequence[str]) -> tuple[int, int]:
        """(prompt tokens, completion tokens) of a request, the replies re-encoded."""
        prompt = len(self.format.encode(conversation))
        return prompt, sum(len(self.format.encode_reply(r)) for r in replies)
