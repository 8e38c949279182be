import collections
import sys
import types

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import data
from alignlab.gemma2.data import Document

SUBSET = ["json", "textwrap", "difflib"]  # a few modules: the fast stand-in for the full corpus


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    """The full default corpus, extracted once (about 5 s on 2 busy cores) into a fresh cache."""
    return data.load_corpus("stdlib", cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def small_stdlib(monkeypatch):
    """Make the "stdlib" source extract only SUBSET, for tests of the cache around it."""
    real = data.stdlib_documents
    monkeypatch.setattr(data, "stdlib_documents", lambda: real(SUBSET))


# --- extraction --------------------------------------------------------------------------------


def test_extraction_is_deterministic():
    first, second = data.stdlib_documents(SUBSET), data.stdlib_documents(SUBSET)
    assert first and [d.id for d in first] == sorted(d.id for d in first)
    assert data.documents_sha256(first) == data.documents_sha256(second)


def test_full_corpus_is_several_mb_of_english(stdlib_corpus):
    summary = stdlib_corpus.summary()
    # Measured on CPython 3.11.7: 735 documents, 2.68 MB, about 5 s to extract.
    assert stdlib_corpus.n_bytes() > 2_000_000
    assert summary["python_version"] == data.python_version()
    assert len(summary["sha256"]) == 64
    ids = [d.id for d in stdlib_corpus.train + stdlib_corpus.val]
    assert any(i.startswith("stdlib/") for i in ids) and any(
        i.startswith("pydoc_topics/") for i in ids
    )
    assert not any("/test/" in i or "site-packages" in i for i in ids)
    words = collections.Counter(stdlib_corpus.train_text.lower().split())
    top = [w for w, _ in words.most_common(20)]
    assert top[0] == "the" and {"a", "of", "to", "and", "is"} <= set(top)


def test_paragraphs_are_prose_reflowed_and_unique(stdlib_corpus):
    paragraphs = [p for d in stdlib_corpus.train for p in d.text.split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))  # deduplicated
    assert all("\n" not in p and "  " not in p and data.is_prose(p) for p in paragraphs)
    assert not any(p.startswith(">>>") for p in paragraphs)


def test_is_prose():
    assert data.is_prose("Return the arc cosine (measured in radians) of x.")
    assert not data.is_prose("Return self.")  # too short
    assert not data.is_prose("x = foo_bar(a, b) + self.baz[0] * 2 if y else None")


def test_cache_is_reused_and_rebuilt_when_damaged(tmp_path, small_stdlib):
    corpus = data.load_corpus(cache=tmp_path)
    (folder,) = (tmp_path / "corpus").iterdir()
    meta = data.read_json(folder / "meta.json")
    assert meta["sha256"] == corpus.sha256 and meta["python_version"] == data.python_version()
    assert data.load_corpus(cache=tmp_path).sha256 == corpus.sha256  # read back
    (folder / "documents.jsonl").write_text('{"id": "x", "text": "tampered"}\n')
    assert data.load_corpus(cache=tmp_path).sha256 == corpus.sha256  # sha mismatch: rebuilt
    (folder / "meta.json").write_text("{not json")
    assert data.load_corpus(cache=tmp_path).sha256 == corpus.sha256


def test_failed_cache_write_leaves_nothing_half_written(tmp_path, small_stdlib, monkeypatch):
    dumps_json = data.dumps_json

    def crash(meta):
        raise KeyboardInterrupt  # killed between writing the documents and the metadata

    monkeypatch.setattr(data, "dumps_json", crash)
    with pytest.raises(KeyboardInterrupt):
        data.load_corpus(cache=tmp_path)
    assert list((tmp_path / "corpus").iterdir()) == []  # no folder, complete or not
    monkeypatch.setattr(data, "dumps_json", dumps_json)
    corpus = data.load_corpus(cache=tmp_path)  # the next run builds the cache
    (folder,) = (tmp_path / "corpus").iterdir()
    assert corpus.sha256 == data.read_json(folder / "meta.json")["sha256"]


# --- split -------------------------------------------------------------------------------------


def test_train_and_val_are_disjoint_and_complete(stdlib_corpus):
    train = {d.id for d in stdlib_corpus.train}
    val = {d.id for d in stdlib_corpus.val}
    assert train and val and not train & val
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.1  # val_fraction = 0.05 of documents


def test_split_depends_on_the_id_alone():
    docs = [Document(f"doc{i}", "text") for i in range(400)]
    train, val = data.split_documents(docs, 0.1)
    more_train, more_val = data.split_documents(docs + [Document("new", "x")], 0.1)
    assert set(d.id for d in val) <= set(d.id for d in more_val)
    assert set(d.id for d in train) <= set(d.id for d in more_train)
    assert 20 < len(val) < 60
    assert data.split_documents(docs[:2], 0.01)[1]  # a tiny corpus still gets a validation doc
    assert data.split_documents(docs, 0.0)[1] == []
    with pytest.raises(AlignlabError, match="val_fraction"):
        data.split_documents(docs, 1.0)


# --- other sources -----------------------------------------------------------------------------


