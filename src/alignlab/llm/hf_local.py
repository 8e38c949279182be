"""`HFLocal`: a causal LM in a local Hugging Face folder, as a `ChatModel`, via `transformers`.

The feedback-gaming repo runs its Hugging Face agents this way
(marcus-jw/Targeted-Manipulation-and-Deception-in-LLMs, `backend/hf_backend.py`): the
tokenizer's chat template renders each conversation, batches are left-padded and passed to
`model.generate`, and ratings read the next-token softmax after the prompt. The
model-combination experiments (Jones, Dragan & Steinhardt 2024, "Adversaries Can Misuse
Combinations of Safe Models") use it for any frontier or weak model stored on disk, our own
Gemma 2 models included: `alignlab.gemma2.hf.save_pretrained` writes the weights and
`save_chat_tokenizer` below the tokenizer files, so `AutoTokenizer` and
`AutoModelForCausalLM` load the folder as they load a released checkpoint.

Only local folders are read (`local_files_only=True`): nothing is downloaded. transformers is
imported when a model is loaded, not when this module is (`pip install 'alignlab[hf]'`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, atomic_write_text
from alignlab.gemma2.generate import left_pad
from alignlab.llm.base import check_conversations, check_sampling, check_top, merge_logprobs
from alignlab.llm.formats import Message, fold_system

#: A chat template that reads only the last message, after the bos token: the prompt format of
#: models trained on raw prompts (e.g. `alignlab.model_combos.chains`), as a chat template.
PASS_THROUGH_TEMPLATE = "{{ bos_token }}{{ messages[-1]['content'] }}"

#: Gemma's names for the special tokens, and the names other vocabularies use for them.
SPECIAL_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "eos": ("<eos>", "</s>", "<|endoftext|>", "[SEP]"),
    "bos": ("<bos>", "<s>", "<|endoftext|>", "[CLS]"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}


def import_transformers():
    """The `transformers` module, or one clear error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise AlignlabError(
            "HFLocal needs the transformers package: pip install 'alignlab[hf]'"
        ) from None
    return transformers


def _raw_tokenizer(tokenizer):
    """The `tokenizers.Tokenizer` of our wrapper (`alignlab.gemma2.tokenizer.Tokenizer`), or
    the argument itself when it already is one."""
    import tokenizers

    raw = getattr(tokenizer, "tokenizer", tokenizer)
    if not isinstance(raw, tokenizers.Tokenizer):
        raise AlignlabError(
            "save_chat_tokenizer needs a tokenizers.Tokenizer or alignlab's Tokenizer wrapper "
            f"(alignlab.gemma2.tokenizer.Tokenizer), got {type(tokenizer).__name__}"
        )
    return raw


def save_chat_tokenizer(
    tokenizer, folder: str | os.PathLike, chat_template: str = PASS_THROUGH_TEMPLATE
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `folder`, so that
    `transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)` loads it as a
    `PreTrainedTokenizerFast` with `chat_template`, its special tokens and left padding.

    `tokenizer` is a `tokenizers.Tokenizer` or our wrapper around one. Its <bos> and <eos>
    (or the usual aliases, `SPECIAL_NAMES`) are required; <pad> defaults to <eos> and <unk>
    is optional. Decoding is the tokenizer's own decoder, without transformers' "clean up
    tokenization spaces" (which would glue " !" to the previous word). No bos or eos is added
    when encoding: the chat template writes the bos token itself. Both files are written
    atomically; other files in the folder (the weights) are kept. Returns the folder.
    """
    raw = _raw_tokenizer(tokenizer)
    folder = Path(folder)
    found: dict[str, str] = {}
    for role, names in SPECIAL_NAMES.items():
        for name in names:
            if raw.token_to_id(name) is not None:
                found[role] = name
                break
    for role in ("bos", "eos"):
        if role not in found:
            raise AlignlabError(
                f"save_chat_tokenizer: the tokenizer has no {role} token (looked for "
                f"{', '.join(SPECIAL_NAMES[role])}); add it with add_special_tokens"
            )
    found.setdefault("pad", found["eos"])
    if not isinstance(chat_template, str) or not chat_template:
        raise AlignlabError(
            f"chat_template must be a non-empty Jinja template, got {chat_template!r}"
        )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **{f"{role}_token": name for role, name in found.items()},
        "chat_template": chat_template,
        "padding_side": "left",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
    }
    atomic_write_text(folder / "tokenizer.json", raw.to_str(pretty=True))
    atomic_write_json(folder / "tokenizer_config.json", config)
    return folder


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    """`dtype` for from_pretrained: "auto" (as stored) for None, else a torch dtype."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise AlignlabError(
            f"dtype must be a torch dtype or its name (float32, bfloat16, float16) or None "
            f"(as stored), got {dtype!r}"
        )
    return value


