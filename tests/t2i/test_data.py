"""The Imagen 3 data pipeline (Sec. 2) on the simulated shapes world: defects, filters, variants."""

import json

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.t2i import data as D
from alignlab.t2i.world import (
    COLOURS,
    MOTIF_SYNONYMS,
    SHAPES,
    STEREOTYPE,
    STYLES,
    VOCAB,
    WorldConfig,
    render_batch,
    sample_scene,
)

DETECTION_STAGES = ("unsafe", "low_quality", "ai_generated", "dedup", "captions")


@pytest.fixture(scope="module")
def pool():
    return D.build_pool(D.DataConfig(n_raw=1500, n_calib=300), np.random.default_rng(0))


@pytest.fixture(scope="module")
def pipeline(pool):
    return D.filter_log(pool)


@pytest.fixture(scope="module")
def full(pool):
    return D.run_pipeline(pool, "full")


def test_defects_are_injected_and_labelled(pool):
    n = len(pool)
    assert pool.images.shape == (n, 32, 32, 3) and pool.images.dtype == np.uint8
    assert len(pool.scenes) == len(pool.original) == len(pool.synthetic) == n
    assert all(len(s) == len(STYLES) for s in pool.synthetic)
    cfg = pool.config
    for key, frac in [
        ("unsafe", cfg.unsafe_frac),
        ("low_quality", cfg.low_quality_frac),
        ("ai_generated", cfg.ai_frac),
        ("pii", cfg.pii_frac),
        ("blocklist", cfg.blocklist_frac),
    ]:
        assert pool.labels[key].sum() == round(frac * n), key
    image_defects = [pool.labels[k] for k in ("unsafe", "low_quality", "ai_generated")]
    image_defects.append(pool.cluster >= 0)
    assert (np.sum(image_defects, axis=0) <= 1).all()  # disjoint rows
    sizes = np.bincount(pool.cluster[pool.cluster >= 0])
    assert sizes.min() >= cfg.dup_burst[0] and sizes.max() <= cfg.dup_burst[1]
    # a burst is one scene re-rendered with fresh pixel noise
    for b in range(len(sizes)):
        rows = np.flatnonzero(pool.cluster == b)
        assert len({pool.scenes[r] for r in rows}) == 1
        d = np.abs(pool.images[rows].astype(int) - pool.images[rows[0]].astype(int))
        assert d.max() <= 2 * cfg.dup_noise
    # the motif: a pink group, named by a synonym in the synthetic captions
    for r in np.flatnonzero(pool.labels["unsafe"]):
        assert any(g.colour == "pink" for g in pool.scenes[r].groups)
        assert all(any(w in c.split() for w in MOTIF_SYNONYMS) for c in pool.synthetic[r])
    for r in np.flatnonzero(~pool.labels["unsafe"]):
        assert all(g.colour in COLOURS for g in pool.scenes[r].groups)
    # caption defects live in the original caption
    assert all("@" in o or "555-" in o for o, p in zip(pool.original, pool.labels["pii"]) if p)
    assert not set(D.BLOCKLIST) & set(VOCAB)


def test_phash_equals_imagehash(pool):
    imagehash = pytest.importorskip("imagehash")
    from PIL import Image

    rows = np.random.default_rng(1).choice(len(pool), 200, replace=False)
    batch = D.phash_batch(pool.images[rows])
    for r, h in zip(rows, batch):
        want = int(str(imagehash.phash(Image.fromarray(pool.images[r]))), 16)
        assert D.phash(pool.images[r]) == want == int(h)
    # other resolutions go through PIL's Lanczos resize, as imagehash does
    wc = WorldConfig(res=64)
    rng = np.random.default_rng(2)
    big = render_batch([sample_scene(rng, wc) for _ in range(10)], wc)
    for im, h in zip(big, D.phash_batch(big)):
        assert int(h) == int(str(imagehash.phash(Image.fromarray(im))), 16)
    with pytest.raises(ValueError, match="uint8"):
        D.phash_batch(pool.images[:2].astype(np.float32))


