"""The chat-model backends a red-team run can combine, by name.

- `openai`: `alignlab.llm.OpenAICompatible` on any OpenAI-compatible endpoint (vLLM, Ollama,
  llama.cpp, OpenAI); model, base URL and key from `ALIGNLAB_{FRONTIER,WEAK}_*`, then
  `OPENAI_*`, preflighted before use;
- `hf`: `alignlab.llm.HFLocal`, a local Hugging Face folder run by `transformers` (local files
  only);
- `tiny`: `zoo.TinyChat`, a model of the miniature's zoo (its cached folder), batched with the
  KV cache.
"""

from __future__ import annotations

from pathlib import Path

from alignlab.core.errors import AlignlabError, check_choice
from alignlab.llm.base import ChatModel

BACKENDS = ("openai", "hf", "tiny")


def chat_model(
    backend: str, *, role: str = "frontier", path: str | Path | None = None, **options
) -> ChatModel:
    """A `ChatModel` for `role` ('frontier' or 'weak') from the named backend; `path` is the
    model folder of the local backends."""
    check_choice("backend", backend, BACKENDS)
    if backend == "openai":
        from alignlab.llm import OpenAICompatible

        model = OpenAICompatible.from_env(role, **options)
        model.preflight()
        return model
    if path is None:
        raise AlignlabError(f"the {backend} backend needs path= (a local model folder)")
    if backend == "hf":
        from alignlab.llm import HFLocal

        return HFLocal(path, name=options.pop("name", role), **options)
    from alignlab.model_combos.zoo import TinyChat

    return TinyChat.load(Path(path), name=options.pop("name", role), **options)
