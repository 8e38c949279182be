"""Evaluation artifacts, so every figure can be recomputed (Imagen 3 Sec. 3 evaluations).

- A *gallery*: the images a model produced for a prompt list, uint8 (N, H, W, 3), stored as a
  safetensors file whose metadata holds the prompts (JSON) and a format tag.
- Per-prompt scores: {metric or model: [score per prompt]} with the prompt ids, as JSON.
Ratings have their own JSON-lines file (`sxs.write_ratings`). Every write is atomic
(`alignlab.core.io`): a crash leaves the previous file or none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as st_save

from alignlab.core.io import atomic_write_bytes, atomic_write_json, read_json

GALLERY_FORMAT = "alignlab.t2i.gallery/1"
SCORES_FORMAT = "alignlab.t2i.scores/1"


def _check_gallery(images: object, prompts: Sequence[str]) -> np.ndarray:
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"a gallery is uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
    if len(prompts) != a.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {a.shape[0]} images")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be strings")
    return np.ascontiguousarray(a)


def save_gallery(
    path: str | os.PathLike,
    images: np.ndarray,
    prompts: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Images (uint8 NHWC) and their prompts in one safetensors file, written atomically.
    `metadata` (JSON-able) is stored beside them (model name, seed, guidance, ...)."""
    a = _check_gallery(images, list(prompts))
    meta = {
        "format": GALLERY_FORMAT,
        "prompts": json.dumps(list(prompts), ensure_ascii=False),
        "metadata": json.dumps(dict(metadata or {}), ensure_ascii=False),
    }
    atomic_write_bytes(path, st_save({"images": a}, metadata=meta))


def load_gallery(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """(images uint8 NHWC, prompts, metadata) from `save_gallery`'s file."""
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != GALLERY_FORMAT or "images" not in f.keys():
            raise ValueError(f"{path} is not a gallery file (format {meta.get('format')!r})")
        images = f.get_tensor("images")
    prompts = json.loads(meta["prompts"])
    _check_gallery(images, prompts)
    return images, prompts, json.loads(meta.get("metadata", "{}"))


def save_scores(
    path: str | os.PathLike,
    scores: Mapping[str, Sequence[float]],
    prompt_ids: Sequence[int | str],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Per-prompt scores {name: one score per prompt} with their prompt ids, as JSON."""
    ids = list(prompt_ids)
    out = {}
    for name, vals in scores.items():
        v = np.asarray(vals, dtype=np.float64)
        if v.shape != (len(ids),):
            raise ValueError(f"scores {name!r} have shape {v.shape}, expected ({len(ids)},)")
        out[str(name)] = v
    atomic_write_json(
        path,
        {
            "format": SCORES_FORMAT,
            "prompt_ids": ids,
            "scores": out,
            "metadata": dict(metadata or {}),
        },
    )


def load_scores(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list, dict[str, Any]]:
    """({name: float array}, prompt ids, metadata) from `save_scores`'s file (NaN restored)."""
    d = read_json(path)
    if not isinstance(d, dict) or d.get("format") != SCORES_FORMAT:
        raise ValueError(f"{path} is not a per-prompt scores file")
    scores = {k: np.array([float(x) for x in v]) for k, v in d["scores"].items()}
    return scores, list(d["prompt_ids"]), d.get("metadata", {})
