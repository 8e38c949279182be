"""Activations for SAE training: model runs, special-token masking, a shuffling buffer, shards.

Gemma Scope §3.2 "Inputs" (notes "Hyperparameters"): SAEs train on activations of every
non-special token (BOS, EOS and padding excluded), shuffled in buckets of ~10⁶ tokens, in fp32.
The sites are those of §4 (`alignlab.gemmascope.sites`). The pipeline here is

    ActivationSource(model, stream, sites, ...)   one forward pass per batch of windows serves
                                                  every requested site; special tokens dropped
        -> write_shards(...) / read_shards(...)   optional safetensors cache on disk
        -> ShuffledBuffer(source, ...)            bounded "mixing" buffer, one permutation
                                                  shared by every site
        -> dicts {(site, layer): (batch_size, d)} one training step of every SAE

All sites of one chunk hold the same tokens in the same row order, and the buffer keeps them
aligned, so one pass over the data trains one SAE per site (Gemma Scope trains all of its SAEs
this way from one activation stream per site; sharing the token order across sites also lets
metrics compare sites token by token).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_bytes, atomic_write_json, read_json

from .sites import (
    SiteKey,
    capture_sites,
    check_sites,
    is_hf_gemma2,
    parse_site_name,
    site_dim,
    site_name,
)

__all__ = [
    "ActivationChunk",
    "ActivationSource",
    "ShardSource",
    "ShuffledBuffer",
    "default_special_ids",
    "model_fingerprint",
    "read_shards",
    "site_batches",
    "token_mask",
    "token_windows",
    "write_shards",
]

ProgressCallback = Callable[[int, int | None], None]
"""progress(tokens_done, tokens_total or None), called after each chunk."""

INDEX_NAME = "index.json"
INDEX_FORMAT = "alignlab.gemmascope.activations/1"
POSITIONS = "positions"  # extra shard tensors: each kept token's position in its window,
TOKEN_IDS = "token_ids"  # and its id


# --------------------------------------------------------------------------------------------
# Special tokens


def token_mask(ids: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """Boolean mask of `ids`' shape, True on tokens whose activations are kept.

    Gemma Scope §3.2: BOS, EOS and padding tokens are excluded from SAE training and
    evaluation. `special_ids` lists them (see `default_special_ids`).
    """
    special = torch.as_tensor(sorted(set(int(i) for i in special_ids)), dtype=ids.dtype)
    if special.numel() == 0:
        return torch.ones_like(ids, dtype=torch.bool)
    return ~torch.isin(ids, special.to(ids.device))


def default_special_ids(model: nn.Module) -> tuple[int, ...]:
    """BOS, EOS and pad ids from the model's config (ours or HF's), sorted and deduplicated."""
    cfg = model.config
    ids: set[int] = set()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(cfg, name, None)
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, list | tuple) else [value]))
    if not ids:
        raise AlignlabError(
            "the model's config names no bos/eos/pad token ids; pass special_ids explicitly "
            "(e.g. (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id))"
        )
    return tuple(sorted(ids))


# --------------------------------------------------------------------------------------------
# Windows of a token stream


Order = Literal["random", "sequential"]
ORDERS = ("random", "sequential")


def token_windows(
    stream: np.ndarray | torch.Tensor,
    *,
    batch_size: int,
    seq_len: int,
    order: Order = "random",
    seed: int = 0,
    max_batches: int | None = None,
) -> Iterator[torch.Tensor]:
    """Batches (B, seq_len) int64 of windows of a 1-D token stream.

    "random": `batch_size` windows at uniform random starts per batch, from a numpy
    Generator seeded with `seed` (as `alignlab.gemma2.data.sample_batch`, without its extra
    target token); endless unless `max_batches` is given.
    "sequential": the stream cut into consecutive non-overlapping windows, in order, so every
    token appears exactly once; the tail shorter than seq_len comes last as a (1, k) batch.
    """
    if order not in ORDERS:
        raise AlignlabError(f"unknown window order {order!r}; valid orders: {', '.join(ORDERS)}")
    if batch_size < 1 or seq_len < 1:
        raise AlignlabError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    tokens = np.asarray(stream.cpu() if isinstance(stream, torch.Tensor) else stream)
    if tokens.ndim != 1:
        raise AlignlabError(f"a token stream must be 1-D, got shape {tuple(tokens.shape)}")
    n = len(tokens)
    if order == "random":
        if n < seq_len:
            raise AlignlabError(f"token stream of {n} tokens is too short for seq_len={seq_len}")
        rng = np.random.default_rng(seed)
        done = 0
        while max_batches is None or done < max_batches:
            starts = rng.integers(0, n - seq_len + 1, size=batch_size)
            yield torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len)].astype(np.int64))
            done += 1
        return
    n_full = n // seq_len
    done = 0
    for first in range(0, n_full, batch_size):
        if max_batches is not None and done >= max_batches:
            return
        starts = np.arange(first, min(first + batch_size, n_full)) * seq_len
        yield torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len)].astype(np.int64))
        done += 1
    if n_full * seq_len < n and (max_batches is None or done < max_batches):
        yield torch.from_numpy(tokens[None, n_full * seq_len :].astype(np.int64))


def _as_batches(
    tokens: Any, *, batch_size: int, seq_len: int | None, order: Order, seed: int
) -> Iterator[torch.Tensor]:
    """Token ids in any accepted form -> (B, T) int64 batches (see ActivationSource)."""
    if isinstance(tokens, np.ndarray | torch.Tensor):
        t = torch.as_tensor(tokens)
        if t.ndim == 1:
            if seq_len is None:
                raise AlignlabError("seq_len is required to cut a 1-D token stream into windows")
            yield from token_windows(
                t, batch_size=batch_size, seq_len=seq_len, order=order, seed=seed
            )
            return
        if t.ndim == 2:  # fixed sequences, batched in order
            for i in range(0, t.shape[0], batch_size):
                yield t[i : i + batch_size].long()
            return
        raise AlignlabError(f"token ids must be 1-D or 2-D, got shape {tuple(t.shape)}")
    for batch in tokens:  # any iterable of (B, T) batches
        b = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        if b.ndim != 2:
            raise AlignlabError(f"each batch of token ids must be 2-D, got {tuple(b.shape)}")
        yield b.long()


# --------------------------------------------------------------------------------------------
# Model runs


def _digest(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module, weights: bool = True) -> dict[str, Any]:
    """What identifies the activations a model produces: its kind, config and (by default) a
    SHA-256 of its weights (names, shapes, dtypes and bytes; cheap for CPU-sized models)."""
    cfg = model.config
    config = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    keep = (str, int, float, bool, type(None), list, tuple, dict)
    fp: dict[str, Any] = {
        "kind": "hf" if is_hf_gemma2(model) else "alignlab",
        "config": {k: v for k, v in sorted(config.items()) if isinstance(v, keep)},
    }
    if weights:
        fp["weights_sha256"] = _digest(
            f"{name}{tuple(t.shape)}{t.dtype}".encode()
            + t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            for name, t in sorted(model.state_dict().items())
        )
    return json.loads(json.dumps(fp, default=str))  # plain JSON types, comparable after a load


@dataclass
class ActivationChunk:
    """One batch's activations with special tokens removed.

    `acts[(site, layer)]` is float32 (n, d_site); row r of every site is the same token, the
    r-th kept token in row-major order of the batch. `positions` (n,) int64 is each kept
    token's position in its window (the model's position index; for per-position metrics),
    `token_ids` (n,) its id. Activations stay on the model's device; positions and ids are
    on the CPU.
    """

    acts: dict[SiteKey, torch.Tensor]
    positions: torch.Tensor
    token_ids: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return _n_rows(self.acts)


class ActivationSource:
    """Activations of `model` at `sites` over token ids, one forward pass per batch.

    `tokens` is a 1-D token stream (documents as <bos> ... <eos>, e.g.
    `alignlab.gemma2.experiments.load_data(...).train`) cut into windows of `seq_len` tokens
    (`token_windows`: seeded random windows or sequential ones), a 2-D array of fixed
    sequences, or any iterable of (B, T) batches. Each batch runs once through the model in
    eval mode under `torch.no_grad()`, capturing all sites together; special tokens (BOS, EOS,
    pad: `special_ids`, by default from the model config) are dropped (Gemma Scope §3.2).

    Iterating yields dicts {(site, layer): float32 (n_kept, d)}; `chunks()` yields
    `ActivationChunk`s, which also carry the kept tokens' positions and ids. Iterating again
    starts over (random windows repeat, as the seed is fixed). The model is in eval mode
    while an iteration runs and gets its previous mode back when the iteration ends. Random
    windows are endless unless `max_batches` or `max_tokens` is set; `max_tokens` truncates
    the last chunk so exactly that many kept tokens come out (when the data holds that many).

    `progress` is None (quiet), True (a rich progress bar on stderr) or a callback
    `progress(tokens_done, tokens_total_or_None)`. `forward_passes` counts model calls.
    """

    def __init__(
        self,
        model: nn.Module,
        tokens: Any,
        sites: Sequence[SiteKey],
        *,
        batch_size: int,
        seq_len: int | None = None,
        special_ids: Iterable[int] | None = None,
        seed: int = 0,
        order: Order = "random",
        max_batches: int | None = None,
        max_tokens: int | None = None,
        device: torch.device | str | None = None,
        progress: bool | ProgressCallback | None = None,
    ):
        self.model = model
        self.tokens = tokens
        self.sites = check_sites(model, sites)
        if not self.sites:
            raise AlignlabError("no sites requested; give at least one (site, layer) pair")
        self.dims = {key: site_dim(model, key[0]) for key in self.sites}
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.special_ids = tuple(
            sorted(set(int(i) for i in special_ids))
            if special_ids is not None
            else default_special_ids(model)
        )
        self.seed = seed
        if order not in ORDERS:
            raise AlignlabError(
                f"unknown window order {order!r}; valid orders: {', '.join(ORDERS)}"
            )
        self.order = order
        if max_tokens is not None and max_tokens < 1:
            raise AlignlabError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_batches = max_batches
        self.max_tokens = max_tokens
        self.device = device
        self.progress = progress
        self.forward_passes = 0

    def fingerprint(self, weights: bool = True) -> dict[str, Any]:
        """Model fingerprint plus how the tokens were drawn (stored in a shard index)."""
        data: dict[str, Any] = {
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "order": self.order,
            "seed": self.seed,
            "special_ids": list(self.special_ids),
        }
        if isinstance(self.tokens, np.ndarray | torch.Tensor):
            arr = np.ascontiguousarray(np.asarray(torch.as_tensor(self.tokens).cpu()))
            data["tokens_shape"] = list(arr.shape)
            data["tokens_sha256"] = _digest([arr.astype(np.int64).tobytes()])
        return {"model": model_fingerprint(self.model, weights), "data": data}

    def __iter__(self) -> Iterator[dict[SiteKey, torch.Tensor]]:
        for chunk in self.chunks():
            yield chunk.acts

    def chunks(self) -> Iterator[ActivationChunk]:
        model = self.model
        device = self.device
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        batches = _as_batches(
            self.tokens,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            order=self.order,
            seed=self.seed,
        )
        was_training = model.training
        model.eval()
        done = 0
        with _Reporter(self.progress, self.max_tokens) as report:
            try:
                for i, ids in enumerate(batches):
                    if self.max_batches is not None and i >= self.max_batches:
                        break
                    if self.max_tokens is not None and done >= self.max_tokens:
                        break
                    chunk = self._run(ids.to(device))
                    if self.max_tokens is not None and done + chunk.n_tokens > self.max_tokens:
                        chunk = _take(chunk, self.max_tokens - done)
                    if chunk.n_tokens == 0:
                        continue
                    done += chunk.n_tokens
                    report(done)
                    yield chunk
            finally:
                model.train(was_training)

    def _run(self, ids: torch.Tensor) -> ActivationChunk:
        keep = token_mask(ids, self.special_ids)
        last = max(layer for _, layer in self.sites)
        with torch.no_grad(), capture_sites(self.model, self.sites) as captured:
            # The layers after the last captured site, the final norm and the unembedding
            # are not needed: stop the forward pass once block `last` has run.
            stop = _layers(self.model)[last].register_forward_hook(_stop_forward)
            try:
                if is_hf_gemma2(self.model):
                    self.model(input_ids=ids, use_cache=False)
                else:
                    self.model(ids)
            except _StopForward:
                pass
            finally:
                stop.remove()
            self.forward_passes += 1
        acts = {key: captured[key][keep].float() for key in self.sites}
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)[keep]
        return ActivationChunk(acts, positions.cpu(), ids[keep].cpu())


class _StopForward(Exception):
    """Raised by a hook once the last captured layer has run."""


def _stop_forward(_module: nn.Module, _inputs: Any, _output: Any) -> None:
    raise _StopForward


def _layers(model: nn.Module) -> Sequence[nn.Module]:
    """The decoder blocks: model.model.layers for the causal LMs (ours and HF's), and
    model.layers for a bare HF Gemma2Model."""
    return getattr(model, "model", model).layers


def _take(chunk: ActivationChunk, n: int) -> ActivationChunk:
    return ActivationChunk(
        {k: v[:n] for k, v in chunk.acts.items()}, chunk.positions[:n], chunk.token_ids[:n]
    )


class _Reporter:
    """Optional progress: a callback, a rich bar (progress=True), or nothing."""

    def __init__(self, progress: bool | ProgressCallback | None, total: int | None):
        self.progress = progress
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.progress is True:
            from alignlab.core.console import progress as rich_progress

            self._bar = rich_progress()
            self._bar.__enter__()
            self._task = self._bar.add_task("activations (tokens)", total=self.total)
        return self.report

    def report(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        elif callable(self.progress):
            self.progress(done, self.total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


# --------------------------------------------------------------------------------------------
# Shuffling buffer


def _chunk_acts(item: Any) -> Mapping[SiteKey, torch.Tensor]:
    return item.acts if isinstance(item, ActivationChunk) else item


@dataclass
class ShuffledBuffer:
    """A memory-bounded shuffling ("mixing") buffer over chunks of per-site activations.

    Gemma Scope §3.2 shuffles activations in buckets of ~10⁶ tokens; SAELens' mixing buffer
    does the same. Here: the buffer fills to `capacity` rows (tokens), draws a random
    permutation of its rows, yields `half // batch_size` batches of `batch_size` rows from it
    (half = rows held // 2), then refills the freed rows from the source and repeats. When the
    source ends, the remaining rows are yielded in one more shuffled pass, the last batch
    short unless `drop_last`. With a finite source every row is yielded exactly once.

    Sites share the permutation: row r of the batch for site A and row r of the batch for
    site B are the same token, which is what one-pass multi-SAE training needs (one batch of
    tokens trains every site's SAE) and what cross-site metrics need. Batches are dicts
    {(site, layer): float32 (batch_size, d_site)}.

    Storage is preallocated once on `device`, `capacity` rows per site: `nbytes` =
    capacity × Σ d_site × 4 bytes, and it never grows (rows are copied into free slots; one
    input chunk may be held in part until there is room). The default capacity, 2**17 tokens,
    suits CPU-sized models; Gemma Scope's ~10⁶ would take 9.7 GB for one 2B residual site.
    Deterministic given `seed` and the source. `source` is any iterable of dicts
    {(site, layer): (n, d)} (or `ActivationChunk`s): an `ActivationSource`, a `ShardSource`,
    or a list. Iterating the buffer iterates the source once (one epoch for a finite source);
    one buffer serves one iteration at a time (the storage is shared).
    """

    source: Iterable[Any]
    batch_size: int
    capacity: int = 2**17
    seed: int = 0
    drop_last: bool = False
    dims: Mapping[SiteKey, int] | None = None
    device: torch.device | str = "cpu"
    _storage: dict[SiteKey, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _occupied: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise AlignlabError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.capacity < 2 * self.batch_size:
            raise AlignlabError(
                f"buffer capacity ({self.capacity} tokens) must be at least 2 × batch_size "
                f"({2 * self.batch_size}): half the buffer is served between refills"
            )
        if self.dims is None and hasattr(self.source, "dims"):
            self.dims = dict(self.source.dims)

    @property
    def nbytes(self) -> int:
        """capacity × Σ site widths × 4 bytes (fp32). Needs `dims` (given, taken from the
        source, or known after the first chunk)."""
        if self.dims is None:
            raise AlignlabError(
                "buffer size unknown until the first chunk: pass dims={(site, layer): d, ...}"
            )
        return self.capacity * sum(self.dims.values()) * 4

    @property
    def n_rows(self) -> int:
        """Rows (tokens) held right now; never more than `capacity`."""
        return 0 if self._occupied is None else int(self._occupied.sum())

    def _allocate(self, first: Mapping[SiteKey, torch.Tensor]) -> None:
        dims = {key: int(t.shape[1]) for key, t in first.items()}
        if self.dims is not None and dict(self.dims) != dims:
            raise AlignlabError(
                f"source chunk sites/widths {dims} do not match the buffer's dims {self.dims}"
            )
        self.dims = dims
        self._storage = {
            k: torch.empty(self.capacity, d, device=self.device) for k, d in dims.items()
        }
        self._occupied = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)

    def _insert(self, chunk: Mapping[SiteKey, torch.Tensor], start: int) -> int:
        """Copy rows chunk[start:] into free slots; return the next row not copied."""
        assert self._occupied is not None
        free = (~self._occupied).nonzero().squeeze(1)
        n_rows = _n_rows(chunk)
        k = min(len(free), n_rows - start)
        slots = free[:k]
        for key, dest in self._storage.items():
            dest[slots] = chunk[key][start : start + k].to(dest.device, torch.float32)
        self._occupied[slots] = True
        return start + k

    def __iter__(self) -> Iterator[dict[SiteKey, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        it = iter(self.source)
        pending: Mapping[SiteKey, torch.Tensor] | None = None
        start = 0
        exhausted = False
        self._occupied = None
        while True:
            # fill to capacity
            while not exhausted and (self._occupied is None or self.n_rows < self.capacity):
                if pending is None or start >= _n_rows(pending):
                    try:
                        pending, start = _chunk_acts(next(it)), 0
                    except StopIteration:
                        exhausted = True
                        break
                    if self._occupied is None:
                        self._allocate(pending)
                    elif set(pending) != set(self._storage):
                        raise AlignlabError(
                            f"source chunk sites {sorted(pending)} differ from the first "
                            f"chunk's {sorted(self._storage)}"
                        )
                start = self._insert(pending, start)
            if self._occupied is None:
                return  # empty source
            held = self._occupied.nonzero().squeeze(1)
            order = held[torch.randperm(len(held), generator=gen).to(held.device)]
            if exhausted:  # drain everything
                n_batches = (
                    len(order) // self.batch_size
                    if self.drop_last
                    else math.ceil(len(order) / self.batch_size)
                )
            else:
                n_batches = (len(order) // 2) // self.batch_size
            for b in range(n_batches):
                rows = order[b * self.batch_size : (b + 1) * self.batch_size]
                batch = {key: t[rows] for key, t in self._storage.items()}
                self._occupied[rows] = False
                yield batch
            if exhausted:
                self._occupied[:] = False
                return


def _n_rows(chunk: Mapping[SiteKey, torch.Tensor]) -> int:
    sizes = {int(t.shape[0]) for t in chunk.values()}
    if len(sizes) != 1:
        raise AlignlabError(f"sites of one chunk hold different numbers of tokens: {sizes}")
    return sizes.pop()


def site_batches(
    batches: Iterable[Mapping[SiteKey, torch.Tensor]], key: SiteKey
) -> Iterator[torch.Tensor]:
    """One site's (batch_size, d) tensors from a stream of per-site dicts (e.g. a
    ShuffledBuffer), for trainers that take a plain iterator of activation batches."""
    for batch in batches:
        if key not in batch:
            raise AlignlabError(
                f"no site {site_name(key)} in the batches; they hold: "
                f"{', '.join(site_name(k) for k in batch)}"
            )
        yield batch[key]


# --------------------------------------------------------------------------------------------
# Disk cache: safetensors shards


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
    holds exactly `tokens_per_shard` tokens; writing stops after `max_tokens` (the source may be endless). `index.json` records the
    format, sites, widths, per-shard token counts, the total and a fingerprint (by default the
    source's `fingerprint()` when it has one: model config, weights hash, windowing).

    Writes are atomic (temporary file, fsync, rename): an interrupted run leaves only whole
    shards and an index, marked `"complete": false`, listing exactly those. A folder that
    already holds an index is refused unless `overwrite=True`.
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

    with _Reporter(progress, max_tokens) as report:
        items = source.chunks() if isinstance(source, ActivationSource) else source
        for item in items:
            acts = _chunk_acts(item)
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
            n = _n_rows(acts)
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
            n = _n_rows(acts)
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