def test_hamming_pairs_and_union_find():
    h = np.array([0, 1, 3, 0xFF00, 0xFF01, 0xF0F0F0F0], dtype=np.uint64)
    pairs = D.hamming_pairs(h, 1)
    assert {tuple(p) for p in pairs.tolist()} == {(0, 1), (1, 2), (3, 4)}
    comp = D.union_find(len(h), pairs)
    assert comp.tolist() == [0, 0, 0, 3, 3, 5]


def test_filters_reach_precision_and_recall(pipeline):
    _, _, log = pipeline
    assert [r.stage for r in log] == list(D.STAGES)
    for row in log:
        if row.stage in DETECTION_STAGES:
            assert row.precision >= 0.9 and row.recall >= 0.9, row
    dedup = log[D.STAGES.index("dedup")]
    assert dedup.extra["false_merge_rate"] <= 0.01
    assert dedup.extra["phash_only_precision"] < dedup.precision  # why the pixel check exists


def test_logs_add_up(pool, pipeline, full):
    keep, weights, log = pipeline
    assert log[0].n_in == len(pool)
    for a, b in zip(log, log[1:]):
        assert a.n_in - a.removed == b.n_in
    assert log[-1].n_out == keep.sum() == len(full.indices)
    assert log[D.STAGES.index("dedup")].removed == 0 and log[-1].removed == 0
    assert weights[~keep].sum() == 0 and weights.sum() == pytest.approx(1.0)
    rows = [r.to_dict() for r in log]
    assert json.loads(json.dumps(rows)) == rows  # JSON-able as it stands
    assert rows[-1]["precision"] is None and rows[-1]["ess"] < rows[-1]["ess_before"]


def test_filters_are_pure(pool, pipeline):
    before = pool.fingerprint()
    a = pipeline
    keep, rows = D.filter_unsafe_low_quality(pool)
    assert pool.fingerprint() == before
    b = D.filter_log(pool)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert [r.to_dict() for r in a[2]] == [r.to_dict() for r in b[2]]
    # the stages remove what they flag and nothing they were not given
    keep2, row = D.filter_ai_generated(pool, keep)
    assert (keep2 <= keep).all() and row.n_in == keep.sum()


def test_dedup_weights_clusters_to_one(pool):
    keep, _ = D.filter_unsafe_low_quality(pool)
    keep, _ = D.filter_ai_generated(pool, keep)
    weights, row = D.dedup_weights(pool, keep)
    bursts = np.unique(pool.cluster[keep & (pool.cluster >= 0)])
    assert len(bursts) > 0
    for b in bursts:
        assert weights[keep & (pool.cluster == b)].sum() == pytest.approx(1.0)
    single = keep & (pool.cluster < 0)
    assert (weights[single] == 1.0).mean() > 0.99
    assert row.extra["ess"] < keep.sum()


def test_build_is_deterministic_and_caches(tmp_path):
    cfg = D.DataConfig(n_raw=200, n_calib=60)
    a = D.build_pool(cfg, np.random.default_rng(7))
    b = D.build_pool(cfg, np.random.default_rng(7))
    c = D.build_pool(cfg, np.random.default_rng(8))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    D.save_pool(a, tmp_path)
    back = D.load_pool(tmp_path)
    assert back.fingerprint() == a.fingerprint() and back.config == cfg
    first = D.cached_pool(cfg, seed=3)  # built once, then read back from the cache
    again = D.cached_pool(cfg, seed=3)
    assert first.fingerprint() == again.fingerprint()
    assert [r.to_dict() for r in D.filter_log(first)[2]] == [
        r.to_dict() for r in D.filter_log(again)[2]
    ]


