"""Chat-model plumbing shared by the systems that talk to language models.

One protocol, `ChatModel` (`chat` for replies, `top_logprobs` for the first token's
distribution), with three backends: `LocalChatModel` for the Gemma 2 models trained here,
`HFLocal` for any causal LM in a local Hugging Face folder (through transformers), and
`OpenAICompatible` for any OpenAI-compatible endpoint. `rate` turns a rater's first-token
logprobs into an expected score, as the feedback-gaming repo does; `serve` puts any ChatModel
behind a real OpenAI-compatible HTTP server. See docs/llm.md.

    from alignlab.llm import LocalChatModel, OpenAICompatible, rate, serve
    local = LocalChatModel(model, tokenizer)
    with serve({"tiny": local}) as server:
        rater = OpenAICompatible("tiny", base_url=server.url, role="rater")
        rater.chat([[{"role": "user", "content": "Hi"}]], max_tokens=16)
"""

from alignlab.llm.base import ChatModel, NoLogprobsError, expected_score, rate
from alignlab.llm.formats import (
    ChatFormat,
    GemmaFormat,
    Message,
    PlainFormat,
    check_messages,
    fold_system,
)
from alignlab.llm.hf_local import HFLocal, save_chat_tokenizer
from alignlab.llm.local import LocalChatModel
from alignlab.llm.openai_backend import OpenAICompatible
from alignlab.llm.server import LoopbackServer, serve

__all__ = [
    "ChatFormat",
    "ChatModel",
    "GemmaFormat",
    "HFLocal",
    "LocalChatModel",
    "LoopbackServer",
    "Message",
    "NoLogprobsError",
    "OpenAICompatible",
    "PlainFormat",
    "check_messages",
    "expected_score",
    "fold_system",
    "rate",
    "save_chat_tokenizer",
    "serve",
]
