"""Activations for SAE training: model runs, special-token masking, windows, fingerprints.

Gemma Scope §3.2 "Inputs" (notes "Hyperparameters"): SAEs train on activations of every
non-special token (BOS, EOS and padding excluded), shuffled in buckets of ~10⁶ tokens, in fp32.
The sites are those of §4 (`alignlab.gemmascope.sites`). The pipeline is

    ActivationSource(model, stream, sites, ...)   one forward pass per batch of windows serves
                                                  every requested site; special tokens dropped
        -> shards.write_shards / read_shards      optional safetensors cache on disk
        -> buffer.ShuffledBuffer(source, ...)     bounded "mixing" buffer, one permutation
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alignlab.core.console import Bar
from alignlab.core.errors import AlignlabError

from .sites import SiteKey, capture_sites, check_sites, is_hf_gemma2, site_dim

__all__ = [
    "ActivationChunk",
    "ActivationSource",
    "bos_windows",
    "chunk_acts",
    "chunk_rows",
    "default_special_ids",
    "model_fingerprint",
    "report_progress",
    "token_mask",
    "token_windows",
]

ProgressCallback = Callable[[int, int | None], None]
"""progress(tokens_done, tokens_total or None), called after each chunk."""


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


def bos_windows(stream: np.ndarray, bos_id: int, seq_len: int, n: int) -> torch.Tensor:
    """Up to `n` windows (n, seq_len) int64 of a token stream that each start at a <bos>,
    spread evenly over the stream, so token position t in a window is position t of a
    document (the loss by position of Gemma Scope's Fig. 4 needs this)."""
    starts = np.flatnonzero(stream[: len(stream) - seq_len + 1] == bos_id)
    if len(starts) == 0:
        raise AlignlabError(f"no <bos> at least {seq_len} tokens before the stream's end")
    pick = starts[np.linspace(0, len(starts) - 1, min(n, len(starts))).round().astype(int)]
    pick = np.unique(pick)
    return torch.from_numpy(np.stack([stream[s : s + seq_len] for s in pick]).astype(np.int64))


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
        return chunk_rows(self.acts)


class ActivationSource:
    """Activations of `model` at `sites` over token ids, one forward pass per batch.

    `tokens` is a 1-D token stream (documents as <bos> ... <eos>, e.g.
    `alignlab.gemma2.teacher.load_data(...).train`) cut into windows of `seq_len` tokens
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
        with report_progress(self.progress, self.max_tokens) as report:
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


def chunk_acts(item: Any) -> Mapping[SiteKey, torch.Tensor]:
    """The per-site activations of a chunk (an `ActivationChunk` or a plain dict)."""
    return item.acts if isinstance(item, ActivationChunk) else item


def chunk_rows(acts: Mapping[SiteKey, torch.Tensor]) -> int:
    """The number of tokens in a chunk's per-site activations (the same at every site)."""
    sizes = {int(t.shape[0]) for t in acts.values()}
    if len(sizes) != 1:
        raise AlignlabError(f"sites of one chunk hold different numbers of tokens: {sizes}")
    return sizes.pop()


@contextmanager
def report_progress(
    progress: bool | ProgressCallback | None, total: int | None
) -> Iterator[Callable[[int], None]]:
    """`report(tokens_done)` for a loop over activations: it drives a `core.console.Bar`
    (progress=True), calls the caller's `progress(tokens_done, total)`, or does nothing."""
    if progress is True:
        with Bar(total, "activations (tokens)") as bar:
            shown = [0]

            def report(done: int) -> None:
                bar.advance(done - shown[0])
                shown[0] = done

            yield report
    elif callable(progress):
        yield lambda done: progress(done, total)
    else:
        yield lambda done: None
