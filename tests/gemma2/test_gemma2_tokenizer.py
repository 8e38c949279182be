import json
import os

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import decoders, models, normalizers, pre_tokenizers

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import data
from alignlab.gemma2 import tokenizer as tok_module
from alignlab.gemma2.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer

VOCAB = 600


@pytest.fixture(scope="module")
def texts():
    """The prose of a few standard-library modules (~100 kB): enough for a small vocabulary."""
    return [d.text for d in data.stdlib_documents(["json", "textwrap", "difflib", "argparse"])]


@pytest.fixture(scope="module")
def bpe(texts):
    return Tokenizer.train(texts, VOCAB)


def test_training_is_deterministic(texts, bpe):
    assert Tokenizer.train(texts, VOCAB).to_json() == bpe.to_json()


def test_special_ids_match_gemma(bpe):
    assert (bpe.pad_id, bpe.eos_id, bpe.bos_id) == (0, 1, 2)
    assert [bpe.tokenizer.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert bpe.vocab_size == VOCAB
    assert bpe.encode("the") != [] and all(i >= 4 for i in bpe.encode("Hello, world"))


def test_encode_batch_matches_encode(texts, bpe):
    assert bpe.encode_batch(texts[:3]) == [bpe.encode(t) for t in texts[:3]]
    assert len(bpe.encode(texts[0])) < len(texts[0].encode()) / 2  # merges compress the text


PIECES = ["<eos>", "<bos>", "<pad>", " ", "  ", "\n", "\t", "é", "日本", "🙂", "a", "\x00"]


@settings(max_examples=100, deadline=None)
@given(st.text() | st.lists(st.sampled_from(PIECES)).map("".join))
def test_round_trip_on_any_unicode(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_save_load_round_trip(tmp_path, bpe):
    path = bpe.save(tmp_path / "ckpt")  # a folder: tokenizer.json goes inside
    assert path == tmp_path / "ckpt" / "tokenizer.json"
    loaded = Tokenizer.load(tmp_path / "ckpt")
    assert loaded.to_json() == bpe.to_json() == path.read_text()
    text = "Return the arc cosine of x, ünïcödé included."
    assert loaded.encode(text) == bpe.encode(text)
    assert (loaded.pad_id, loaded.eos_id, loaded.bos_id) == (0, 1, 2)


def test_failed_save_keeps_the_old_file(tmp_path, bpe, monkeypatch):
    path = bpe.save(tmp_path / "tokenizer.json")
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        Tokenizer.train(["something else entirely"] * 3, 300).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left


def _wordpiece() -> tokenizers.Tokenizer:
    vocab = {
        t: i
        for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "!"])
    }
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def _gemma_shaped() -> tokenizers.Tokenizer:
    """Gemma's tokenizer.json layout: BPE with byte fallback, spaces as ▁, no pre-tokenizer."""
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab |= {f"<0x{b:02X}>": len(vocab) + b for b in range(256)}
    for piece in [
        "▁",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "he",
        "ll",
        "hell",
        "hello",
        "▁w",
        "▁wor",
    ]:
        vocab[piece] = len(vocab)
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("▁", "w"), ("▁w", "o")]
    merges = [m for m in merges if "".join(m) in vocab]
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tok


@pytest.mark.parametrize(
    "build, ids, text",
    [(_wordpiece, (0, 3, 2), "hello worlds!"), (_gemma_shaped, (0, 1, 2), "hello world 日本")],
)
def test_loads_a_foreign_tokenizer_json(tmp_path, build, ids, text):
    path = tmp_path / "tokenizer.json"
    path.write_text(build().to_str())
    tok = Tokenizer.load(path)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == ids
    encoded = tok.encode(text)
    assert encoded == build().encode(text, add_special_tokens=False).ids
    assert tok.decode(encoded) == text
    assert tok.vocab_size == build().get_vocab_size()


def test_bad_tokenizer_files_raise_clear_errors(tmp_path):
    with pytest.raises(AlignlabError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    with pytest.raises(AlignlabError, match="no tokenizer file"):
        Tokenizer.load(tmp_path)  # a folder without tokenizer.json
    (tmp_path / "tokenizer.json").write_text("{truncated")
    with pytest.raises(AlignlabError, match="not a valid tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Nonsense"}}))
    with pytest.raises(AlignlabError, match="not a valid tokenizer.json"):
        Tokenizer.load(tmp_path)
    with pytest.raises(AlignlabError, match="vocab_size must be at least 260"):
        Tokenizer.train(["text"], 100)


def test_default_tokenizer_trains_once_then_reads_the_cache(tmp_path, texts, monkeypatch):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("\n\n".join(texts))
    corpus = data.load_corpus(tmp_path / "texts")
    first = default_tokenizer(400, corpus, cache=tmp_path / "cache")
    (path,) = (tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json")
    assert corpus.train_sha256[:16] in str(path) and "bpe400" in str(path)
    assert first.to_json() == Tokenizer.train(corpus.texts("train"), 400).to_json()
    assert default_tokenizer(400, corpus, cache=tmp_path / "cache") is first  # in-process

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(tok_module, "_LOADED", {})  # a fresh process
    monkeypatch.setattr(Tokenizer, "train", no_training)
    again = default_tokenizer(400, corpus, cache=tmp_path / "cache")
    assert again is not first and again.to_json() == first.to_json()
    with pytest.raises(AssertionError, match="retrained"):
        default_tokenizer(500, corpus, cache=tmp_path / "cache")  # another vocabulary: trains


def test_corpus_token_stream_decodes_back(tmp_path, bpe, texts):
    (tmp_path / "a.txt").write_text("\n\n".join(texts[:2]))
    corpus = data.load_corpus(tmp_path / "a.txt", val_fraction=0.3)
    stream = corpus.tokens(bpe, "val")
    assert stream[0] == bpe.bos_id and stream[-1] == bpe.eos_id
    decoded = bpe.decode(stream.tolist())
    assert decoded == "".join(f"<bos>{t}<eos>" for t in corpus.texts("val"))
