"""Activation pipeline for Gemma Scope SAEs (§3.2 "Inputs"): special tokens excluded, one forward
pass per batch for every site, a shuffling buffer that keeps sites aligned, and shards on disk."""

import json
import os

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM
from alignlab.gemmascope.activations import (
    ActivationChunk,
    ActivationSource,
    bos_windows,
    default_special_ids,
    token_mask,
    token_windows,
)
from alignlab.gemmascope.buffer import ShuffledBuffer, site_batches
from alignlab.gemmascope.shards import read_shards, write_shards
from alignlab.gemmascope.sites import capture_sites

PAD, EOS, BOS = 0, 1, 2
SPECIAL = (PAD, EOS, BOS)
SITES3 = [("attn_z", 1), ("mlp_out", 2), ("resid_post", 0)]


def tiny_model(seed=0, **overrides) -> Gemma2ForCausalLM:
    cfg = Gemma2Config.preset("tiny", **overrides)
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else 0.15)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def doc_stream(n_docs=12, seed=0) -> np.ndarray:
    """Documents <bos> ... <eos> of random lengths, as gemma2's token_stream builds them."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n_docs):
        parts += [BOS, *rng.integers(4, 512, size=int(rng.integers(3, 30))).tolist(), EOS]
    return np.asarray(parts, dtype=np.int64)


def cat(chunks, key):
    return torch.cat([c[key] if isinstance(c, dict) else c.acts[key] for c in chunks])


# --- special tokens ----------------------------------------------------------------------------


def test_token_mask():
    ids = torch.tensor([[BOS, 5, 6, EOS, PAD], [7, PAD, BOS, 8, 9]])
    expected = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(token_mask(ids, SPECIAL), expected)
    assert token_mask(ids, []).all()


def test_default_special_ids_come_from_the_config(model):
    cfg = model.config
    assert default_special_ids(model) == tuple(
        sorted({cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id})
    )
    assert set(default_special_ids(model)) == set(SPECIAL)


def test_special_tokens_are_excluded_and_kept_rows_match_the_capture(model):
    ids = torch.randint(4, 512, (3, 16), generator=torch.Generator().manual_seed(0))
    ids[0, 0] = BOS
    ids[0, 9] = EOS
    ids[0, 10] = BOS
    ids[1, 12:] = PAD  # right padding
    ids[2, :3] = PAD  # left padding
    ids[2, 3] = BOS
    ids[2, 15] = EOS
    n_special = 3 + 4 + 5
    keep = token_mask(ids, SPECIAL)
    assert int((~keep).sum()) == n_special

    src = ActivationSource(model, ids, SITES3, batch_size=3)
    (chunk,) = list(src.chunks())
    assert chunk.n_tokens == ids.numel() - n_special
    with torch.no_grad(), capture_sites(model, SITES3) as captured:
        model(ids)
    for key in SITES3:
        assert chunk.acts[key].dtype == torch.float32
        assert torch.equal(chunk.acts[key], captured[key][keep])
    cols = torch.arange(16).expand(3, 16)
    assert torch.equal(chunk.positions, cols[keep])
    assert torch.equal(chunk.token_ids, ids[keep])
    assert not torch.isin(chunk.token_ids, torch.tensor(SPECIAL)).any()


def test_explicit_special_ids_override_the_config(model):
    ids = torch.tensor([[BOS, 5, 6, 7, EOS, 8]])
    (acts,) = list(ActivationSource(model, ids, [("resid_post", 0)], batch_size=1))
    assert acts[("resid_post", 0)].shape == (4, 64)
    (acts,) = list(
        ActivationSource(model, ids, [("resid_post", 0)], batch_size=1, special_ids=[5, 6])
    )
    assert acts[("resid_post", 0)].shape == (4, 64)  # bos/eos kept, 5 and 6 dropped


def test_sequential_stream_keeps_every_non_special_token_once(model):
    stream = doc_stream()
    src = ActivationSource(
        model, stream, [("resid_post", 1)], batch_size=4, seq_len=16, order="sequential"
    )
    chunks = list(src.chunks())
    ids = torch.cat([c.token_ids for c in chunks])
    assert torch.equal(ids, torch.from_numpy(stream[~np.isin(stream, SPECIAL)]))
    assert sum(c.n_tokens for c in chunks) == len(ids)
    assert all(c.positions.max() < 16 for c in chunks)


# --- one forward pass for all sites ------------------------------------------------------------


def test_one_forward_pass_per_batch_serves_every_site(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape))
    try:
        src = ActivationSource(
            model, doc_stream(), SITES3, batch_size=4, seq_len=16, seed=3, max_batches=5
        )
        chunks = list(src.chunks())
    finally:
        handle.remove()
    assert len(chunks) == 5
    assert len(calls) == 5 and src.forward_passes == 5
    assert all(shape == (4, 16) for shape in calls)
    for c in chunks:  # every site holds the same number of rows
        assert {c.acts[k].shape[0] for k in SITES3} == {c.n_tokens}
        assert c.acts[("attn_z", 1)].shape[1] == 64 and c.acts[("mlp_out", 2)].shape[1] == 64


def test_model_left_in_its_mode_and_no_grad(model):
    model.train()
    try:
        (acts,) = list(
            ActivationSource(model, doc_stream(), SITES3, batch_size=2, seq_len=8, max_batches=1)
        )
        assert model.training
    finally:
        model.eval()
    assert not any(t.requires_grad for t in acts.values())


# --- windows -----------------------------------------------------------------------------------


def test_random_windows_are_seeded_and_inside_the_stream():
    stream = np.arange(100)

    def draw(seed):
        return list(token_windows(stream, batch_size=4, seq_len=10, seed=seed, max_batches=3))

    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    for w in a:
        assert w.shape == (4, 10) and w.dtype == torch.int64
        assert torch.equal(w - w[:, :1], torch.arange(10).expand(4, 10))  # contiguous windows
        assert w.min() >= 0 and w.max() <= 99


def test_sequential_windows_cover_the_stream_once():
    stream = np.arange(47)
    batches = list(token_windows(stream, batch_size=2, seq_len=10, order="sequential"))
    assert [tuple(b.shape) for b in batches] == [(2, 10), (2, 10), (1, 7)]
    assert torch.equal(torch.cat([b.flatten() for b in batches]), torch.arange(47))


def test_bos_windows_start_at_bos_and_are_spread_out():
    stream = np.array([2, 5, 6, 7, 1, 2, 8, 9, 1, 2, 3, 4, 5, 6, 1, 2, 7], dtype=np.int64)
    w = bos_windows(stream, bos_id=2, seq_len=4, n=10)
    assert w.dtype == torch.int64 and (w[:, 0] == 2).all()
    assert w.tolist() == [[2, 5, 6, 7], [2, 8, 9, 1], [2, 3, 4, 5]]  # the last <bos> is too late
    assert bos_windows(stream, 2, 4, 2).tolist() == [[2, 5, 6, 7], [2, 3, 4, 5]]
    with pytest.raises(AlignlabError, match="no <bos> at least 4 tokens before"):
        bos_windows(stream, bos_id=99, seq_len=4, n=3)


def test_activation_source_is_deterministic_given_the_seed(model):
    def run(seed):
        src = ActivationSource(
            model, doc_stream(), [("mlp_out", 1)], batch_size=2, seq_len=8, seed=seed,
            max_batches=2,
        )  # fmt: skip
        return cat(list(src), ("mlp_out", 1))

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_max_tokens_is_exact_and_progress_is_reported(model):
    seen = []
    src = ActivationSource(
        model, doc_stream(), [("resid_post", 3)], batch_size=2, seq_len=16, max_tokens=50,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    chunks = list(src)
    assert sum(c[("resid_post", 3)].shape[0] for c in chunks) == 50
    assert seen[-1] == (50, 50) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    bar = ActivationSource(  # a rich bar on stderr (transient)
        model, doc_stream(), [("resid_post", 3)], batch_size=2, seq_len=16, max_tokens=20,
        progress=True,
    )  # fmt: skip
    assert sum(c.n_tokens for c in bar.chunks()) == 20


def test_iterable_of_batches_and_bad_inputs(model):
    batches = [torch.randint(4, 512, (2, 6)), np.full((1, 4), 7)]
    chunks = list(ActivationSource(model, batches, [("attn_z", 0)], batch_size=99).chunks())
    assert [c.n_tokens for c in chunks] == [12, 4]
    with pytest.raises(AlignlabError, match="seq_len is required"):
        list(ActivationSource(model, doc_stream(), [("attn_z", 0)], batch_size=2))
    with pytest.raises(AlignlabError, match="valid orders: random, sequential"):
        ActivationSource(model, doc_stream(), [("attn_z", 0)], batch_size=2, order="shuffled")
    with pytest.raises(AlignlabError, match="too short"):
        list(token_windows(np.arange(5), batch_size=1, seq_len=10, max_batches=1))
    with pytest.raises(AlignlabError, match="valid sites"):
        ActivationSource(model, doc_stream(), [("resid", 0)], batch_size=2)
    with pytest.raises(AlignlabError, match="no sites"):
        ActivationSource(model, doc_stream(), [], batch_size=2)


def test_hf_model_gives_the_same_activations(model):
    import transformers  # the [hf] extra, installed by `make test`

    from alignlab.gemma2.hf import to_hf_config, to_hf_state_dict

    hf_cfg = transformers.Gemma2Config.from_dict(to_hf_config(model.config))
    hf = transformers.Gemma2ForCausalLM._from_config(hf_cfg, attn_implementation="eager").eval()
    hf.load_state_dict(to_hf_state_dict(model), strict=False)
    kw = dict(batch_size=2, seq_len=12, seed=0, max_batches=2)
    ours = list(ActivationSource(model, doc_stream(), SITES3, **kw).chunks())
    theirs = list(ActivationSource(hf, doc_stream(), SITES3, **kw).chunks())
    assert default_special_ids(hf) == default_special_ids(model)
    fp = ActivationSource(hf, doc_stream(), SITES3, **kw).fingerprint()
    assert fp["model"]["kind"] == "hf" and fp["model"]["config"]["hidden_size"] == 64
    json.dumps(fp)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.token_ids, b.token_ids)
        for key in SITES3:
            assert torch.allclose(a.acts[key], b.acts[key], atol=1e-5)


# --- shuffling buffer --------------------------------------------------------------------------

KA, KB = ("attn_z", 0), ("resid_post", 2)


def indexed_source(sizes=(7, 13, 1, 30, 64, 5, 90, 40, 250)):
    """Chunks whose rows encode their global row index: site A all = i, site B all = -i."""
    chunks, start = [], 0
    for n in sizes:
        idx = torch.arange(start, start + n, dtype=torch.float32)
        chunks.append({KA: idx[:, None].repeat(1, 3), KB: -idx[:, None].repeat(1, 5)})
        start += n
    return chunks, start


def drain(buffer, check=None):
    out = []
    for batch in buffer:
        if check:
            check(buffer, batch)
        out.append(batch)
    return out


def test_buffer_yields_a_permutation_with_sites_aligned_and_bounded_memory():
    chunks, total = indexed_source()
    buf = ShuffledBuffer(chunks, batch_size=10, capacity=64, seed=0)

    def check(b, batch):
        assert b.n_rows <= b.capacity
        assert all(t.shape[0] == b.capacity for t in b._storage.values())

    batches = drain(buf, check)
    assert all(b[KA].shape == (10, 3) and b[KB].shape == (10, 5) for b in batches[:-1])
    rows_a = torch.cat([b[KA] for b in batches])
    rows_b = torch.cat([b[KB] for b in batches])
    assert torch.equal(rows_a[:, 0].sort().values, torch.arange(total, dtype=torch.float32))
    assert (rows_a == rows_a[:, :1]).all()  # rows intact
    assert torch.equal(rows_b, -rows_a[:, :1].expand(-1, 5))  # same token in both sites
    assert not torch.equal(rows_a[:, 0], torch.arange(total, dtype=torch.float32))  # shuffled
    assert len(batches) == -(-total // 10)
    assert buf.nbytes == 64 * (3 + 5) * 4 == sum(t.nbytes for t in buf._storage.values())
    assert buf.n_rows == 0


def test_buffer_mixes_across_the_whole_capacity():
    """The first half-capacity of output draws from the whole first fill, not one chunk."""
    chunks, _ = indexed_source(sizes=(8,) * 64)
    first = next(iter(ShuffledBuffer(chunks, batch_size=128, capacity=256, seed=1)))
    assert first[KA][:, 0].max() >= 200 and first[KA][:, 0].min() < 50
    assert first[KA][:, 0].max() < 256  # nothing beyond the first fill yet


def test_buffer_is_deterministic_given_the_seed():
    chunks, _ = indexed_source()

    def run(seed, drop_last=False):
        buf = ShuffledBuffer(chunks, batch_size=16, capacity=96, seed=seed, drop_last=drop_last)
        return torch.cat([b[KA][:, 0] for b in buf])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert len(run(0, drop_last=True)) == (len(run(0)) // 16) * 16


def test_buffer_validation_and_dims():
    chunks, _ = indexed_source()
    with pytest.raises(AlignlabError, match="at least 2 × batch_size"):
        ShuffledBuffer(chunks, batch_size=40, capacity=64)
    buf = ShuffledBuffer(chunks, batch_size=8, capacity=64)
    with pytest.raises(AlignlabError, match="unknown until the first chunk"):
        _ = buf.nbytes
    with pytest.raises(AlignlabError, match="do not match"):
        list(ShuffledBuffer(chunks, batch_size=8, capacity=64, dims={KA: 3, KB: 6}))
    with pytest.raises(AlignlabError, match="different numbers of tokens"):
        list(ShuffledBuffer([{KA: torch.zeros(3, 2), KB: torch.zeros(4, 2)}], 1, 4))
    assert list(ShuffledBuffer([], batch_size=2, capacity=4)) == []


def test_buffer_over_a_model_source_keeps_sites_aligned(model):
    src = ActivationSource(  # sequential: no repeated windows, so every row is distinct
        model, doc_stream(), SITES3, batch_size=4, seq_len=16, order="sequential"
    )
    assert ShuffledBuffer(src, batch_size=8, capacity=32).nbytes == 32 * (64 * 3) * 4
    flat = list(src)
    batches = list(ShuffledBuffer(src, batch_size=8, capacity=32, seed=2))
    # Each row joined across sites: the output rows are the source rows, as a multiset
    # (a token at position 0 repeats its activations wherever its id repeats), so every
    # output row's sites come from one source token.
    joined_in = torch.cat([cat(flat, k) for k in SITES3], dim=1)
    joined_out = torch.cat([torch.cat([b[k] for k in SITES3], dim=1) for b in batches])
    assert joined_out.shape == joined_in.shape
    assert sorted(map(tuple, joined_out.tolist())) == sorted(map(tuple, joined_in.tolist()))
    assert not torch.equal(joined_out, joined_in)
    one_site = list(site_batches(ShuffledBuffer(src, batch_size=8, capacity=32, seed=2), SITES3[1]))
    assert torch.equal(torch.cat(one_site), torch.cat([b[SITES3[1]] for b in batches]))
    with pytest.raises(AlignlabError, match="no site resid_post.2 in the batches; they hold"):
        next(site_batches(batches, KB))


# --- shards on disk ----------------------------------------------------------------------------


def make_source(model, **kw):
    args = dict(batch_size=2, seq_len=16, seed=0, max_tokens=100) | kw
    return ActivationSource(model, doc_stream(), SITES3, **args)


def test_shard_round_trip_is_exact(model, tmp_path):
    src = make_source(model)
    index = write_shards(src, tmp_path / "cache", tokens_per_shard=30)
    assert [s["tokens"] for s in index["shards"]] == [30, 30, 30, 10]
    assert index["total_tokens"] == 100 and index["complete"]
    assert index["sites"] == ["attn_z.1", "mlp_out.2", "resid_post.0"]
    assert index["dims"] == {"attn_z.1": 64, "mlp_out.2": 64, "resid_post.0": 64}
    on_disk = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert on_disk == json.loads(json.dumps(index))
    assert on_disk["fingerprint"]["model"]["weights_sha256"]

    direct = list(src.chunks())
    cached = read_shards(tmp_path / "cache", fingerprint=src.fingerprint())
    assert cached.sites == SITES3 and cached.total_tokens == 100 and len(cached) == 4
    back = list(cached)
    for key in SITES3:
        assert torch.equal(cat(back, key), cat(direct, key))
    assert torch.equal(
        torch.cat([c.positions for c in back]), torch.cat([c.positions for c in direct])
    )
    assert torch.equal(
        torch.cat([c.token_ids for c in back]), torch.cat([c.token_ids for c in direct])
    )
    # a subset of sites, and straight into a buffer
    sub = read_shards(tmp_path / "cache", sites=[("mlp_out", 2)])
    assert sub.dims == {("mlp_out", 2): 64}
    rows = torch.cat([b[("mlp_out", 2)] for b in ShuffledBuffer(sub, batch_size=8, capacity=40)])
    assert rows.shape == (100, 64)
    assert sorted(map(tuple, rows.tolist())) == sorted(
        map(tuple, cat(direct, ("mlp_out", 2)).tolist())
    )


def test_shards_from_plain_dicts_and_max_tokens(tmp_path):
    chunks, _ = indexed_source()
    index = write_shards(chunks, tmp_path, tokens_per_shard=64, max_tokens=150)
    assert [s["tokens"] for s in index["shards"]] == [64, 64, 22]
    back = list(read_shards(tmp_path))
    assert torch.equal(cat(back, KA)[:, 0], torch.arange(150, dtype=torch.float32))
    assert all(c.positions.numel() == 0 for c in back)


def test_mismatched_or_foreign_caches_are_refused(model, tmp_path):
    src = make_source(model, max_tokens=40)
    write_shards(src, tmp_path, tokens_per_shard=64)
    with pytest.raises(AlignlabError, match=r"does not hold site\(s\) attn_z.3; it holds: "):
        read_shards(tmp_path, sites=[("attn_z", 3), ("mlp_out", 2)])
    other = tiny_model(seed=1)
    with pytest.raises(AlignlabError, match="weights_sha256"):
        read_shards(tmp_path, fingerprint=make_source(other, max_tokens=40).fingerprint())
    with pytest.raises(AlignlabError, match="data.seed"):
        read_shards(tmp_path, fingerprint=make_source(model, seed=9).fingerprint())
    with pytest.raises(AlignlabError, match="already holds an activation cache"):
        write_shards(src, tmp_path, tokens_per_shard=64)
    write_shards(indexed_source()[0], tmp_path, tokens_per_shard=500, overwrite=True)
    assert read_shards(tmp_path).sites == [KA, KB]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "shard_00000.safetensors"]
    with pytest.raises(AlignlabError, match="holds no activation cache"):
        read_shards(tmp_path / "nowhere")
    (tmp_path / "index.json").write_text('{"format": "something else"}')
    with pytest.raises(AlignlabError, match="not an activation-cache index"):
        read_shards(tmp_path)


def test_interrupted_write_leaves_only_whole_shards(tmp_path, monkeypatch):
    chunks, _ = indexed_source()

    def dying_source():
        yield from chunks[:6]  # 120 rows: shard 0 (50) and shard 1 (50) are written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shards(dying_source(), tmp_path, tokens_per_shard=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.json", "shard_00000.safetensors", "shard_00001.safetensors",
    ]  # fmt: skip
    with pytest.raises(AlignlabError, match="incomplete"):
        read_shards(tmp_path)
    partial = read_shards(tmp_path, allow_incomplete=True)
    assert partial.total_tokens == 100
    assert torch.equal(cat(list(partial), KA)[:, 0], torch.arange(100, dtype=torch.float32))

    # a crash inside a shard write (after bytes hit the temp file, before the rename)
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith("shard_00001.safetensors"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr("alignlab.core.io.os.replace", crash)
    folder = tmp_path / "second"
    with pytest.raises(OSError, match="disk gone"):
        write_shards(chunks, folder, tokens_per_shard=50)
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "shard_00000.safetensors"]
    index = json.loads((folder / "index.json").read_text())
    assert index["total_tokens"] == 50 and not index["complete"]


def test_chunk_type():
    c = ActivationChunk({KA: torch.zeros(3, 2)}, torch.arange(3), torch.arange(3))
    assert c.n_tokens == 3
