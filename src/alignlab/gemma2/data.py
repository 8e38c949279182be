"""Text corpora for training small Gemma 2 models offline, and their token streams.

The default corpus needs no network: the English prose that ships with Python itself, i.e.
the docstrings and comment blocks of the standard library's modules (in source order, one
document per module) and the language reference topics in `pydoc_data.topics`. Extraction is
deterministic: the same standard library gives a byte-identical corpus, whose sha256 is
recorded with the Python version in the cache (`core.cache.cache_dir()/corpus/`).

Other sources: local text files or folders (`*.txt`, `*.md`), and a Hugging Face dataset
(`"hf:<name>"`, only when asked for and `datasets` is installed).

Documents go to validation by a hash of their id, so a document's split never changes when the
corpus grows. Training draws random contiguous windows of seq_len + 1 tokens from the flat
train stream (nanoGPT's `get_batch`); evaluation walks the validation stream in order.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import shutil
import sysconfig
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from alignlab.core.cache import artifact_dir, cached_folder, is_complete
from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.core.io import dumps_json, read_json

EXTRACTOR_VERSION = 1  # bump when extraction changes, so stale caches are not reused
SOURCES = ("stdlib", "hf:<dataset name>[:<config>]", "a .txt/.md file or a folder of them")
TEXT_SUFFIXES = (".md", ".txt")

# Parts of the standard library that are not its documentation: tests, third-party packages,
# build- and machine-specific files (`_sysconfigdata_*` differs between builds of one version).
_SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "test", "tests", "idle_test"}
_SKIP_PREFIXES = ("config-", "lib-dynload", "_sysconfigdata")

MIN_WORDS = 6  # shorter fragments ("Return self.") carry little English
MIN_LETTER_FRACTION = 0.8  # of the non-space characters
MIN_PLAIN_WORD_FRACTION = 0.7  # of the words: plain English words, not identifiers or code
_PLAIN_WORD = re.compile(r"[(\"']?[A-Za-z][a-z]*(?:['-][a-z]+)*[.,;:!?)\"']*")


# --- documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    id: str  # stable name ("stdlib/json/decoder.py"); it alone decides the split
    text: str


def documents_sha256(documents: Sequence[Document]) -> str:
    """sha256 of the canonical JSON-lines form of the documents (the cached corpus's bytes)."""
    return hashlib.sha256(_to_jsonl(documents).encode("utf-8")).hexdigest()


def _to_jsonl(documents: Sequence[Document]) -> str:
    lines = (json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) for d in documents)
    return "".join(line + "\n" for line in lines)


def _from_jsonl(text: str) -> list[Document]:
    rows = (json.loads(line) for line in text.splitlines() if line)
    return [Document(r["id"], r["text"]) for r in rows]


def is_prose(paragraph: str) -> bool:
    """Mostly letters and mostly plain words: English sentences, not code, tables or lists."""
    words = paragraph.split()
    if len(words) < MIN_WORDS:
        return False
    letters = sum(c.isalpha() for c in paragraph)
    if letters < MIN_LETTER_FRACTION * (len(paragraph) - paragraph.count(" ")):
        return False
    plain = sum(_PLAIN_WORD.fullmatch(w) is not None for w in words)
    return plain >= MIN_PLAIN_WORD_FRACTION * len(words)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each reflowed onto one line; doctest blocks dropped."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        if any(line.lstrip().startswith((">>>", "...")) for line in block.splitlines()):
            continue
        paragraph = " ".join(block.split())
        if paragraph:
            out.append(paragraph)
    return out


def _prose(chunks: Sequence[str], seen: set[str]) -> list[str]:
    """The English paragraphs of `chunks` that are not in `seen` (which they are added to)."""
    kept = []
    for chunk in chunks:
        for paragraph in _paragraphs(chunk):
            if paragraph not in seen and is_prose(paragraph):
                seen.add(paragraph)
                kept.append(paragraph)
    return kept