def test_skew_measured_then_removed(pool, pipeline, full):
    keep, weights, _ = pipeline
    uniform = np.where(keep, 1.0, 0.0)
    before = D.colour_shares(pool, uniform)
    after = D.colour_shares(pool, weights)
    colours = list(COLOURS)
    for i, shape in enumerate(SHAPES):
        assert before[i, colours.index(STEREOTYPE[shape])] == pytest.approx(0.8, abs=0.06)
    assert np.abs(after - 1 / len(COLOURS)).max() <= 0.02
    # the training set's own weights give the same shares
    w = np.zeros(len(pool))
    w[full.indices] = full.weights
    assert np.abs(D.colour_shares(pool, w) - 1 / len(COLOURS)).max() <= 0.02


def test_variants_differ_as_specified(pool, full):
    short = D.run_pipeline(pool, "short")
    raw = D.run_pipeline(pool, "raw")
    assert (short.indices == full.indices).all() and (short.weights == full.weights).all()
    assert len(raw) == len(pool) and np.allclose(raw.weights, 1 / len(pool))
    assert raw.log == () and len(full.log) == len(D.STAGES)
    for ts in (full, short, raw):
        assert ts.weights.sum() == pytest.approx(1.0)
    # full drops every labelled defect it detected; raw keeps them
    for key in D.LABELS:
        assert pool.labels[key][full.indices].mean() < 0.01
        assert pool.labels[key][raw.indices].sum() == pool.labels[key].sum()

    def mix(ts, n=3000):
        idx = np.random.default_rng(3).integers(len(ts), size=n)
        caps = ts.captions(idx, np.random.default_rng(4))
        rows = ts.indices[idx]
        orig = np.array([c == pool.original[r] for c, r in zip(caps, rows)])
        style = [
            next((k for k, s in enumerate(pool.synthetic[r]) if s == c), -1)
            for c, r in zip(caps, rows)
        ]
        return orig, np.array(style)

    orig, style = mix(full)
    assert orig.mean() == pytest.approx(D.ORIGINAL_SHARE, abs=0.03)
    assert (style[~orig] >= 0).all()
    shares = np.bincount(style[~orig], minlength=len(STYLES)) / (~orig).sum()
    assert np.abs(shares - 1 / len(STYLES)).max() < 0.04
    orig, _ = mix(short)
    assert orig.all()
    orig, _ = mix(raw)
    assert orig.mean() == pytest.approx(D.ORIGINAL_SHARE, abs=0.03)
    # same rng, same draws: the caption a row gets depends only on the rng
    a = full.captions([0, 1, 2], np.random.default_rng(9))
    assert a == full.captions([0, 1, 2], np.random.default_rng(9))
    with pytest.raises(ValueError, match="caption positions"):
        full.captions([len(full)], np.random.default_rng(0))


def test_unknown_variant_names_the_valid_ones(pool):
    with pytest.raises(ValueError, match="full, short, raw"):
        D.run_pipeline(pool, "filtered")


def test_caption_flags():
    flagged = [
        "red circle contact j.doe@example.com",
        "a square call 555-0134",
        "gory picture of triangles",
        "photo of a circle NSFW",
        "three circles phone (555) 010-0123",
    ]
    clean = ["three red circles on a white background", "a circle above a square", "my squares"]
    assert D.caption_flags(flagged).all()
    assert not D.caption_flags(clean).any()


def test_bad_config_is_one_clear_error():
    with pytest.raises(AlignlabError, match="n_raw"):
        D.build_pool(D.DataConfig(n_raw=0), np.random.default_rng(0))
    with pytest.raises(AlignlabError, match="dup_scene_frac must be <= 1"):
        cfg = D.DataConfig(unsafe_frac=0.5, low_quality_frac=0.5, ai_frac=0.1)
        D.build_pool(cfg, np.random.default_rng(0))
    with pytest.raises(AlignlabError, match="dup_max_diff"):
        D.build_pool(D.DataConfig(dup_noise=3, dup_max_diff=4), np.random.default_rng(0))
