"""A disk cache of activations: safetensors shards and a JSON index.

`write_shards(source, folder, tokens_per_shard)` stores an activation source (an
`ActivationSource`, or any iterable of per-site dicts) as `shard_00000.safetensors`, ... and
`index.json` (format, sites, widths, token counts, the source's fingerprint); every file is
written atomically (`alignlab.core.io`), so an interrupted writer leaves whole shards and an
index that lists exactly them. `read_shards(folder)` gives a `ShardSource`, a re-iterable
source of `ActivationChunk`s that a `ShuffledBuffer` accepts as it accepts a model source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_bytes, atomic_write_json, read_json

from .activations import (
    ActivationChunk,
    ActivationSource,
    ProgressCallback,
    chunk_acts,
    chunk_rows,
    report_progress,
)
from .sites import SiteKey, parse_site_name, site_name

__all__ = ["INDEX_FORMAT", "INDEX_NAME", "ShardSource", "read_shards", "write_shards"]

INDEX_NAME = "index.json"
INDEX_FORMAT = "alignlab.gemmascope.activations/1"
POSITIONS = "positions"  # extra shard tensors: each kept token's position in its window,
TOKEN_IDS = "token_ids"  # and its id


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def write_shards(
    source: Iterable[Any],
    folder: str | os.PathLike,
    tokens_per_shard: int,
    max_tokens: int | None = None,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write a source's activations to `folder` as safetensors shards; return the index.

    Each shard `shard_00000.safetensors` holds one float32 tensor (n, d) per site, named
    "<site>.<layer>" (e.g. "attn_z.3"), plus "positions" and "token_ids" (n,) int64 when the
    source yields `ActivationChunk`s (an `ActivationSource` does). Every shard but the last
    holds exactly `tokens_per_shard` tokens; writing stops after `max_tokens` (the source may
    be endless). `index.json` records the format, sites, widths, per-shard token counts, the
    total and a fingerprint (by default the source's `fingerprint()` when it has one: model
    config, weights hash, windowing).

    Every file is written atomically (`alignlab.core.io`: temporary file, fsync, rename): an
    interrupted run leaves only whole shards and an index, marked `"complete": false`, listing
    exactly those. A folder that already holds an index is refused unless `overwrite=True`.
    """
    if tokens_per_shard < 1:
        raise AlignlabError(f"tokens_per_shard must be >= 1, got {tokens_per_shard}")
    if max_tokens is not None and max_tokens < 1:
        raise AlignlabError(f"max_tokens must be >= 1, got {max_tokens}")
    from safetensors.torch import save

    folder = Path(folder)
    index_path = folder / INDEX_NAME
    if index_path.exists():
        old = _read_index(folder)
        if not overwrite:
            raise AlignlabError(
                f"{folder} already holds an activation cache ({old['total_tokens']} tokens of "
                f"{', '.join(old['sites'])}); read it with read_shards, choose another folder "
                "or pass overwrite=True"
            )
        index_path.unlink()
        for shard in old["shards"]:
            (folder / shard["file"]).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if fingerprint is None and hasattr(source, "fingerprint"):
        fingerprint = source.fingerprint()

    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "sites": None,
        "dims": None,
        "tokens_per_shard": tokens_per_shard,
        "shards": [],
        "total_tokens": 0,
        "complete": False,
        "fingerprint": dict(fingerprint or {}),
    }
    parts: list[dict[str, torch.Tensor]] = []
    held = 0

    def flush(n: int) -> None:
        """Write the first n held tokens as one shard."""
        nonlocal parts, held
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        shard = {k: v[:n].contiguous() for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        name = _shard_name(len(index["shards"]))
        atomic_write_bytes(folder / name, save(shard))
        index["shards"].append({"file": name, "tokens": n})
        index["total_tokens"] += n
        atomic_write_json(folder / INDEX_NAME, index)
        held -= n
        parts = [rest] if held else []

    with report_progress(progress, max_tokens) as report:
        items = source.chunks() if isinstance(source, ActivationSource) else source
        for item in items:
            acts = chunk_acts(item)
            tensors = {site_name(k): v.detach().float().cpu() for k, v in acts.items()}
            if isinstance(item, ActivationChunk):
                tensors[POSITIONS] = item.positions.long().cpu()
                tensors[TOKEN_IDS] = item.token_ids.long().cpu()
            if index["sites"] is None:
                index["sites"] = [site_name(k) for k in acts]
                index["dims"] = {site_name(k): int(v.shape[1]) for k, v in acts.items()}
                atomic_write_json(folder / INDEX_NAME, index)
            elif [site_name(k) for k in acts] != index["sites"]:
                raise AlignlabError(
                    f"source chunk sites {[site_name(k) for k in acts]} differ from the first "
                    f"chunk's {index['sites']}"
                )
            n = chunk_rows(acts)
            if max_tokens is not None:
                n = min(n, max_tokens - index["total_tokens"] - held)
                tensors = {k: v[:n] for k, v in tensors.items()}
            parts.append(tensors)
            held += n
            while held >= tokens_per_shard:
                flush(tokens_per_shard)
            report(index["total_tokens"] + held)
            if max_tokens is not None and index["total_tokens"] + held >= max_tokens:
                break
        if held:
            flush(held)
    if index["sites"] is None:
        raise AlignlabError("the activation source yielded no tokens; nothing was written")
    index["complete"] = True
    atomic_write_json(folder / INDEX_NAME, index)
    return index


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_NAME
    if not path.is_file():
        raise AlignlabError(
            f"{folder} holds no activation cache ({INDEX_NAME} missing); write one with "
            "write_shards"
        )
    try:
        index = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise AlignlabError(f"cannot read {path}: {e}") from e
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise AlignlabError(
            f"{path} is not an activation-cache index (format {INDEX_FORMAT!r} expected)"
        )
    return index


def _fingerprint_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _fingerprint_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class ShardSource:
    """A cache written by `write_shards`, read back as a re-iterable source of chunks.

    Iterating yields one `ActivationChunk` per shard (positions and token ids are empty
    if none were stored), holding only the requested `sites` (all of the cache's by default); a
    `ShuffledBuffer` accepts it directly. `dims`, `total_tokens` and `index` describe it.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        sites: Sequence[SiteKey] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        allow_incomplete: bool = False,
    ):
        self.folder = Path(folder)
        self.index = index = _read_index(self.folder)
        available = [parse_site_name(s) for s in index["sites"] or []]
        if not index["complete"] and not allow_incomplete:
            raise AlignlabError(
                f"the activation cache in {self.folder} is incomplete (its writer stopped after "
                f"{index['total_tokens']} tokens); write it again or pass allow_incomplete=True"
            )
        if sites is None:
            self.sites = available
        else:
            self.sites = [tuple(s) for s in sites]  # type: ignore[misc]
            missing = [s for s in self.sites if s not in available]
            if missing:
                raise AlignlabError(
                    f"the activation cache in {self.folder} does not hold site(s) "
                    f"{', '.join(site_name(s) for s in missing)}; it holds: "
                    f"{', '.join(index['sites'])}"
                )
        if fingerprint is not None:
            diff = _fingerprint_diff(
                json.loads(json.dumps(dict(fingerprint), default=str)), index["fingerprint"]
            )
            if diff:
                raise AlignlabError(
                    f"the activation cache in {self.folder} was made by another model or data "
                    f"setting; differing fingerprint fields: {', '.join(diff)}"
                )
        self.dims = {key: int(index["dims"][site_name(key)]) for key in self.sites}
        self.total_tokens = int(index["total_tokens"])
        for shard in index["shards"]:
            if not (self.folder / shard["file"]).is_file():
                raise AlignlabError(f"shard {shard['file']} listed in {INDEX_NAME} is missing")

    def __len__(self) -> int:
        return len(self.index["shards"])

    def __iter__(self) -> Iterator[ActivationChunk]:
        from safetensors import safe_open

        for shard in self.index["shards"]:
            path = self.folder / shard["file"]
            with safe_open(str(path), framework="pt") as f:
                names = set(f.keys())
                acts = {key: f.get_tensor(site_name(key)) for key in self.sites}
                extra = {
                    name: f.get_tensor(name) if name in names else torch.empty(0, dtype=torch.long)
                    for name in (POSITIONS, TOKEN_IDS)
                }
            n = chunk_rows(acts)
            if n != shard["tokens"]:
                raise AlignlabError(
                    f"shard {shard['file']} holds {n} tokens but {INDEX_NAME} says "
                    f"{shard['tokens']}; the cache is corrupt, write it again"
                )
            yield ActivationChunk(acts, extra[POSITIONS], extra[TOKEN_IDS])


def read_shards(
    folder: str | os.PathLike,
    sites: Sequence[SiteKey] | None = None,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    allow_incomplete: bool = False,
) -> ShardSource:
    """Open a `write_shards` cache. Refused (AlignlabError) when `sites` asks for a site the
    cache lacks, when `fingerprint` (e.g. `ActivationSource.fingerprint()`) differs from the
    stored one, or when the writer did not finish (unless `allow_incomplete`)."""
    return ShardSource(folder, sites, fingerprint, allow_incomplete)