# --- the standard library ----------------------------------------------------------------------


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(packages: Sequence[str] | None = None) -> list[Path]:
    """The standard library's own .py files in sorted path order; `packages` picks top-levels."""
    root = stdlib_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(_SKIP_PREFIXES)
        ]
        for name in filenames:
            if name.endswith(".py") and not name.startswith(_SKIP_PREFIXES):
                files.append(Path(dirpath, name).relative_to(root))
    if packages is not None:
        wanted = set(packages)
        files = [
            f for f in files if f.parts[0] in wanted or (len(f.parts) == 1 and f.stem in wanted)
        ]
    return [root / f for f in sorted(files, key=lambda f: f.as_posix())]


def _docstrings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, docstring) of the module and every class and function, descending only statements."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield node.body[0].lineno, doc
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(s for s in getattr(node, name, ()) if isinstance(s, ast.AST))


def _comment_blocks(source: str) -> list[tuple[int, str]]:
    """(line, text) of each run of consecutive full-line comments."""
    blocks: list[tuple[int, list[str]]] = []
    last = -2
    for i, line in enumerate(source.split("\n")):
        stripped = line.lstrip()
        if not stripped.startswith("#"):
            continue
        body = stripped.lstrip("#!").strip()
        if i == last + 1:
            blocks[-1][1].append(body)
        else:
            blocks.append((i + 1, [body]))
        last = i
    return [(line, "\n".join(lines)) for line, lines in blocks]


def _module_prose(path: Path, seen: set[str]) -> str:
    source = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old modules
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return ""  # e.g. lib2to3's Python 2 fixtures
    text = source.decode("utf-8", errors="replace")
    chunks = sorted([*_docstrings(tree), *_comment_blocks(text)])  # in source order
    return "\n\n".join(_prose([c for _, c in chunks], seen))


# C modules with docstrings (no import side effects); a build that lacks one just skips it.
C_MODULES = (
    "_abc", "_bisect", "_codecs", "_collections", "_contextvars", "_csv", "_datetime",
    "_decimal", "_elementtree", "_functools", "_heapq", "_io", "_json", "_operator", "_pickle",
    "_queue", "_random", "_signal", "_socket", "_sre", "_stat", "_statistics", "_string",
    "_struct", "_symtable", "_thread", "_tracemalloc", "_warnings", "_weakref", "array",
    "atexit", "binascii", "builtins", "cmath", "faulthandler", "gc", "itertools", "marshal",
    "math", "mmap", "posix", "pyexpat", "select", "sys", "time", "unicodedata", "zlib",
)  # fmt: skip


