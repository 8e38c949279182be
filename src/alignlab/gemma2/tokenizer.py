"""A byte-level BPE tokenizer with Gemma's special ids, and a loader for any tokenizer.json.

Gemma 2 uses a 256k-entry SentencePiece vocabulary (paper notes, "Architecture"); a small model
trained on a few MB of text needs a few thousand entries, so we train our own byte-level BPE
(`tokenizers`), with the special tokens at Gemma's ids: <pad> = 0, <eos> = 1, <bos> = 2,
<unk> = 3. Byte-level means every string encodes and decodes back exactly, with no unknowns.

Any Hugging Face `tokenizer.json` loads into the same wrapper, a real Gemma one included, so a
model converted from a Gemma checkpoint can use the official vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from alignlab.core.cache import artifact_dir, cached_folder
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_text
from alignlab.gemma2.data import Corpus, load_corpus

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK)  # ids 0, 1, 2, 3, as in Gemma's vocabulary
N_BYTES = 256  # the byte-level alphabet: every byte is a token
TOKENIZER_VERSION = 1  # bump when training changes, so stale cached tokenizers are not reused

# Names other vocabularies use for the same roles, tried in order after Gemma's.
_ALIASES = {
    "pad": (PAD, "[PAD]", "<|pad|>"),
    "eos": (EOS, "</s>", "<|endoftext|>", "[SEP]"),
    "bos": (BOS, "<s>", "<|endoftext|>", "[CLS]"),
}


class Tokenizer:
    """A thin wrapper around `tokenizers.Tokenizer`: ids in, ids out, no special tokens added."""

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.eos_id, self.bos_id = (self._find(role) for role in ("pad", "eos", "bos"))

    def _find(self, role: str) -> int | None:
        for token in _ALIASES[role]:
            if (i := self.tokenizer.token_to_id(token)) is not None:
                return i
        return None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Special tokens are kept by default, so decode(encode(text)) == text for any text."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def to_json(self) -> str:
        return self.tokenizer.to_str(pretty=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json atomically; `path` is the file or the folder to put it in."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / "tokenizer.json"
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Any Hugging Face tokenizer.json (BPE, WordPiece, Unigram, ...); `path` or its folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise AlignlabError(
                f"no tokenizer file at {path}; expected a Hugging Face tokenizer.json"
            )
        try:
            return cls(tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8")))
        except Exception as e:  # tokenizers raises plain Exceptions for malformed files
            raise AlignlabError(f"{path} is not a valid tokenizer.json: {e}") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
        """Byte-level BPE: ids 0-3 <pad> <eos> <bos> <unk>, then the 256 bytes, then merges.

        Deterministic: the same texts give the same tokenizer.json (checked in the tests).
        """
        if vocab_size < len(SPECIAL_TOKENS) + N_BYTES:
            raise AlignlabError(
                f"vocab_size must be at least {len(SPECIAL_TOKENS) + N_BYTES} "
                f"({len(SPECIAL_TOKENS)} special tokens + {N_BYTES} bytes), got {vocab_size}"
            )
        tok = tokenizers.Tokenizer(models.BPE())  # no unk: every byte is in the vocabulary
        # GPT-2's pre-tokenizer: split words/numbers/punctuation, map bytes to printable chars.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def __repr__(self) -> str:
        model = type(self.tokenizer.model).__name__
        ids = f"pad={self.pad_id}, eos={self.eos_id}, bos={self.bos_id}"
        return f"Tokenizer({model}, vocab_size={self.vocab_size}, {ids})"


_LOADED: dict[Path, Tokenizer] = {}  # this process's default tokenizers, by cache folder


def default_tokenizer(
    vocab_size: int = 4096, corpus: Corpus | None = None, cache: str | os.PathLike | None = None
) -> Tokenizer:
    """A BPE tokenizer trained on the corpus's training split, once, then read from the cache.

    Cached at `cache_dir()/tokenizers/bpe<vocab>-v<version>-<train sha256[:16]>/tokenizer.json`
    (built in a temporary folder and renamed into place, `core.cache`), so repeated experiment
    runs (and parallel sweep workers) reuse it.
    """
    corpus = corpus if corpus is not None else load_corpus(cache=cache)
    name = f"bpe{vocab_size}-v{TOKENIZER_VERSION}-{corpus.train_sha256[:16]}"
    path = artifact_dir("tokenizers", name, cache) / "tokenizer.json"
    if path not in _LOADED:
        trained: list[Tokenizer] = []

        def build(tmp: Path) -> None:
            trained.append(Tokenizer.train(corpus.texts("train"), vocab_size))
            trained[0].save(tmp / "tokenizer.json")

        cached_folder("tokenizers", name, build, root=cache)
        _LOADED[path] = trained[0] if trained else Tokenizer.load(path)
    return _LOADED[path]