def test_local_files_and_folders(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    paragraph = "The quick brown fox jumps over the lazy dog. " * 20
    (folder / "big.txt").write_text("\n\n".join([paragraph] * 100))  # ~90 kB: many documents
    (folder / "sub" / "notes.md").write_text("# Notes\r\n\r\nSome notes.\r\n")
    (folder / "ignored.py").write_text("print('not text')")
    single = tmp_path / "one.text"
    single.write_text("A file named explicitly is read whatever its suffix.")
    corpus = data.load_corpus([folder, single], val_fraction=0.2)
    ids = [d.id for d in corpus.train + corpus.val]
    assert "texts/sub/notes.md#0" in ids and "one.text#0" in ids
    assert not any("ignored" in i for i in ids)
    assert sum(i.startswith("texts/big.txt#") for i in ids) > 5
    assert corpus.train and corpus.val
    notes = next(d for d in corpus.train + corpus.val if d.id == "texts/sub/notes.md#0")
    assert notes.text == "# Notes\n\nSome notes."
    assert data.load_corpus(str(single)).sha256 == data.load_corpus(single).sha256


def test_bad_sources_raise_one_clear_error(tmp_path):
    with pytest.raises(AlignlabError, match="Did you mean: stdlib.*valid corpus sources"):
        data.load_corpus("stdlb")
    with pytest.raises(AlignlabError, match="does not exist"):
        data.file_documents([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignlabError, match="no .md/.txt files"):
        data.load_corpus(tmp_path / "empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(AlignlabError, match="not UTF-8"):
        data.load_corpus(tmp_path / "latin1.txt")
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    with pytest.raises(AlignlabError, match="no documents"):
        data.load_corpus(tmp_path / "blank.txt")


def test_hugging_face_source(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(AlignlabError, match="needs the `datasets` package"):
        data.load_corpus("hf:wikitext")
    rows = [{"text": f"Row number {i} of a small data set."} for i in range(30)] + [{"text": ""}]
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    corpus = data.load_corpus("hf:org/fake:small")
    assert len(corpus.train) + len(corpus.val) == 30 and corpus.source == "hf:org/fake:small"
    assert calls == [("org/fake", "small", "train")]
    with pytest.raises(AlignlabError, match="no field 'content'"):
        data.hf_documents("fake", text_field="content")


# --- token streams and batches -----------------------------------------------------------------


def test_token_stream_frames_documents():
    stream = data.token_stream([[5, 6], [], [7]], bos_id=2, eos_id=1)
    assert stream.tolist() == [2, 5, 6, 1, 2, 1, 2, 7, 1] and stream.dtype == np.uint16
    assert data.token_stream([[70_000]]).dtype == np.int32
    assert data.token_stream([[5], [6]]).tolist() == [5, 6]


def test_sample_batch_windows_are_contiguous_and_seeded():
    stream = np.random.default_rng(0).integers(0, 60_000, size=1000).astype(np.uint16)
    batch = data.sample_batch(stream, 64, 16, np.random.default_rng(7))
    assert batch.shape == (64, 17) and batch.dtype == np.int64
    starts = np.random.default_rng(7).integers(0, len(stream) - 16, size=64)
    for row, s in zip(batch, starts):
        np.testing.assert_array_equal(row, stream[s : s + 17])
    np.testing.assert_array_equal(
        batch, data.sample_batch(stream, 64, 16, np.random.default_rng(7))
    )
    assert not np.array_equal(batch, data.sample_batch(stream, 64, 16, np.random.default_rng(8)))
    exact = data.sample_batch(stream[:17], 4, 16, np.random.default_rng(0))  # only start 0 fits
    np.testing.assert_array_equal(exact, np.tile(stream[:17], (4, 1)))
    with pytest.raises(AlignlabError, match="too short"):
        data.sample_batch(stream[:16], 4, 16, np.random.default_rng(0))
    with pytest.raises(AlignlabError, match="seq_len must be at least 1"):
        data.sample_batch(stream, 4, 0, np.random.default_rng(0))


@pytest.mark.parametrize("length", [2, 33, 160, 161, 1000])
def test_eval_batches_cover_every_target_once(length):
    stream = np.arange(length, dtype=np.uint16)
    batches = list(data.eval_batches(stream, seq_len=32, batch_size=3))
    targets = np.concatenate([b[:, 1:].ravel() for b in batches])
    np.testing.assert_array_equal(targets, stream[1:])  # in order, none twice, none missed
    assert all(b.shape[1] == 33 for b in batches[:-1]) and all(len(b) <= 3 for b in batches)
    capped = list(data.eval_batches(stream, seq_len=32, batch_size=3, max_windows=2))
    assert sum(len(b) for b in capped) == min(2, sum(len(b) for b in batches))
    np.testing.assert_array_equal(capped[0], batches[0][:2])


def test_corpus_tokens_with_a_character_tokenizer(tmp_path):
    class Chars:  # ids = code points + 3, with Gemma's bos/eos ids
        bos_id, eos_id = 2, 1

        def encode_batch(self, texts):
            return [[ord(c) + 3 for c in t] for t in texts]

    (tmp_path / "a.txt").write_text("\n\n".join(f"Paragraph {i}." * 700 for i in range(10)))
    corpus = data.load_corpus(tmp_path, val_fraction=0.3)
    stream = corpus.tokens(Chars(), "train")
    assert stream[0] == 2 and stream[-1] == 1
    assert (stream == 2).sum() == len(corpus.train)
    text = "".join(chr(t - 3) if t > 2 else "|" for t in stream.tolist())
    assert text == "".join(f"|{t}|" for t in corpus.texts("train"))
    with pytest.raises(AlignlabError, match="unknown split"):
        corpus.texts("test")