def _c_module_docstrings(name: str) -> list[str]:
    """Docstrings of a C module, its functions and classes, and their methods, by sorted name."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    docs = [module.__doc__]
    for _, obj in sorted(vars(module).items()):
        if inspect.isbuiltin(obj):
            docs.append(obj.__doc__)
        elif inspect.isclass(obj) and obj.__module__ in (name, name.lstrip("_")):
            docs.append(obj.__doc__)
            docs += [getattr(v, "__doc__", None) for _, v in sorted(vars(obj).items())]
    return [d for d in docs if isinstance(d, str)]


def stdlib_documents(packages: Sequence[str] | None = None) -> list[Document]:
    """The English prose shipped with this Python: one document per module, then per topic.

    Docstrings (`ast.get_docstring(clean=True)`) and comment blocks of the .py modules, the
    docstrings of the C modules in `C_MODULES`, and the reference topics; split into paragraphs,
    reflowed, kept when `is_prose`, and deduplicated (first occurrence in path order wins).
    `packages` restricts to some top-level modules and skips the reference topics (for tests).
    """
    root, seen, docs = stdlib_root(), set(), []
    for path in stdlib_files(packages):
        text = _module_prose(path, seen)
        if text:
            docs.append(Document("stdlib/" + path.relative_to(root).as_posix(), text))
    if packages is None:
        for name in C_MODULES:
            text = "\n\n".join(_prose(_c_module_docstrings(name), seen))
            if text:
                docs.append(Document("builtin/" + name, text))

        from pydoc_data.topics import topics  # the language reference, as `help()` shows it

        for name in sorted(topics):
            text = "\n\n".join(_prose([topics[name]], seen))
            if text:
                docs.append(Document("pydoc_topics/" + name, text))
    return docs


def python_version() -> str:
    return f"{platform.python_implementation().lower()}-{platform.python_version()}"


def cached_stdlib_documents(cache: str | os.PathLike | None = None) -> tuple[list[Document], dict]:
    """`stdlib_documents()`, extracted once per Python version into `cache` (or `cache_dir()`).

    Returns the documents and the metadata (sha256, python version, sizes, extraction time).
    The cache folder `corpus/stdlib-<python>-v<extractor>/` is built in a temporary folder and
    renamed into place (`core.cache`); one whose bytes do not match its recorded sha256 is
    rebuilt.
    """
    key = f"stdlib-{python_version()}-v{EXTRACTOR_VERSION}"
    folder = artifact_dir("corpus", key, cache)
    if is_complete(folder):
        found = _read_documents(folder)
        if found is not None:
            return found
        shutil.rmtree(folder, ignore_errors=True)  # a damaged cache: extract again
    built: list[tuple[list[Document], dict]] = []

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        docs = stdlib_documents()
        jsonl = _to_jsonl(docs)
        meta = {
            "source": "stdlib",
            "python_version": python_version(),
            "extractor_version": EXTRACTOR_VERSION,
            "sha256": hashlib.sha256(jsonl.encode("utf-8")).hexdigest(),
            "n_documents": len(docs),
            "n_characters": sum(len(d.text) for d in docs),
            "n_bytes": sum(len(d.text.encode("utf-8")) for d in docs),
            "extraction_seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "documents.jsonl").write_text(jsonl, encoding="utf-8")
        (tmp / "meta.json").write_text(dumps_json(meta), encoding="utf-8")
        built.append((docs, meta))

    cached_folder("corpus", key, build, root=cache)
    if built:
        return built[0]
    found = _read_documents(folder)  # another process extracted it first
    if found is None:
        raise AlignlabError(f"the corpus cache {folder} is damaged; delete it and run again")
    return found


def _read_documents(folder: Path) -> tuple[list[Document], dict] | None:
    """The cached documents and metadata, or None if they are unreadable or do not match."""
    try:
        meta, data = read_json(folder / "meta.json"), (folder / "documents.jsonl").read_bytes()
        if hashlib.sha256(data).hexdigest() == meta["sha256"]:
            return _from_jsonl(data.decode("utf-8")), meta
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# --- other sources -----------------------------------------------------------------------------


def _chunk(text: str, max_chars: int) -> list[str]:
    """Paragraph-aligned pieces of about max_chars, so one big file still splits train/val."""
    pieces, current, size = [], [], 0
    for paragraph in re.split(r"\n[ \t]*\n", text):
        if not paragraph.strip():
            continue
        if current and size + len(paragraph) > max_chars:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph.strip("\n"))
        size += len(paragraph) + 2
    if current:
        pieces.append("\n\n".join(current))
    return pieces


def file_documents(
    paths: str | os.PathLike | Sequence[str | os.PathLike], chunk_chars: int = 8192
) -> list[Document]:
    """Local text: files as given, folders searched for *.txt and *.md (sorted, recursive).

    Each file is split at blank lines into documents of about `chunk_chars` characters, with
    ids `<file>#<k>` relative to the folder given, so the split does not depend on where the
    folder sits.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    docs = []
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(
                (p for p in given.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()),
                key=lambda p: p.as_posix(),
            )
            if not files:
                raise AlignlabError(f"corpus folder {given} has no {'/'.join(TEXT_SUFFIXES)} files")
            named = [(f"{given.name}/{p.relative_to(given).as_posix()}", p) for p in files]
        elif given.is_file():
            named = [(given.name, given)]
        else:
            raise AlignlabError(f"corpus file or folder {given} does not exist; {_valid_sources()}")
        for name, path in named:
            try:
                text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
            except UnicodeDecodeError as e:
                raise AlignlabError(f"corpus file {path} is not UTF-8 text ({e})") from None
            docs += [Document(f"{name}#{k}", t) for k, t in enumerate(_chunk(text, chunk_chars))]
    return docs


