"""Sampling: determinism, batching invariance, the diffusers round trip (bit for bit), folder
validation, errors; and the 2x upsampler."""

import json

import numpy as np
import pytest
import torch

from alignlab.core.resources import torch_threads
from alignlab.t2i.model import (
    ModelConfig,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
)
from alignlab.t2i.sample import T2IPipeline, diffusers_images
from alignlab.t2i.upsample import (
    UpsamplerConfig,
    UpsamplerTrainConfig,
    train_upsampler,
    upsample,
)

VOCAB = ["a", "red", "blue", "circle", "square", "on", "white", "background", "left", "of"]
PROMPTS = ["a red circle", "a blue square on white background", "", "a circle left of a square",
           "a purple triangle"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def pipe():
    # random weights stand in for a trained model: the sampler's arithmetic is the same
    cfg = ModelConfig()
    tok = build_tokenizer(VOCAB, cfg.max_len)
    with torch_threads(1):
        return T2IPipeline(
            build_vae(cfg, seed=1),
            build_text_encoder(cfg, len(tok), seed=2),
            tok,
            build_unet(cfg, seed=3),
            scaling_factor=0.8,
        )


def test_same_seed_same_images_and_batching_does_not_matter(pipe):
    a = pipe(PROMPTS, seed=7, steps=10)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe(PROMPTS, seed=7, steps=10))
    assert not np.array_equal(a, pipe(PROMPTS, seed=8, steps=10))
    # prompt i's noise is its own: batch size and neighbours do not change its image
    assert np.array_equal(a, pipe(PROMPTS, seed=7, steps=10, batch=2))
    assert np.array_equal(a[2:4], pipe(PROMPTS, seed=7, steps=10, batch=3)[2:4])
    # guidance changes the images (w = 0 is unconditional: the prompt no longer matters)
    assert not np.array_equal(a, pipe(PROMPTS, seed=7, steps=10, guidance=1.0))
    u = pipe(PROMPTS[:2], seed=7, steps=10, guidance=0.0)
    assert np.array_equal(u, pipe(["a square", "x"], seed=7, steps=10, guidance=0.0))


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_saved_folder_loads_in_plain_diffusers_bit_for_bit(pipe, tmp_path, guidance):
    import diffusers

    folder = pipe.save(tmp_path / "pipe")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    ours = pipe(PROMPTS, seed=11, guidance=guidance, steps=20)
    sd = diffusers.DiffusionPipeline.from_pretrained(folder)
    sd.set_progress_bar_config(disable=True)
    assert isinstance(sd, diffusers.StableDiffusionPipeline)
    theirs = diffusers_images(sd, PROMPTS, pipe.initial_latents(5, 11), guidance, 20)
    assert np.abs(ours.astype(int) - theirs).max() == 0
    # and our loader gives the same images again
    again = T2IPipeline.load(folder)
    assert again.scaling_factor == pytest.approx(0.8)
    assert np.array_equal(again(PROMPTS, seed=11, guidance=guidance, steps=20), ours)


def test_incomplete_folder_is_refused_naming_the_component(pipe, tmp_path):
    folder = pipe.save(tmp_path / "pipe")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"component 'unet' lacks \['diffusion_pytorch_model"):
        T2IPipeline.load(folder)
    (folder / "model_index.json").unlink()
    with pytest.raises(ValueError, match="pipeline index lacks"):
        T2IPipeline.load(folder)
    with pytest.raises(ValueError, match="does not exist"):
        T2IPipeline.load(tmp_path / "nowhere")


def test_bad_sampling_arguments(pipe):
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        pipe(PROMPTS, seed=0, guidance=-1.0)
    with pytest.raises(ValueError, match="prompt list is empty"):
        pipe([], seed=0)
    with pytest.raises(ValueError, match="one string"):
        pipe("a red circle", seed=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        pipe(PROMPTS, seed=0, steps=0)


def test_upsampler_trains_and_doubles_the_resolution():
    rng = np.random.default_rng(0)
    high = np.zeros((24, 16, 16, 3), np.uint8)
    for i in range(len(high)):  # a square of a random colour on white
        high[i] = 255
        x, y = rng.integers(0, 8, size=2)
        high[i, y : y + 8, x : x + 8] = rng.integers(0, 256, size=3)
    cfg = UpsamplerConfig(low_res=8, channels=(16, 32))
    tcfg = UpsamplerTrainConfig(steps=30, batch=8, lr=2e-3, log_every=10, checkpoint_every=0)
    model, metrics = train_upsampler(high, cfg, tcfg, np.random.default_rng(1))
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert curve[-1] < curve[0], curve
    low = high[:3, ::2, ::2]
    out = upsample(model, low, seed=5, steps=5)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out, upsample(model, low, seed=5, steps=5))
    # each image's noise is its own; only convolution round-off depends on the batch
    other = upsample(model, low, seed=5, steps=5, batch=2)
    assert np.abs(other.astype(int) - out).max() <= 2, np.abs(other.astype(int) - out).max()
    assert not np.array_equal(out, upsample(model, low, seed=6, steps=5))
    with pytest.raises(ValueError, match="low_images must be uint8"):
        upsample(model, high[:1, :, :5], seed=0)
    assert torch.get_num_threads() == 1
