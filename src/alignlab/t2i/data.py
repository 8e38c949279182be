"""Imagen 3's training-data pipeline (Imagen Team 2024, Sec. 2 and App. A) on the shapes world.

Everything here is a SIMULATION on the procedural shapes world of `world.py`: the raw pool is
rendered from sampled scene graphs, and its defects are injected on purpose and labelled, so
every filter can be scored against the truth (precision and recall).

Raw pool (`build_pool`), one row per image, with injected, labelled defects:

- the forbidden motif (label `unsafe`): a scene with a pink group (`sample_scene(motif=True)`),
  its captions naming it by one of `MOTIF_SYNONYMS`, a stand-in for unsafe content;
- low quality (`low_quality`): images blurred (Gaussian or box) with at most faint noise;
- "AI-generated" images (`ai_generated`): a faint periodic checkerboard of a few grey levels,
  the signature transposed-convolution upsamplers leave;
- near-duplicate bursts (`cluster`): one scene re-rendered 3-8 times, each copy with its own
  +-1 grey-level pixel noise (a re-encoded copy of one source image);
- captions with fake PII (`pii`: example.com addresses, 555-01xx phone numbers, both
  reserved for fiction) or a word of `BLOCKLIST` (`blocklist`: harmless stand-ins);
- a per-shape colour skew: each shape takes its `STEREOTYPE` colour with probability `skew`,
  else one of the other colours uniformly (the analogue of a stereotyped attribute).

The image defects (motif, low quality, AI, bursts) go to disjoint rows, so each detector is
scored on its own defect; caption defects are drawn independently of them. Each row has an
original caption (short, noisy "alt text") and one synthetic caption per style (Sec. 2: each
image is paired with its original caption and synthetic captions from several models and
prompts, chosen for linguistic diversity).

The five filters run in the paper's order (Sec. 2, App. A). Each is a pure function of the
pool (and the rows kept so far) returning a keep mask or weights and `LogRow`s:

1. `filter_unsafe_low_quality`: a simulated unsafe classifier (share of motif-coloured
   pixels) and low quality by the variance of the Laplacian;
2. `filter_ai_generated`: a tiny logistic regression on checkerboard features, fitted on a
   labelled calibration set drawn from a separate stream;
3. `dedup_weights`: pHash (equal to `imagehash.phash`); pairs at Hamming distance <= t,
   confirmed by a pixel check, joined by union-find; every row kept and each cluster
   down-weighted to total weight 1;
4. `filter_captions`: PII regexes and the blocklist over every caption of a row;
5. `fairness_weights`: reweighting so that every shape's colour distribution is uniform.

Measured on the quick pool (12k rows, seed 0): every detection stage has precision and recall
>= 0.99; pHash alone (without the pixel check) would flag near-duplicates with precision 0.11
and merge half of the distinct images, because it ignores colour and brightness. These
detectors are easy by design: the defects are simulated, and the figures show that each stage
does its job, not that detection is hard.

`run_pipeline(pool, variant)` gives the training set of a variant (`VARIANTS`): `full` (every
stage, captions 20 % original / 80 % synthetic), `short` (the same rows and weights, original
captions only) and `raw` (every row, uniform weights, 20 / 80 captions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fftpack
import scipy.ndimage

from alignlab.core.cache import cached_folder, content_key
from alignlab.core.config import ConfigError, param, to_dict, validate
from alignlab.core.seeding import generator
from alignlab.t2i.world import (
    BACKGROUNDS,
    COLOURS,
    MOTIF_RGB,
    SHAPES,
    STEREOTYPE,
    STYLES,
    Scene,
    WorldConfig,
    original_caption,
    render_batch,
    sample_scene,
    synthetic_caption,
)

VARIANTS = ("full", "short", "raw")
STAGES = ("unsafe", "low_quality", "ai_generated", "dedup", "captions", "fairness")
LABELS = ("unsafe", "low_quality", "ai_generated", "pii", "blocklist")
ORIGINAL_SHARE = 0.2  # share of original captions in training (the rest: synthetic, Sec. 2)

# Harmless stand-ins for unsafe caption words; none of them is in the world's VOCAB, so in the
# unfiltered `raw` variant the tokenizer maps them to <unk>.
BLOCKLIST = ("gore", "gory", "bloody", "nsfw", "explicit")
_FAKE_NAMES = ("j.doe", "a.smith", "m.jones", "k.lee", "r.brown", "s.patel", "t.nguyen")
_PII_TEMPLATES = ("contact {email}", "call {phone}", "by {email}", "phone {phone}")
PII_PATTERNS = (
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # e-mail address
    re.compile(r"(?<!\d)(?:\(\d{3}\)\s?|\d{3}[-. ])?\d{3}[-. ]\d{4}(?!\d)"),  # phone number
)
_BLOCK_RE = re.compile(r"\b(?:" + "|".join(BLOCKLIST) + r")\b", re.IGNORECASE)

# ITU-R 601-2 luma in PIL's fixed point (Image.convert("L")), so phash equals imagehash's.
_LUMA = (19595, 38470, 7471)


@dataclass(frozen=True)
class DataConfig:
    """The raw pool's size and defect rates, and the filters' thresholds (all simulated)."""

    n_raw: int = param(12_000, ge=10, help="rows of the raw pool")
    unsafe_frac: float = param(0.05, ge=0, le=1, help="share of rows showing the pink motif")
    low_quality_frac: float = param(0.10, ge=0, le=1, help="share of blurred low-quality rows")
    ai_frac: float = param(0.10, ge=0, le=1, help="share of 'AI-generated' (checkerboard) rows")
    dup_scene_frac: float = param(0.05, ge=0, le=1, help="share of rows in near-duplicate bursts")
    dup_burst: tuple[int, int] = param((3, 8), ge=2, help="min and max rows of one burst")
    dup_noise: int = param(1, ge=0, le=8, help="max pixel noise of a burst copy (grey levels)")
    pii_frac: float = param(0.03, ge=0, le=1, help="share of original captions with fake PII")
    blocklist_frac: float = param(
        0.03, ge=0, le=1, help="share of original captions with a BLOCKLIST word"
    )
    skew: float = param(0.8, ge=0, le=1, help="P(a shape takes its STEREOTYPE colour)")
    wrong_p: float = param(0.1, ge=0, le=1, help="P(an original caption names a wrong attribute)")
    blur_sigma: tuple[float, float] = param(
        (1.0, 2.0), gt=0, help="range of the low-quality Gaussian blur's sigma (px)"
    )
    ai_amplitude: tuple[float, float] = param(
        (2.0, 4.0), gt=0, help="range of the checkerboard's amplitude (grey levels)"
    )
    n_calib: int = param(600, ge=30, help="labelled calibration images (clean / blurred / AI)")
    motif_radius: float = param(30.0, gt=0, help="RGB distance within which a pixel is pink")
    motif_min_share: float = param(0.01, gt=0, lt=1, help="unsafe if this share of pixels is pink")
    lq_quantile: float = param(0.005, gt=0, lt=1, help="clean-calibration quantile of sharpness")
    lq_margin: float = param(0.7, gt=0, le=1, help="low quality below margin x that quantile")
    hamming: int = param(10, ge=0, le=64, help="pHash Hamming distance of a candidate pair")
    dup_max_diff: int = param(
        4, ge=0, le=255, help="pixel check: max |difference| of a confirmed near-duplicate pair"
    )

    def validate(self) -> None:
        image = self.unsafe_frac + self.low_quality_frac + self.ai_frac + self.dup_scene_frac
        if image > 1:
            raise ConfigError(
                "unsafe_frac",
                f"+ low_quality_frac + ai_frac + dup_scene_frac must be <= 1, got {image}",
            )
        if self.dup_max_diff < 2 * self.dup_noise:
            raise ConfigError(
                "dup_max_diff",
                f"must be >= 2 x dup_noise ({2 * self.dup_noise}) or no burst pair is confirmed,"
                f" got {self.dup_max_diff}",
            )
        for key in ("dup_burst", "blur_sigma", "ai_amplitude"):
            value = tuple(getattr(self, key))
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(key, f"must be (min, max) with min <= max, got {value}")


@dataclass(frozen=True)
class LogRow:
    """One line of the filter log: a stage's input rows, the rows it removed, and its
    precision and recall against the injected labels (None where it detects nothing of its
    own, e.g. the fairness stage). `extra` holds stage-specific figures (thresholds, effective
    sample size, what a weighting stage down-weights)."""

    stage: str
    n_in: int
    removed: int
    precision: float | None
    recall: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_out(self) -> int:
        return self.n_in - self.removed

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            if isinstance(x, dict):
                return {str(k): plain(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, (float, np.floating)):
                return float(x) if math.isfinite(x) else None
            return x

        return plain(
            {
                "stage": self.stage,
                "n_in": self.n_in,
                "removed": self.removed,
                "kept": self.n_out,
                "precision": self.precision,
                "recall": self.recall,
                **self.extra,
            }
        )


@dataclass(frozen=True)
class Calibration:
    """A small labelled set from a stream separate from the pool's (clean, blurred and
    "AI-generated" thirds); the low-quality threshold and the AI classifier are fitted on it."""

    images: np.ndarray  # uint8 (n, H, W, 3)
    low_quality: np.ndarray  # bool (n,)
    ai_generated: np.ndarray  # bool (n,)


@dataclass(frozen=True, eq=False)
class Pool:
    """The raw pool (a SIMULATION): images, scene graphs, captions and the injected labels.

    labels: bool arrays keyed by `LABELS`; cluster: near-duplicate burst id per row (-1 if
    none); synthetic[i]: one caption per style of `STYLES`."""

    images: np.ndarray
    scenes: list[Scene]
    original: list[str]
    synthetic: list[tuple[str, ...]]
    labels: dict[str, np.ndarray]
    cluster: np.ndarray
    calibration: Calibration
    config: DataConfig
    wc: WorldConfig

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> bytes:
        """The pool's bytes (images, captions, labels, clusters), for determinism checks."""
        parts = [self.images.tobytes(), self.cluster.tobytes(), self.calibration.images.tobytes()]
        parts += [self.labels[k].tobytes() for k in LABELS]
        text = "\n".join(o + "\t" + "\t".join(s) for o, s in zip(self.original, self.synthetic))
        return b"".join(parts) + text.encode("utf-8") + repr(self.scenes).encode("utf-8")