def hf_documents(
    name: str,
    split: str = "train",
    text_field: str = "text",
    config: str | None = None,
    max_documents: int | None = None,
) -> list[Document]:
    """Rows of a Hugging Face dataset (downloaded by `datasets`; never the default)."""
    try:
        import datasets
    except ImportError:
        raise AlignlabError(
            f"corpus 'hf:{name}' needs the `datasets` package (pip install datasets); "
            "the default corpus 'stdlib' needs nothing"
        ) from None
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, unknown name, unknown split: all user-facing
        raise AlignlabError(f"could not load Hugging Face dataset {name!r}: {e}") from None
    docs = []
    for i, row in enumerate(rows):
        if max_documents is not None and len(docs) >= max_documents:
            break
        if text_field not in row:
            raise AlignlabError(
                f"dataset {name!r} has no field {text_field!r}; its fields: {', '.join(row)}"
            )
        if row[text_field] and row[text_field].strip():
            docs.append(Document(f"hf:{name}/{split}/{i}", row[text_field]))
    return docs


def _valid_sources() -> str:
    return "valid corpus sources: " + ", ".join(SOURCES)


# --- the corpus and its split ------------------------------------------------------------------


def _hash_unit(doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by the document id alone."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(
    documents: Sequence[Document], val_fraction: float
) -> tuple[list[Document], list[Document]]:
    """(train, val): a document is validation iff hash(id) < val_fraction; never both.

    When no document hashes below val_fraction (a tiny corpus), the one with the smallest hash
    becomes validation, so there is always something to evaluate on.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise AlignlabError(f"val_fraction must be in [0, 1), got {val_fraction}")
    units = [_hash_unit(d.id) for d in documents]
    is_val = [u < val_fraction for u in units]
    if val_fraction > 0 and not any(is_val) and len(documents) >= 2:
        is_val[int(np.argmin(units))] = True
    train = [d for d, v in zip(documents, is_val) if not v]
    val = [d for d, v in zip(documents, is_val) if v]
    return train, val


class TextTokenizer(Protocol):
    """What a corpus needs from a tokenizer (alignlab.gemma2.tokenizer.Tokenizer is one)."""

    bos_id: int | None
    eos_id: int | None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


@dataclass
class Corpus:
    """Documents split into train and validation, with where they came from."""

    source: str
    train: list[Document]
    val: list[Document]
    sha256: str  # of all documents, before the split
    val_fraction: float
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        source: str,
        val_fraction: float = 0.05,
        meta: dict | None = None,
    ) -> Corpus:
        """Split `documents` by id hash (see `split_documents`); sha256 covers them all."""
        meta = dict(meta or {})
        if not documents:
            raise AlignlabError(f"corpus {source!r} has no documents")
        train, val = split_documents(documents, val_fraction)
        if not train:
            raise AlignlabError(f"corpus {source!r} has no training documents")
        sha = meta.get("sha256") or documents_sha256(documents)
        return cls(source, train, val, sha, val_fraction, meta)

    @functools.cached_property
    def train_sha256(self) -> str:
        """Identifies the training text exactly (tokenizer caches are keyed by it)."""
        return documents_sha256(self.train)

    def texts(self, split: str = "train") -> list[str]:
        if split not in ("train", "val"):
            raise AlignlabError(f"unknown split {split!r}; valid: train, val")
        return [d.text for d in (self.train if split == "train" else self.val)]

    @property
    def train_text(self) -> str:
        return "\n\n".join(self.texts("train"))

    @property
    def val_text(self) -> str:
        return "\n\n".join(self.texts("val"))

    def n_bytes(self, split: str | None = None) -> int:
        splits = ("train", "val") if split is None else (split,)
        return sum(len(t.encode("utf-8")) for s in splits for t in self.texts(s))

    def tokens(self, tokenizer: TextTokenizer, split: str = "train") -> np.ndarray:
        """The split as one flat token stream, documents as <bos> text <eos>."""
        ids = tokenizer.encode_batch(self.texts(split))
        return token_stream(ids, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "python_version": self.meta.get("python_version"),
            "train_documents": len(self.train),
            "val_documents": len(self.val),
            "train_bytes": self.n_bytes("train"),
            "val_bytes": self.n_bytes("val"),
        }


def load_corpus(
    source: str | os.PathLike | Sequence[str | os.PathLike] = "stdlib",
    val_fraction: float = 0.05,
    cache: str | os.PathLike | None = None,
) -> Corpus:
    """The corpus named by `source`, split into train/val.

    `source` is "stdlib" (the default: Python's own docs, cached under `cache` or
    `cache_dir()`), "hf:<dataset name>[:<config>]" (needs `datasets` and a network; for other
    options use `Corpus.from_documents(hf_documents(...), ...)`), or a path or list of paths
    to .txt/.md files or folders of them.
    """
    meta: dict = {}
    if isinstance(source, str) and source == "stdlib":
        docs, meta = cached_stdlib_documents(cache)
        label = "stdlib"
    elif isinstance(source, str) and source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        label, docs = source, hf_documents(name, config=config or None)
    elif isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        hint = did_you_mean(str(source), ["stdlib"])
        raise AlignlabError(f"unknown corpus source {str(source)!r}.{hint} {_valid_sources()}")
    else:
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        label, docs = ",".join(map(str, paths)), file_documents(paths)
    return Corpus.from_documents(docs, label, val_fraction, meta)


# --- token streams and batches -----------------------------------------------------------------


def token_stream(
    token_ids: Sequence[Sequence[int]], bos_id: int | None = None, eos_id: int | None = None
) -> np.ndarray:
    """Documents back to back, each as [bos] ids [eos] (either marker optional).

    uint16 when every id fits (half the memory, as in nanoGPT), else int32.
    """
    bos = np.array([] if bos_id is None else [bos_id], dtype=np.int64)
    eos = np.array([] if eos_id is None else [eos_id], dtype=np.int64)
    parts = [p for ids in token_ids for p in (bos, np.asarray(ids, dtype=np.int64), eos)]
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if stream.size and (stream.min() < 0 or stream.max() >= 2**31):
        raise AlignlabError("token ids must be in [0, 2**31)")
    return stream.astype(np.uint16 if stream.size == 0 or stream.max() < 2**16 else np.int32)


def _check_seq_len(seq_len: int) -> None:
    if seq_len < 1:
        raise AlignlabError(f"seq_len must be at least 1, got {seq_len}")


def sample_batch(
    stream: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """(batch_size, seq_len + 1) int64 windows stream[s : s + seq_len + 1] at uniform starts s.

    Inputs are [:, :-1] and next-token targets [:, 1:].
    """
    _check_seq_len(seq_len)
    n_starts = len(stream) - seq_len  # last start s = len - seq_len - 1 ends at the stream's end
    if n_starts < 1:
        raise AlignlabError(
            f"token stream of {len(stream)} tokens is too short for seq_len={seq_len}"
        )
    starts = rng.integers(0, n_starts, size=batch_size)
    return stream[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)


def eval_batches(
    stream: np.ndarray, seq_len: int, batch_size: int, max_windows: int | None = None
) -> Iterator[np.ndarray]:
    """The stream in order as windows of seq_len + 1 overlapping by one token, batched.

    Every token after the first is a target exactly once, so the mean loss over all windows
    is the stream's perplexity. The tail shorter than seq_len comes last as its own (1, k + 1)
    batch. `max_windows` stops early (a prefix of the stream) for cheap estimates.
    """
    _check_seq_len(seq_len)
    if len(stream) < 2:
        raise AlignlabError(f"token stream of {len(stream)} tokens has nothing to evaluate")
    n_full = (len(stream) - 1) // seq_len
    has_tail = n_full * seq_len < len(stream) - 1
    if max_windows is not None:
        has_tail = has_tail and n_full < max_windows
        n_full = min(n_full, max_windows)
    for first in range(0, n_full, batch_size):
        starts = np.arange(first, min(first + batch_size, n_full)) * seq_len
        yield stream[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    if has_tail:
        yield stream[None, n_full * seq_len :].astype(np.int64)


def synthetic_tokens(vocab_size: int, n: int, period: int = 64, seed: int = 0) -> np.ndarray:
    """A random sequence of `period` tokens repeated to length n: learnable by memorising it."""
    pattern = np.random.default_rng(seed).integers(0, vocab_size, size=period)
    return np.resize(pattern, n).astype(np.int64)
