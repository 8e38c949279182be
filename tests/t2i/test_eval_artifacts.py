"""Galleries and per-prompt scores on disk (every figure recomputable)."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from alignlab.t2i.eval.artifacts import load_gallery, load_scores, save_gallery, save_scores


def test_gallery_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    prompts = ["two red circles", "a blue square", "é", "x", ""]
    path = tmp_path / "gallery.safetensors"
    save_gallery(path, images, prompts, {"model": "full", "seed": 3})
    got, p, meta = load_gallery(path)
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    assert p == prompts and meta == {"model": "full", "seed": 3}
    assert np.array_equal(load_file(path)["images"], images)  # a plain safetensors file
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="uint8"):
        save_gallery(tmp_path / "g2", images.astype(np.float32), prompts)
    with pytest.raises(ValueError, match="4 prompts for 5 images"):
        save_gallery(tmp_path / "g3", images, prompts[:4])
    assert not (tmp_path / "g2").exists() and not (tmp_path / "g3").exists()


def test_scores_round_trip(tmp_path):
    path = tmp_path / "scores.json"
    scores = {"vqascore": [0.1, 0.9, float("nan")], "clip": np.array([1.0, 2.0, 3.0])}
    save_scores(path, scores, ["p0", "p1", "p2"], {"model": "raw"})
    got, ids, meta = load_scores(path)
    assert ids == ["p0", "p1", "p2"] and meta == {"model": "raw"}
    assert np.allclose(got["clip"], [1, 2, 3]) and np.isnan(got["vqascore"][2])
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        save_scores(path, {"x": [1.0]}, ["a", "b", "c"])
