"""A memory-bounded shuffling ("mixing") buffer over per-site activation chunks.

Gemma Scope §3.2 shuffles activations in buckets of ~10⁶ tokens before they reach the SAEs;
`ShuffledBuffer` does this for every site at once, with one permutation shared by the sites,
so one batch of tokens trains one SAE per site (`alignlab.gemmascope.activations` makes the
chunks, `alignlab.gemmascope.shards` reads them back from disk).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.core.errors import AlignlabError

from .activations import chunk_acts, chunk_rows
from .sites import SiteKey, site_name

__all__ = ["ShuffledBuffer", "site_batches"]


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
        count = chunk_rows(chunk)
        k = min(len(free), count - start)
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
                if pending is None or start >= chunk_rows(pending):
                    try:
                        pending, start = chunk_acts(next(it)), 0
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
