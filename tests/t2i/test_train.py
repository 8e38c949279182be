"""Training: losses fall, latents are scaled to unit variance, sampling weights are obeyed,
and a killed training resumes to byte-identical weights and metric lines."""

import json

import numpy as np
import pytest
import torch

from alignlab.core.checkpoint import SimulatedCrash, crash_after_checkpoint
from alignlab.core.context import RunContext
from alignlab.core.resources import torch_threads
from alignlab.t2i.model import PRESETS, build_tokenizer
from alignlab.t2i.train import (
    UNetTrainConfig,
    VAETrainConfig,
    decode_latents,
    encode_images,
    train_unet,
    train_vae,
)

CFG = PRESETS["smoke"]  # 16x16 images, 4x4x4 latents
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
VOCAB = ["a", "red", "green", "blue", "square", "on", "white", "black", "background"]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def squares(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """A stand-in for the world's renders: one coloured square on white or black."""
    rng = np.random.default_rng(seed)
    images, captions = np.zeros((n, 16, 16, 3), np.uint8), []
    for i in range(n):
        colour, bg = rng.choice(list(COLOURS)), rng.choice(["white", "black"])
        images[i] = 255 if bg == "white" else 0
        x, y = rng.integers(0, 9, size=2)
        images[i, y : y + 7, x : x + 7] = COLOURS[colour]
        captions.append(f"a {colour} square on {bg} background")
    return images, captions


IMAGES, CAPTIONS = squares(96)


def caption_fn(rows, rng):
    # draws from the caller's rng, so a resume must restore its state
    return [CAPTIONS[r] if rng.random() < 0.8 else "a square" for r in rows]


def structured_latents() -> torch.Tensor:
    """Latents that depend on the caption's colour: learnable in a few dozen steps."""
    base = {c: torch.randn(4, 4, 4, generator=torch.Generator().manual_seed(i))
            for i, c in enumerate(COLOURS)}  # fmt: skip
    return torch.stack([base[c.split()[1]] for c in CAPTIONS])


def test_vae_loss_falls_and_latents_are_unit_scaled():
    tcfg = VAETrainConfig(steps=60, batch=16, lr=5e-3, log_every=10, checkpoint_every=0)
    vae, scale, metrics = train_vae(IMAGES, CFG, tcfg, np.random.default_rng(0))
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert len(curve) == 6 and curve[-1] < 0.8 * curve[0], curve  # ~1.87 -> ~1.4
    assert vae.config.scaling_factor == scale == 1 / metrics["latent_std"]
    z = encode_images(vae, IMAGES, batch=40)
    assert z.shape == (96, 4, 4, 4)
    assert abs(float(z.std()) - 1) < 1e-4
    rec = decode_latents(vae, z)
    assert rec.shape == IMAGES.shape and rec.dtype == np.uint8
    # reconstructions beat the mean image
    err = np.abs(rec.astype(float) - IMAGES).mean()
    assert err < np.abs(IMAGES.mean(0, keepdims=True) - IMAGES).mean(), err


def test_unet_loss_falls_and_weights_are_obeyed():
    tok = build_tokenizer(VOCAB, CFG.max_len)
    weights = np.ones(len(CAPTIONS))
    weights[::2] = 0  # even rows must never be drawn
    seen = []

    def captions(rows, rng):
        seen.extend(rows.tolist())
        return caption_fn(rows, rng)

    tcfg = UNetTrainConfig(steps=60, batch=24, log_every=20, checkpoint_every=0)
    unet, text, metrics = train_unet(
        structured_latents(), captions, weights, tok, CFG, tcfg, np.random.default_rng(1)
    )
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert curve[-1] < 0.7 * curve[0], curve
    assert len(seen) == 60 * 24 and all(r % 2 == 1 for r in seen)
    assert not unet.training and not any(p.requires_grad for p in text.parameters())


def _run(tmp_path, name, which, resume=False):
    ctx = RunContext.standalone(tmp_path / name, "t2i.test", None, quiet=True, resume=resume)
    rng = np.random.default_rng(3)
    if which == "vae":
        tcfg = VAETrainConfig(steps=6, batch=8, log_every=2, checkpoint_every=2)
        out = train_vae(IMAGES, CFG, tcfg, rng, ctx=ctx.stage("vae", tcfg.steps))
        return ctx, [out.vae]
    tok = build_tokenizer(VOCAB, CFG.max_len)
    tcfg = UNetTrainConfig(steps=6, batch=8, log_every=2, checkpoint_every=2)
    w = np.linspace(1, 2, len(CAPTIONS))
    lat = structured_latents()
    out = train_unet(lat, caption_fn, w, tok, CFG, tcfg, rng, ctx=ctx.stage("unet", tcfg.steps))
    return ctx, [out.unet, out.text_encoder]


def _lines(ctx):
    rows = [json.loads(x) for x in (ctx.dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]


@pytest.mark.parametrize("which", ["vae", "unet"])
def test_killed_training_resumes_byte_identical(tmp_path, which):
    ctx_a, full = _run(tmp_path, "a", which)
    with crash_after_checkpoint(2), pytest.raises(SimulatedCrash):
        _run(tmp_path, "b", which)  # killed right after the checkpoint at step 4
    ctx_b, resumed = _run(tmp_path, "b", which, resume=True)
    assert "resuming at step 4" in (ctx_b.dir / "log.txt").read_text()
    for a, b in zip(full, resumed):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert _lines(ctx_a) == _lines(ctx_b) and len(_lines(ctx_a)) == 3


def test_bad_inputs_fail_clearly():
    tok = build_tokenizer(VOCAB, CFG.max_len)
    lat, tcfg, rng = structured_latents(), UNetTrainConfig(steps=1), np.random.default_rng(0)
    with pytest.raises(ValueError, match="one entry per latent row"):
        train_unet(lat, caption_fn, np.ones(3), tok, CFG, tcfg, rng)
    with pytest.raises(ValueError, match="not all zero"):
        train_unet(lat, caption_fn, np.zeros(len(lat)), tok, CFG, tcfg, rng)
    with pytest.raises(ValueError, match="max_len"):
        train_unet(lat, caption_fn, np.ones(len(lat)), build_tokenizer(VOCAB, 10), CFG, tcfg, rng)
    with pytest.raises(ValueError, match=r"latents must be \(N, 4, 4, 4\)"):
        train_unet(lat[:, :, :2], caption_fn, np.ones(len(lat)), tok, CFG, tcfg, rng)
    with pytest.raises(ValueError, match=r"uint8 \(N, 16, 16, 3\)"):
        train_vae(IMAGES[:, :8], CFG, VAETrainConfig(steps=1), rng)