class HFLocal:
    """A causal LM in a local Hugging Face folder, as a `ChatModel`.

    Each conversation is rendered with the tokenizer's chat template
    (`apply_chat_template(..., add_generation_prompt=True, tokenize=False)`) and encoded with
    `add_special_tokens=False`, so a template that writes the bos token does not get a second
    one. When the template refuses a system message (Gemma's does), the system text is folded
    into the first user turn (`fold_system`), as the feedback-gaming repo's
    `fix_messages_for_gemma` does.

    `chat` left-pads `batch_size` prompts at a time and calls `model.generate`: greedy at
    temperature 0, else plain sampling at `temperature` (no top-k, top-p or min-p, and none of
    the sampling defaults a folder's generation_config.json may carry). A reply stops at the
    tokenizer's eos or the generation config's eos ids (e.g. Gemma's <end_of_turn>); its new
    tokens up to the stop are decoded with `skip_special_tokens=True` and stripped.

    Seeds: `generate` samples from torch's global generator (it takes no `torch.Generator`),
    so a call with a seed runs inside `torch.random.fork_rng` after `torch.manual_seed(seed)`:
    the same conversations and seed give the same replies, and the caller's global random
    state is left as it was. One call runs at a time (a lock), so the loopback server's threads
    can share an instance; code sampling from torch's global generator in other threads at the
    same moment would still disturb a seeded call.

    `top_logprobs` is one forward pass over the left-padded prompts (attention mask, and
    positions counting real tokens only, as `generate` gives them): the log-softmax of the last
    position's logits, the `top` most likely ids keyed by their decoded text.

    `attn_implementation` defaults to "eager": HF's Gemma 2 applies the attention logit
    soft-cap only there, and it is the implementation our `alignlab.gemma2` matches exactly.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str = "eager",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AlignlabError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise AlignlabError(
                f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}"
            ) from None
        torch_dtype = _dtype(dtype)
        path = Path(path).expanduser()
        if not path.is_dir():
            raise AlignlabError(
                f"HFLocal: no model folder at {path}; it loads a local Hugging Face folder "
                "(config.json, *.safetensors, tokenizer.json and tokenizer_config.json) and "
                "never downloads"
            )
        if not (path / "config.json").is_file():
            raise AlignlabError(
                f"HFLocal: {path} is not a Hugging Face model folder (no config.json); save a "
                "model there with save_pretrained and its tokenizer with save_chat_tokenizer"
            )
        transformers = import_transformers()
        progress = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path,
                local_files_only=True,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
            )
        except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise AlignlabError(
                f"HFLocal: cannot load the Hugging Face model folder {path} "
                f"({type(e).__name__}: {reason}); it needs config.json, safetensors weights "
                "and a tokenizer (tokenizer.json + tokenizer_config.json)"
            ) from None
        finally:
            if progress:
                transformers.utils.logging.enable_progress_bar()
        if not getattr(tokenizer, "chat_template", None):
            raise AlignlabError(
                f"HFLocal: the tokenizer in {path} has no chat template; write one with "
                "save_chat_tokenizer(tokenizer, folder, chat_template=...)"
            )
        self.path = path
        self.name = name if name is not None else path.name
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        try:
            self.model = model.to(device).eval()
        except (RuntimeError, AssertionError) as e:  # no such device, or torch built without it
            raise AlignlabError(
                f"HFLocal: cannot put {path} on device {str(device)!r} ({e}); use 'cpu' or an "
                "available accelerator such as 'cuda:0'"
            ) from None
        self._transformers = transformers
        self._lock = threading.Lock()

        gen = model.generation_config
        eos = gen.eos_token_id if gen is not None else None
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos = [tokenizer.eos_token_id] + [i for i in eos if i != tokenizer.eos_token_id]
        self.stop_ids: list[int] = eos
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if eos else 0
        self.pad_id: int = pad
        # Only the special ids: a folder's sampling defaults (top_k, top_p, temperature,
        # repetition_penalty, ...) would otherwise apply to every call.
        self.model.generation_config = transformers.GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=self.stop_ids or None,
            pad_token_id=self.pad_id,
        )

    def __repr__(self) -> str:
        return f"HFLocal(name={self.name!r}, path={str(self.path)!r}, device={str(self.device)!r})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batches(self, items: list) -> list[list]:
        return [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def _render(self, conversation: list[Message]) -> str:
        template = self.tokenizer.apply_chat_template
        try:
            return template(conversation, add_generation_prompt=True, tokenize=False)
        except Exception as first:
            if any(m["role"] == "system" for m in conversation):
                try:
                    folded = fold_system(conversation)
                    return template(folded, add_generation_prompt=True, tokenize=False)
                except Exception:
                    pass
            raise AlignlabError(
                f"{self.name}: the chat template of {self.path} cannot render this "
                f"conversation ({type(first).__name__}: {first})"
            ) from None

    def encode(self, conversation: Sequence[Message]) -> list[int]:
        """The prompt ids of a conversation: the chat template's text with its generation
        prompt, encoded without adding special tokens."""
        (conv,) = check_conversations([conversation])
        return self._encode(conv)

    def _encode(self, conversation: list[Message]) -> list[int]:
        text = self._render(conversation)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompts(self, convs: list[list[Message]]) -> list[list[int]]:
        prompts = []
        for i, conv in enumerate(convs):
            try:
                ids = self._encode(conv)
            except AlignlabError as e:
                raise AlignlabError(f"conversation {i}: {e}") from None
            if not ids:
                raise AlignlabError(f"conversation {i}: the chat template rendered no tokens")
            prompts.append(ids)
        return prompts

    def _cut(self, ids: list[int]) -> list[int]:
        """The reply's ids before its first stop token."""
        for j, token in enumerate(ids):
            if token in self.stop_ids:
                return ids[:j]
        return ids

    @torch.no_grad()
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
        prompts = self._prompts(convs)
        if temperature == 0:
            sampling: dict[str, Any] = {"do_sample": False}
        else:
            sampling = {
                "do_sample": True,
                "temperature": float(temperature),
                "top_k": 0,
                "top_p": 1.0,
            }
        new: list[list[int]] = []
        with self._lock:
            devices = []
            if self.device.type == "cuda":
                index = self.device.index
                devices = [torch.cuda.current_device() if index is None else index]
            with torch.random.fork_rng(devices=devices, enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                for batch in self._batches(prompts):
                    ids, mask = left_pad(batch, self.pad_id)
                    out = self.model.generate(
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        max_new_tokens=max_tokens,
                        **sampling,
                    )
                    new += [self._cut(row) for row in out[:, ids.shape[1] :].tolist()]
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]

    @torch.no_grad()
    def top_logprobs(
        self, conversations: Sequence[Sequence[Message]], *, top: int = 20
    ) -> list[dict[str, float]]:
        """The log-softmax of the next-token logits after each prompt (one forward pass per
        batch, prompts left-padded), the `top` most likely tokens keyed by their decoded text;
        ids decoding to the same text are merged (`merge_logprobs`)."""
        convs = check_conversations(conversations)
        check_top(top)
        if not convs:
            return []
        prompts = self._prompts(convs)
        out = []
        with self._lock:
            for batch in self._batches(prompts):
                ids, mask = left_pad(batch, self.pad_id)
                ids, mask = ids.to(self.device), mask.to(self.device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
                ).logits[:, -1]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                values, indices = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
                for vs, ix in zip(values.tolist(), indices.tolist()):
                    pairs = ((self.tokenizer.decode([i]), v) for i, v in zip(ix, vs))
                    out.append(merge_logprobs(pairs))
        return out

    def usage(self, conversation: Sequence[Message], replies: Sequence[str]) -> tuple[int, int]:
        """(prompt tokens, completion tokens) of a request: the replies re-encoded, each with
        its stop token when the model has one."""
        prompt = len(self.encode(conversation))
        end = 1 if self.stop_ids else 0
        completion = sum(
            len(self.tokenizer(r, add_special_tokens=False)["input_ids"]) + end for r in replies
        )
        return prompt, completion
