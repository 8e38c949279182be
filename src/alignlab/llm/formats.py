"""Chat formats: how a conversation (a list of messages) becomes the token ids a model reads.

A message is `{"role": "system" | "user" | "assistant", "content": str}`, as in the OpenAI
chat API. A format renders a conversation to ids, ending with the generation prompt of the
assistant's next turn, and renders an assistant reply to the ids the model should produce.
Both are used for sampling and for teacher forcing, so training and sampling see the same ids.

- `PlainFormat`: the transcript the small models trained here read,
  `<bos>notes: ...\\nuser: ...\\nagent: REPLY<eos>user: ...\\nagent:`. Each piece is encoded on
  its own and concatenated, so a reply's ids do not depend on what follows it.
- `GemmaFormat`: Gemma's chat template (`<start_of_turn>user\\n...<end_of_turn>\\n
  <start_of_turn>model\\n`). Gemma has no system role, so a system message is folded into the
  first user turn, as the feedback-gaming repo's `fix_messages_for_gemma` does. A model turn
  is encoded piecewise (`<start_of_turn>model\\n`, the reply's ids, `\\n`), so the ids of a
  reply in the history are exactly the ids `encode_reply` gives, as for `PlainFormat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from alignlab.core.errors import AlignlabError

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[Message]) -> None:
    """One clear error for a malformed conversation."""
    if not messages:
        raise AlignlabError("a conversation needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
            raise AlignlabError(
                f"message {i} must be a dict with 'role' in {ROLES} and 'content', got {m!r}"
            )


class ChatFormat(Protocol):
    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """The conversation's ids, ending with the assistant's turn opener when asked."""

    def encode_reply(self, reply: str) -> list[int]:
        """The ids the model produces for `reply`, its end-of-turn token included."""

    def stop_ids(self) -> list[int]:
        """Tokens that end a reply."""


class PlainFormat:
    """`notes:` / `user:` / `agent:` lines; a reply is ` REPLY<eos>` after `agent:`."""

    LABELS = {"system": "notes", "user": "user", "assistant": "agent"}

    def __init__(self, tokenizer):
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise AlignlabError("PlainFormat needs a tokenizer with <bos> and <eos> tokens")
        self.tokenizer = tokenizer

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        check_messages(messages)
        tok = self.tokenizer
        ids = [tok.bos_id]
        for m in messages:
            if m["role"] == "assistant":
                ids += tok.encode("agent:") + self.encode_reply(m["content"])
            else:
                ids += tok.encode(f"{self.LABELS[m['role']]}: {m['content']}\n")
        if add_generation_prompt:
            ids += tok.encode("agent:")
        return ids

    def encode_reply(self, reply: str) -> list[int]:
        return self.tokenizer.encode(" " + reply.strip()) + [self.tokenizer.eos_id]

    def stop_ids(self) -> list[int]:
        return [self.tokenizer.eos_id]


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Gemma has no system role: prepend the system text to the first user turn."""
    check_messages(messages)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        if rest and rest[0]["role"] == "user":
            rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        else:
            rest.insert(0, {"role": "user", "content": system})
    return rest


class GemmaFormat:
    """Gemma's chat template, with `<bos>` once at the start and the system turn folded in."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end = tokenizer.tokenizer.token_to_id("<end_of_turn>")
        if self.end is None or tokenizer.bos_id is None:
            raise AlignlabError(
                "GemmaFormat needs Gemma's tokenizer (with <bos>, <start_of_turn> and "
                "<end_of_turn>); use PlainFormat for the small models trained here"
            )

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        tok = self.tokenizer
        ids = [tok.bos_id]
        for m in fold_system(messages):
            if m["role"] == "assistant":  # piecewise, so a reply's ids are what it samples
                ids += tok.encode("<start_of_turn>model\n") + self.encode_reply(m["content"])
                ids += tok.encode("\n")
            else:
                ids += tok.encode(f"<start_of_turn>user\n{m['content']}<end_of_turn>\n")
        if add_generation_prompt:
            ids += tok.encode("<start_of_turn>model\n")
        return ids

    def encode_reply(self, reply: str) -> list[int]:
        return self.tokenizer.encode(reply) + [self.end]

    def stop_ids(self) -> list[int]:
        return [i for i in (self.end, self.tokenizer.eos_id) if i is not None]