# --- simulated defects ---------------------------------------------------------------------


def colour_probs(skew: float) -> dict[str, np.ndarray]:
    """The skewed colour distribution per shape (COLOURS order): the shape's STEREOTYPE colour
    with probability `skew`, else uniform over the other colours."""
    names = list(COLOURS)
    out = {}
    for shape in SHAPES:
        p = np.full(len(names), (1 - skew) / (len(names) - 1))
        p[names.index(STEREOTYPE[shape])] = skew
        out[shape] = p
    return out


def blur(images: np.ndarray, rng: np.random.Generator, sigma: Sequence[float]) -> np.ndarray:
    """Simulated low quality: a Gaussian blur (sigma uniform in `sigma`) or, for a third of the
    images, a box blur of the same width, then faint noise (std <= 0.5 grey level). Noise alone
    would raise the variance of the Laplacian, so the defect is a blur."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        s = rng.uniform(*sigma)
        x = im.astype(np.float64)
        if rng.random() < 1 / 3:
            size = 2 * int(round(s)) + 1
            x = scipy.ndimage.uniform_filter(x, size=size, axes=(0, 1))
        else:
            x = scipy.ndimage.gaussian_filter(x, sigma=s, axes=(0, 1))
        x += rng.normal(0.0, rng.uniform(0.0, 0.5), x.shape)
        out[i] = np.clip(np.rint(x), 0, 255)
    return out


def add_checkerboard(
    images: np.ndarray, rng: np.random.Generator, amplitude: Sequence[float]
) -> np.ndarray:
    """Simulated "AI-generated" signature: a faint period-2 checkerboard (amplitude uniform in
    `amplitude` grey levels, random phase), the artifact of transposed-convolution upsampling."""
    n, h, w = images.shape[:3]
    board = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, 1.0, -1.0)
    amp = rng.uniform(*amplitude, size=n) * rng.choice((-1.0, 1.0), size=n)
    x = images.astype(np.float64) + amp[:, None, None, None] * board[None, :, :, None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _fake_pii(rng: np.random.Generator) -> str:
    template = _PII_TEMPLATES[int(rng.integers(len(_PII_TEMPLATES)))]
    email = f"{_FAKE_NAMES[int(rng.integers(len(_FAKE_NAMES)))]}@example.com"
    phone = f"555-01{int(rng.integers(100)):02d}"
    return template.format(email=email, phone=phone)


def _with_word(caption: str, word: str, front: bool) -> str:
    return f"{word} {caption}" if front else f"{caption} {word}"


# --- the raw pool ----------------------------------------------------------------------------


def _burst_sizes(n_rows: int, lo: int, hi: int, rng: np.random.Generator) -> list[int]:
    sizes: list[int] = []
    while n_rows - sum(sizes) >= lo:
        sizes.append(int(min(rng.integers(lo, hi + 1), n_rows - sum(sizes))))
    return sizes


def _calibration(cfg: DataConfig, rng: np.random.Generator, wc: WorldConfig) -> Calibration:
    probs = colour_probs(cfg.skew)
    scenes = [sample_scene(rng, wc, colour_probs=probs) for _ in range(cfg.n_calib)]
    images = render_batch(scenes, wc)
    third = cfg.n_calib // 3
    lq = np.zeros(cfg.n_calib, bool)
    ai = np.zeros(cfg.n_calib, bool)
    lq[third : 2 * third] = True
    ai[2 * third :] = True
    images[lq] = blur(images[lq], rng, cfg.blur_sigma)
    images[ai] = add_checkerboard(images[ai], rng, cfg.ai_amplitude)
    return Calibration(images, lq, ai)


def build_pool(cfg: DataConfig, rng: np.random.Generator, wc: WorldConfig | None = None) -> Pool:
    """The raw pool of `cfg.n_raw` rows with injected, labelled defects (a SIMULATION of the
    web-scale data Imagen 3 filters, Sec. 2). Deterministic given `rng`'s state: the roles,
    scenes, defects, captions and calibration set each come from their own child
    stream, so e.g. a different `n_calib` leaves the pool itself unchanged."""
    validate(cfg)
    wc = wc or WorldConfig()
    root = np.random.SeedSequence(rng.integers(0, 2**63, size=2).tolist())
    r_roles, r_scene, r_defect, r_caption, r_calib = map(np.random.default_rng, root.spawn(5))
    n = cfg.n_raw

    # roles: 0 clean, 1 unsafe, 2 low quality, 3 AI, 4 burst (disjoint image defects)
    sizes = _burst_sizes(int(round(cfg.dup_scene_frac * n)), *cfg.dup_burst, r_roles)
    n_burst = sum(sizes)
    counts = [int(round(f * n)) for f in (cfg.unsafe_frac, cfg.low_quality_frac, cfg.ai_frac)]
    counts = [min(c, max(n - n_burst - sum(counts[:i]), 0)) for i, c in enumerate(counts)]
    role = np.zeros(n, np.int8)
    burst_of = np.full(n, -1, np.int64)
    start = 0
    for r, c in zip((1, 2, 3), counts):
        role[start : start + c] = r
        start += c
    for b, k in enumerate(sizes):
        role[start : start + k] = 4
        burst_of[start : start + k] = b
        start += k
    perm = r_roles.permutation(n)
    role, burst_of = role[perm], burst_of[perm]

    probs = colour_probs(cfg.skew)
    base = [sample_scene(r_scene, wc, colour_probs=probs) for _ in sizes]
    scenes = []
    for i in range(n):
        if role[i] == 4:
            scenes.append(base[burst_of[i]])
        else:
            scenes.append(sample_scene(r_scene, wc, colour_probs=probs, motif=bool(role[i] == 1)))
    images = render_batch(scenes, wc)

    lq, ai, dup = role == 2, role == 3, role == 4
    images[lq] = blur(images[lq], r_defect, cfg.blur_sigma)
    images[ai] = add_checkerboard(images[ai], r_defect, cfg.ai_amplitude)
    if cfg.dup_noise > 0:
        noise = r_defect.integers(-cfg.dup_noise, cfg.dup_noise + 1, size=images[dup].shape)
        images[dup] = np.clip(images[dup].astype(np.int16) + noise, 0, 255).astype(np.uint8)

    original = [original_caption(s, r_caption, wrong_p=cfg.wrong_p) for s in scenes]
    synthetic = [tuple(synthetic_caption(s, style, r_caption) for style in STYLES) for s in scenes]
    pii = np.zeros(n, bool)
    pii[r_defect.choice(n, int(round(cfg.pii_frac * n)), replace=False)] = True
    block = np.zeros(n, bool)
    block[r_defect.choice(n, int(round(cfg.blocklist_frac * n)), replace=False)] = True
    for i in np.flatnonzero(pii | block):
        if pii[i]:
            original[i] = _with_word(original[i], _fake_pii(r_caption), front=False)
        if block[i]:
            word = BLOCKLIST[int(r_caption.integers(len(BLOCKLIST)))]
            original[i] = _with_word(original[i], word, front=bool(r_caption.random() < 0.5))

    labels = {"unsafe": role == 1, "low_quality": lq, "ai_generated": ai, "pii": pii}
    labels["blocklist"] = block
    return Pool(
        images=images,
        scenes=scenes,
        original=original,
        synthetic=synthetic,
        labels=labels,
        cluster=burst_of,
        calibration=_calibration(cfg, r_calib, wc),
        config=cfg,
        wc=wc,
    )


# --- saving and caching -------------------------------------------------------------------


def save_pool(pool: Pool, folder: str | Path) -> None:
    """Write the pool into `folder` (the caller makes it atomic, e.g. `cached_folder`):
    images.npy, calibration.npz and pool.json (scenes, captions, labels, clusters, configs)."""
    folder = Path(folder)
    np.save(folder / "images.npy", pool.images)
    cal = pool.calibration
    np.savez(
        folder / "calibration.npz",
        images=cal.images,
        low_quality=cal.low_quality,
        ai_generated=cal.ai_generated,
    )
    meta = {
        "config": to_dict(pool.config),
        "wc": dataclasses.asdict(pool.wc),
        "scenes": [s.to_dict() for s in pool.scenes],
        "original": pool.original,
        "synthetic": [list(s) for s in pool.synthetic],
        "labels": {k: np.flatnonzero(v).tolist() for k, v in pool.labels.items()},
        "cluster": pool.cluster.tolist(),
    }
    (folder / "pool.json").write_text(json.dumps(meta), encoding="utf-8")


def load_pool(folder: str | Path) -> Pool:
    """Read a pool written by `save_pool`."""
    folder = Path(folder)
    meta = json.loads((folder / "pool.json").read_text(encoding="utf-8"))
    images = np.load(folder / "images.npy")
    cal = np.load(folder / "calibration.npz")
    n = len(images)
    labels = {}
    for k, rows in meta["labels"].items():
        labels[k] = np.zeros(n, bool)
        labels[k][np.asarray(rows, np.int64)] = True
    cfg = meta["config"]
    cfg = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    return Pool(
        images=images,
        scenes=[Scene.from_dict(s) for s in meta["scenes"]],
        original=list(meta["original"]),
        synthetic=[tuple(s) for s in meta["synthetic"]],
        labels=labels,
        cluster=np.asarray(meta["cluster"], np.int64),
        calibration=Calibration(cal["images"], cal["low_quality"], cal["ai_generated"]),
        config=cfg,
        wc=WorldConfig(**meta["wc"]),
    )


def _source_hash() -> str:
    """sha256 of the world's and this module's source: a cached pool is rebuilt when either
    changes."""
    from alignlab.t2i import world

    h = hashlib.sha256()
    for path in (world.__file__, __file__):
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def cached_pool(cfg: DataConfig, seed: int, wc: WorldConfig | None = None) -> Pool:
    """`build_pool(cfg, generator(seed, "t2i-pool"), wc)`, cached in
    `core.cache.cache_dir()/t2i-pool/<key>/`, the key hashing the config, the world config,
    the seed and the source of world.py and data.py."""
    validate(cfg)
    wc = wc or WorldConfig()
    spec = {"config": to_dict(cfg), "wc": dataclasses.asdict(wc), "seed": int(seed)}
    spec["source"] = _source_hash()

    def build(tmp: Path) -> None:
        save_pool(build_pool(cfg, generator(seed, "t2i-pool"), wc), tmp)

    folder, _ = cached_folder("t2i-pool", content_key(spec), build)
    return load_pool(folder)


# --- features ------------------------------------------------------------------------------


def _chunked(f, images: np.ndarray, *args, chunk: int = 512) -> np.ndarray:
    """f applied to cache-sized chunks of images (same result, several times faster)."""
    if len(images) <= chunk:
        return f(images, *args)
    return np.concatenate([f(images[a : a + chunk], *args) for a in range(0, len(images), chunk)])


def _motif_share(images: np.ndarray, radius: float) -> np.ndarray:
    x = images.reshape(-1, 3).astype(np.int32)
    d_motif = ((x - np.asarray(MOTIF_RGB, np.int32)) ** 2).sum(1)
    near = np.flatnonzero(d_motif <= radius**2)  # few pixels: compare them with the palette
    others = np.array([*COLOURS.values(), *BACKGROUNDS.values()], np.int32)
    d_other = ((x[near, None, :] - others[None]) ** 2).sum(-1).min(1)
    pink = np.zeros(len(x), bool)
    pink[near[d_motif[near] < d_other]] = True
    return pink.reshape(images.shape[:-1]).mean(axis=(1, 2))


def _sharpness(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    lap = scipy.ndimage.laplace(x, axes=(1, 2))
    lv = lap.var(axis=(1, 2)).sum(-1, dtype=np.float64)
    gx = np.square(np.diff(x, axis=2)).mean(axis=(1, 2)).sum(-1, dtype=np.float64)
    gy = np.square(np.diff(x, axis=1)).mean(axis=(1, 2)).sum(-1, dtype=np.float64)
    return lv / (gx + gy + 1.0)


def _checker_features(images: np.ndarray) -> np.ndarray:
    f = images.astype(np.float32).mean(-1)
    r = (f[:, :-1, :-1] - f[:, 1:, :-1] - f[:, :-1, 1:] + f[:, 1:, 1:]) / 4
    a = np.abs(r).reshape(len(f), -1)
    lap = scipy.ndimage.laplace(f, axes=(1, 2))
    ratio = (r**2).mean(axis=(1, 2)) / ((lap**2).mean(axis=(1, 2)) + 1e-9)
    return np.log1p(np.stack([np.median(a, axis=1), a.mean(axis=1), 100 * ratio], axis=1))


def motif_share(images: np.ndarray, radius: float) -> np.ndarray:
    """Share of pixels within RGB distance `radius` of MOTIF_RGB and nearer to it than to any
    other palette colour (object colours and backgrounds): the simulated unsafe classifier's
    score. Anti-aliased edges (a red disc's rim on white) stay outside a radius of 30."""
    return _chunked(_motif_share, images, radius)


def sharpness(images: np.ndarray) -> np.ndarray:
    """The variance of the Laplacian (`scipy.ndimage.laplace`) per image, summed over the RGB
    channels, divided by the mean squared gradient (finite differences, summed likewise): low
    means blurred. Both grow with edge length and contrast, so the ratio depends on how sharp
    the edges are, not on how many objects there are or how much they stand out (a yellow disc
    on white); one threshold then serves every scene."""
    return _chunked(_sharpness, images)


def checker_features(images: np.ndarray) -> np.ndarray:
    """Features of the checkerboard signature: the response r to the 2x2 kernel
    [[1, -1], [-1, 1]] / 4 (the Nyquist frequency) on the channel mean, as log(1 + median |r|),
    log(1 + mean |r|) and log(1 + 100 x mean r^2 / mean Laplacian^2, a spectral ratio)."""
    return _chunked(_checker_features, images)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50):
    """A tiny L2-regularised logistic regression (Newton's method on standardised features).
    Returns (mean, scale, coef, bias); predict with `logistic_proba`."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    reg = l2 * len(x) * np.r_[np.ones(z.shape[1] - 1), 0.0]
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(z @ w)))
        g = z.T @ (p - y) + reg * w
        h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return mu, sd, w[:-1], w[-1]


def logistic_proba(model, x: np.ndarray) -> np.ndarray:
    mu, sd, coef, bias = model
    return 1 / (1 + np.exp(-(((x - mu) / sd) @ coef + bias)))


# --- pHash ---------------------------------------------------------------------------------


def _grey32(images: np.ndarray) -> np.ndarray:
    """PIL's `convert("L")` then `resize((32, 32), LANCZOS)`, as imagehash.phash does; at
    32x32 the resize is the identity (PIL copies the image), so it is pure numpy there."""
    x = images.astype(np.int64)
    grey = (x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2] + 0x8000) >> 16
    grey = grey.astype(np.uint8)
    if grey.shape[1:] == (32, 32):
        return grey.astype(np.float64)
    from PIL import Image  # other resolutions: PIL's Lanczos, as imagehash

    return np.stack(
        [np.asarray(Image.fromarray(g).resize((32, 32), Image.LANCZOS)) for g in grey]
    ).astype(np.float64)


def phash_batch(images: np.ndarray) -> np.ndarray:
    """pHash of each image (uint8 (N, H, W, 3)) as uint64, equal to imagehash.phash on the PIL
    image (hash_size 8): the 2-D DCT-II of the 32x32 greyscale image, its 8x8 lowest
    frequencies, bits set where a coefficient exceeds their median, first bit most
    significant (so `int(str(imagehash.phash(im)), 16)` is the same number)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    g = _grey32(images)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(g, axis=1), axis=2)[:, :8, :8]
    low = dct.reshape(len(g), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def phash(image: np.ndarray) -> int:
    """pHash of one uint8 (H, W, 3) image as a 64-bit integer (see `phash_batch`)."""
    return int(phash_batch(np.asarray(image)[None])[0])


def hamming_pairs(hashes: np.ndarray, t: int, chunk: int = 1024) -> np.ndarray:
    """All pairs (i < j) of uint64 hashes at Hamming distance <= t, as an (M, 2) array."""
    h = np.asarray(hashes, np.uint64)
    out = []
    for a in range(0, len(h), chunk):
        d = np.bitwise_count(h[a : a + chunk, None] ^ h[None, :])
        i, j = np.nonzero(d <= t)
        m = j > i + a
        out.append(np.stack([i[m] + a, j[m]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def union_find(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of n items joined by `pairs` (union-find with path halving);
    returns each item's component label (the index of its smallest member)."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


# --- the five filters (Imagen 3 Sec. 2, in its order) ----------------------------------------


def _scores(flag: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    tp = int((flag & truth).sum())
    precision = tp / int(flag.sum()) if flag.any() else None
    recall = tp / int(truth.sum()) if truth.any() else None
    return precision, recall


def _stage(name: str, keep: np.ndarray, flag: np.ndarray, truth: np.ndarray, **extra) -> LogRow:
    flag = flag & keep
    precision, recall = _scores(flag, truth & keep)
    return LogRow(name, int(keep.sum()), int(flag.sum()), precision, recall, extra)


def lq_threshold(pool: Pool) -> float:
    """The low-quality threshold on `sharpness`, from the clean distribution: `lq_margin` x its
    `lq_quantile` quantile on the calibration set's clean images."""
    cal = pool.calibration
    clean = ~(cal.low_quality | cal.ai_generated)
    s = sharpness(cal.images[clean])
    return float(pool.config.lq_margin * np.quantile(s, pool.config.lq_quantile))


def filter_unsafe_low_quality(pool: Pool) -> tuple[np.ndarray, list[LogRow]]:
    """Stage 1 (Sec. 2, App. A: unsafe, violent and low-quality images are removed). The simulated
    unsafe classifier flags an image when at least `motif_min_share` of its pixels are pink
    (`motif_share`); then, on the rows left, low quality is a variance of the Laplacian
    (`sharpness`) below `lq_threshold`. Returns the keep mask and two log rows."""
    cfg = pool.config
    keep = np.ones(len(pool), bool)
    unsafe = motif_share(pool.images, cfg.motif_radius) >= cfg.motif_min_share
    rows = [_stage("unsafe", keep, unsafe, pool.labels["unsafe"], threshold=cfg.motif_min_share)]
    keep = keep & ~unsafe
    thr = lq_threshold(pool)
    low = sharpness(pool.images) < thr
    rows.append(_stage("low_quality", keep, low, pool.labels["low_quality"], threshold=thr))
    return keep & ~low, rows


def filter_ai_generated(pool: Pool, keep: np.ndarray) -> tuple[np.ndarray, LogRow]:
    """Stage 2 (Sec. 2: AI-generated images are removed, so their artifacts and biases are
    not learned): a logistic regression on
    `checker_features`, fitted on the labelled calibration set (a separate stream), flags an
    image when P(AI) > 0.5."""
    cal = pool.calibration
    model = fit_logistic(checker_features(cal.images), cal.ai_generated.astype(np.float64))
    flag = logistic_proba(model, checker_features(pool.images)) > 0.5
    row = _stage("ai_generated", keep, flag, pool.labels["ai_generated"])
    return keep & ~flag, row


def max_pixel_diff(images: np.ndarray, pairs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """max |a - b| over pixels and channels for each pair (i, j) of `images`."""
    out = np.empty(len(pairs), np.int16)
    for a in range(0, len(pairs), chunk):
        p = pairs[a : a + chunk]
        d = np.abs(images[p[:, 0]].astype(np.int16) - images[p[:, 1]].astype(np.int16))
        out[a : a + chunk] = d.reshape(len(p), -1).max(1)
    return out


def _dedup_scores(comp: np.ndarray, ident: np.ndarray, truth: np.ndarray):
    """Row-level precision / recall of `comp` (a row is flagged when its cluster has several
    rows) and the false-merge rate: the share of distinct source images (a burst, or a row
    outside bursts) merged into a cluster with another."""
    flag = np.bincount(comp)[comp] > 1
    precision, recall = _scores(flag, truth)
    n_ident = len(np.unique(ident))
    merges = len(np.unique(np.stack([comp, ident], axis=1), axis=0)) - len(np.unique(comp))
    return flag, precision, recall, merges / max(n_ident, 1)


def dedup_weights(pool: Pool, keep: np.ndarray) -> tuple[np.ndarray, LogRow]:
    """Stage 3 (Sec. 2: deduplication, and similar images down-weighted, against overfitting
    and regurgitation): the pHash of every
    kept row (`phash_batch`, equal to imagehash.phash), candidate pairs at Hamming distance
    <= `hamming`, confirmed when no pixel differs by more than `dup_max_diff` grey levels,
    joined by union-find; each cluster's rows weighted 1/size, so a cluster counts as one
    image. No row is removed.

    Why the pixel check: pHash thresholds its DCT coefficients at their median, so it ignores
    brightness, contrast and colour; on flat 32x32 renders a red disc on white and one on grey
    at the same place share a hash, and noise alone flips up to ~14 of its 64 bits. pHash
    alone merges many distinct scenes (its figures are logged as `phash_only_*`).

    Precision and recall are row-level (a row is flagged when its cluster has several rows;
    the truth is membership of an injected burst)."""
    cfg = pool.config
    rows = np.flatnonzero(keep)
    images = pool.images[rows]
    cand = hamming_pairs(phash_batch(images), cfg.hamming)
    confirmed = cand[max_pixel_diff(images, cand) <= cfg.dup_max_diff]
    comp = union_find(len(rows), confirmed)
    burst = pool.cluster[rows]
    truth = burst >= 0
    ident = np.where(truth, burst, len(pool) + rows)  # a burst's source, or the row itself
    flag, precision, recall, false_merge = _dedup_scores(comp, ident, truth)
    _, p_hash, r_hash, fm_hash = _dedup_scores(union_find(len(rows), cand), ident, truth)
    size = np.bincount(comp)[comp]
    weights = np.zeros(len(pool))
    weights[rows] = 1.0 / size
    extra = {
        "threshold": cfg.hamming,
        "max_pixel_diff": cfg.dup_max_diff,
        "candidate_pairs": len(cand),
        "confirmed_pairs": len(confirmed),
        "clusters": int((np.bincount(comp) > 1).sum()),
        "down_weighted": int(flag.sum()),
        "false_merge_rate": false_merge,
        "phash_only_precision": p_hash,
        "phash_only_recall": r_hash,
        "phash_only_false_merge_rate": fm_hash,
        "ess": float(weights.sum() ** 2 / (weights**2).sum()) if len(rows) else 0.0,
        "note": "weights only: near-duplicate clusters down-weighted to 1/size",
    }
    return weights, LogRow("dedup", len(rows), 0, precision, recall, extra)


def caption_flags(texts: Sequence[str]) -> np.ndarray:
    """True for a caption holding PII (`PII_PATTERNS`: e-mail, phone) or a `BLOCKLIST` word."""
    return np.array(
        [any(p.search(t) for p in PII_PATTERNS) or bool(_BLOCK_RE.search(t)) for t in texts],
        dtype=bool,
    )


def filter_captions(pool: Pool, keep: np.ndarray) -> tuple[np.ndarray, LogRow]:
    """Stage 4 (Sec. 2: unsafe captions and captions with PII are filtered out): a row goes
    when any of its captions (original or synthetic) matches a PII regex or the blocklist."""
    flag = caption_flags(pool.original)
    for k in range(len(STYLES)):
        flag |= caption_flags([s[k] for s in pool.synthetic])
    truth = pool.labels["pii"] | pool.labels["blocklist"]
    row = _stage("captions", keep, flag, truth)
    return keep & ~flag, row


def _groups(pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, shape index, colour index) of every ordinary-coloured group (motif groups left
    out)."""
    names = list(COLOURS)
    rows, shapes, colours = [], [], []
    for i, scene in enumerate(pool.scenes):
        for g in scene.groups:
            if g.colour in COLOURS:
                rows.append(i)
                shapes.append(SHAPES.index(g.shape))
                colours.append(names.index(g.colour))
    return np.array(rows, np.int64), np.array(shapes, np.int64), np.array(colours, np.int64)


def colour_shares(pool: Pool, weights: np.ndarray) -> np.ndarray:
    """(len(SHAPES), len(COLOURS)) weighted colour distribution of each shape's groups, every
    group carrying its row's weight."""
    rows, shapes, colours = _groups(pool)
    k = len(COLOURS)
    tot = np.bincount(shapes * k + colours, weights=weights[rows], minlength=len(SHAPES) * k)
    tot = tot.reshape(len(SHAPES), k)
    return tot / np.maximum(tot.sum(1, keepdims=True), 1e-300)


def fairness_weights(
    pool: Pool, keep: np.ndarray, weights: np.ndarray, iters: int = 200, tol: float = 1e-6
) -> tuple[np.ndarray, LogRow]:
    """Stage 5, a stand-in for the data fairness analysis among Imagen 3's mitigations (Sec. 4;
    the report gives no recipe, so here it is a reweighting): row weights
    multiplied by 1 / p(colour | shape) so that each shape's weighted colour distribution is
    uniform. A row with two groups gets the geometric mean of its groups' factors, repeated
    per shape until every share is uniform (iterative proportional fitting; for one-group rows
    the first pass is exactly 1 / p(colour | shape)). Returns weights summing to 1 over the
    kept rows."""
    w = np.where(keep, weights, 0.0).astype(np.float64)
    rows, shapes, colours = _groups(pool)
    live = w[rows] > 0
    rows, shapes, colours = rows[live], shapes[live], colours[live]
    before = colour_shares(pool, w)
    k = len(COLOURS)
    for _ in range(iters):
        for s in range(len(SHAPES)):
            m = shapes == s
            if not m.any():
                continue
            tot = np.bincount(colours[m], weights=w[rows[m]], minlength=k)
            present = tot > 0
            share = tot / tot.sum()
            f = np.where(present, 1 / (present.sum() * np.where(present, share, 1.0)), 1.0)
            logf = np.bincount(rows[m], weights=np.log(f[colours[m]]), minlength=len(w))
            cnt = np.bincount(rows[m], minlength=len(w))
            w *= np.exp(np.divide(logf, cnt, out=np.zeros(len(w)), where=cnt > 0))
        shares = colour_shares(pool, w)
        if np.abs(shares - 1 / k)[before.sum(1) > 0].max() < tol:
            break
    w /= w.sum()
    after = colour_shares(pool, w)
    ster = [list(COLOURS).index(STEREOTYPE[s]) for s in SHAPES]
    w_in = np.where(keep, weights, 0.0)
    w_in = w_in / w_in.sum()
    has_ster = np.zeros(len(w), bool)
    has_ster[rows[colours == np.array(ster)[shapes]]] = True
    kept = keep & (w_in > 0)
    ratio = (w[has_ster & kept] / w_in[has_ster & kept]).mean() / (
        w[~has_ster & kept] / w_in[~has_ster & kept]
    ).mean()
    extra = {
        "stereotype_share_before": {s: float(before[i, ster[i]]) for i, s in enumerate(SHAPES)},
        "stereotype_share_after": {s: float(after[i, ster[i]]) for i, s in enumerate(SHAPES)},
        "max_deviation_after": float(np.abs(after - 1 / k).max()),
        "stereotype_weight_ratio": float(ratio),
        "ess_before": float(1 / (w_in**2).sum()),
        "ess": float(1 / (w**2).sum()),
        "note": "weights only: rows with a shape's STEREOTYPE colour down-weighted",
    }
    return w, LogRow("fairness", int(keep.sum()), 0, None, None, extra)


# --- training sets -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainSet:
    """A variant's training rows: pool row `indices`, sampling `weights` (sum 1), the filter
    `log`, and `captions(idx, rng)` for positions idx into `indices` (Sec. 2: original and
    synthetic captions mixed in training)."""

    variant: str
    indices: np.ndarray
    weights: np.ndarray
    log: tuple[LogRow, ...]
    pool: Pool = field(repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def images(self) -> np.ndarray:
        return self.pool.images[self.indices]

    @property
    def scenes(self) -> list[Scene]:
        return [self.pool.scenes[i] for i in self.indices]

    def captions(self, idx, rng: np.random.Generator) -> list[str]:
        """One caption per position in `idx`: for `full` and `raw` the original with
        probability ORIGINAL_SHARE (0.2), else a synthetic caption of a uniformly drawn style;
        for `short` always the original. Draws the same random numbers for every variant."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.indices)):
            raise ValueError(f"caption positions must lie in [0, {len(self.indices)}), got {idx}")
        use_original = rng.random(idx.size) < ORIGINAL_SHARE
        style = rng.integers(len(STYLES), size=idx.size)
        rows = self.indices[idx]
        if self.variant == "short":
            return [self.pool.original[r] for r in rows]
        return [
            self.pool.original[r] if o else self.pool.synthetic[r][s]
            for r, o, s in zip(rows.tolist(), use_original.tolist(), style.tolist())
        ]


def filter_log(pool: Pool) -> tuple[np.ndarray, np.ndarray, tuple[LogRow, ...]]:
    """All five stages in the paper's order: (keep mask, weights over the pool summing to 1,
    the six log rows)."""
    keep, rows = filter_unsafe_low_quality(pool)
    keep, row_ai = filter_ai_generated(pool, keep)
    weights, row_dedup = dedup_weights(pool, keep)
    keep, row_cap = filter_captions(pool, keep)
    weights, row_fair = fairness_weights(pool, keep, weights)
    return keep, weights, (*rows, row_ai, row_dedup, row_cap, row_fair)


def run_pipeline(pool: Pool, variant: str) -> TrainSet:
    """The training set of `variant` (one of VARIANTS): `full` and `short` after all five
    stages (weights: dedup x fairness), `raw` every row with uniform weights and an empty log."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if variant == "raw":
        n = len(pool)
        return TrainSet(variant, np.arange(n), np.full(n, 1.0 / n), (), pool)
    keep, weights, log = filter_log(pool)
    indices = np.flatnonzero(keep)
    w = weights[indices]
    return TrainSet(variant, indices, w / w.sum(), log, pool)
