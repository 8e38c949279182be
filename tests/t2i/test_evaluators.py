"""Simulated auto-eval metrics (Imagen 3 Sec. 3.2.1, App. C.1): data, determinism, scores,
save / load and caching, at the smoke size."""

import numpy as np
import pytest
import torch

from alignlab.core.seeding import generator
from alignlab.t2i import evaluators as E
from alignlab.t2i import prompts as P
from alignlab.t2i import world

WC = world.WorldConfig()


@pytest.fixture(scope="module")
def clip():
    return E.train_clip(E.CLIP_PRESETS["smoke"], WC)


@pytest.fixture(scope="module")
def vqa():
    return E.train_vqa(E.VQA_PRESETS["smoke"], WC)


def test_codec_maps_the_closed_vocabulary_and_counts_unknown_words():
    codec = E.WordCodec(world.VOCAB)
    ids = codec.encode(["Two red circles.", "a zebra"], max_len=8)
    assert ids.shape == (2, 3)
    assert ids[0].tolist() == [codec.index[w] for w in ("two", "red", "circles")]
    assert ids[1, 1] == E.UNK and ids[1, 2] == E.PAD and codec.unknown == 1
    assert codec.encode(["a " * 100], max_len=8).shape == (1, 8)


def test_minimal_pairs_flip_one_attribute_and_labels_are_true():
    rng = generator(0, "pairs")
    scenes = E.heldout_scenes(60, rng, WC)
    flipped_false = 0
    total = 0
    for s in scenes:
        assert E.facts_true(world.scene_facts(s), s)
        for f in world.scene_facts(s):
            g = E.flip_fact(f, rng)
            assert g[0] == f[0] and g != f
            assert sum(a != b for a, b in zip(f, g)) <= 3  # relation side swaps touch two slots
            world.fact_question(g)  # a valid fact
            total += 1
            flipped_false += not E.facts_true((g,), s)
    assert flipped_false / total > 0.8
    # whole-caption negatives caption a scene that differs from the original
    changed = sum(not world.same_graph(E.perturb_scene(s, rng, WC), s) for s in scenes)
    assert changed / len(scenes) > 0.9
    idx, qs, ys, fs = E.vqa_examples(scenes, 400, 0.4, rng, WC)
    assert len(qs) == 400 and ys.mean() == 0.5
    for i, q, y in zip(idx[:100], qs[:100], ys[:100]):
        if q.startswith("Does this figure show"):
            text = q[len("Does this figure show '") : -len("'? Please answer yes or no.")]
            assert E.facts_true(world.parse_caption(text), scenes[i]) == bool(y)
    assert sum(q.startswith("Does") for q in qs) > 100


def test_heldout_scenes_come_from_the_callers_stream():
    a = E.heldout_scenes(5, generator(1, "heldout"), WC)
    b = E.heldout_scenes(5, generator(1, "heldout"), WC)
    c = E.heldout_scenes(5, generator(2, "heldout"), WC)
    assert a == b and a != c


def test_clip_scores_features_and_round_trip(clip, tmp_path):
    images = world.render_batch(E.heldout_scenes(6, generator(5, "x"), WC), WC)
    texts = ["a red circle", "two squares", "three triangles", "a blue box", "one disc", "wedge"]
    s = clip.clip_score(images, texts)
    assert s.shape == (6,) and np.all((s >= 0) & (s <= 100))
    f = clip.features(images)
    assert f.shape == (6, clip.config.embed) and np.allclose(np.linalg.norm(f, axis=1), 1)
    assert 0 <= clip.metrics["top1_retrieval_32"] <= 1 and clip.metrics["train_cpu_s"] > 0
    clip.save(tmp_path / "clip")
    again = E.ClipEvaluator.load(tmp_path / "clip")
    assert np.array_equal(again.clip_score(images, texts), s)
    assert again.metrics == clip.metrics
    with pytest.raises(ValueError, match="2 prompts"):
        clip.clip_score(images[:3], texts[:2])
    with pytest.raises(ValueError, match="uint8"):
        clip.features(images.astype(np.float32))


def test_training_is_deterministic(clip):
    again = E.train_clip(E.CLIP_PRESETS["smoke"], WC)
    for (k, a), b in zip(clip.net.state_dict().items(), again.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_vqa_scores_gecko_and_round_trip(vqa, tmp_path):
    rng = generator(0, "prompts")
    prompts = P.prompt_set("drawbench", rng, n=6)
    images = world.render_batch(E.heldout_scenes(6, generator(6, "x"), WC), WC)
    p = vqa.vqa(images, ["is there a red circle?"] * 6)
    assert p.shape == (6,) and np.all((p > 0) & (p < 1))
    v = vqa.vqascore(images, prompts)
    assert np.array_equal(v, vqa.vqa(images, [E.VQASCORE_TEMPLATE.format(q.text) for q in prompts]))
    g = vqa.gecko(images, prompts)
    manual = [
        np.mean(vqa.vqa(images[[i] * len(q.facts)], [world.fact_question(f) for f in q.facts]))
        for i, q in enumerate(prompts)
    ]
    assert np.allclose(g, manual)
    # a string prompt is decomposed by world.parse_caption
    assert np.allclose(vqa.gecko(images[:1], [prompts[0].text]), g[:1])
    for key in ("fact_accuracy", "fact_pair_accuracy", "whole_pair_accuracy"):
        assert 0 <= vqa.metrics[key] <= 1
    vqa.save(tmp_path / "vqa")
    again = E.VQAEvaluator.load(tmp_path / "vqa")
    assert np.array_equal(again.vqascore(images, prompts), v)
    with pytest.raises(Exception, match="not 'clip'"):
        E.ClipEvaluator.load(tmp_path / "vqa")
    with pytest.raises(Exception, match="not a complete evaluator folder"):
        E.VQAEvaluator.load(tmp_path / "missing")


def test_cached_evaluators_train_once(tmp_path):
    cfg = E.ClipConfig(n_scenes=64, n_eval=32, steps=3, batch=16)
    first = E.cached_clip(cfg, WC, root=tmp_path)
    second = E.cached_clip(cfg, WC, root=tmp_path)
    assert second is not first
    images = world.render_batch(E.heldout_scenes(3, generator(7, "x"), WC), WC)
    assert np.array_equal(first.features(images), second.features(images))
    assert len(list((tmp_path / E.CACHE_KIND).iterdir())) == 1


@pytest.mark.slow
def test_evaluators_learn_at_a_small_size():
    """Far above chance after a few seconds of training (the quick preset reaches much more)."""
    clip = E.train_clip(E.ClipConfig(n_scenes=400, n_eval=64, steps=150), WC)
    assert clip.metrics["top1_retrieval_32"] > 0.5  # chance: 1 / 32
    vqa = E.train_vqa(
        E.VQAConfig(n_scenes=300, n_questions=3000, n_eval=120, steps=220, whole_share=0.0), WC
    )
    assert vqa.metrics["fact_accuracy_by_kind"]["background"] > 0.8
    assert vqa.metrics["fact_pair_accuracy"] > 0.65  # chance: 0.5
