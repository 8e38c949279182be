"""Gemma Scope's reconstruction metrics (Lieberum et al. 2024, §4), named as in SAELens evals.

Sparsity and fidelity (paper §4 "Evaluation"; notes "Evaluation & headline results"):

    L0   = E‖f(x)‖₀                            mean number of active latents per token
    FVU  = E‖x − x̂‖² / E‖x − E x‖²             fraction of variance unexplained: a RATIO OF MEANS
    MSE  = E‖x − x̂‖²                           squared error summed over dimensions, mean over
                                                tokens (SAELens `mse`; `mse_per_dim` divides by d)

`ReconstructionStats` accumulates L0, FVU, MSE and per-latent firing counts over any number of
batches in one streaming pass, exactly: the mean and total variance are merged batch by batch
with Chan et al.'s pairwise formula in float64, so the result equals the one-shot computation
on the concatenated data to float64 rounding, whatever the batch split. SAELens's
`explained_variance` is 1 − this FVU. Its `explained_variance_legacy` is different: a MEAN OF
PER-TOKEN RATIOS 1 − ‖x − x̂‖² / ‖x − x̄_batch‖² with x̄_batch the mean of each eval batch, so it
depends on the batch split and is dominated by tokens close to the batch mean; 1 − FVU and
the legacy number do not agree in general (notes "Pitfalls").

`mean_max_cosine` scores dictionary recovery against a known ground-truth dictionary (the
toy data of `alignlab.gemmascope.synthetic`). The metrics of an SAE spliced into the language
model (delta LM loss, CE score, KL) are in `alignlab.gemmascope.lm_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import AlignlabError

__all__ = [
    "DEFAULT_DENSE_THRESHOLD",
    "DEFAULT_HIST_EDGES",
    "MeanMaxCosine",
    "ReconstructionStats",
    "evaluate_reconstruction",
    "mean_max_cosine",
]

DEFAULT_DENSE_THRESHOLD = 0.1
"""A latent is "dense" when it fires on more than this fraction of tokens. A convention (as in
the notes' "e.g. firing on > 10 % of tokens"), not a number from the Gemma Scope paper."""

DEFAULT_HIST_EDGES = np.linspace(-8.0, 0.0, 33)
"""Bin edges of the log10 firing-frequency histogram: 0.25-decade bins from 1e-8 to 1."""


def as_tensor(a: Any, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    raise AlignlabError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")


# --------------------------------------------------------------------------------------------
# Streaming reconstruction statistics


class ReconstructionStats:
    """Streaming L0, FVU, MSE and firing statistics over batches of (x, x̂, f).

    `update(x, x_hat, f, mask=None)` takes x and x̂ of shape (..., d_in) and latents f of shape
    (..., d_sae) for the same tokens (any leading shape, flattened); `mask` (...) bool keeps
    only the selected tokens (e.g. non-special ones). Every token has equal weight, whatever
    the batch sizes.

    All accumulators are float64 (int64 for counts) on the device of the first batch:

    * the mean E x and the total variance Σ‖x − E x‖², merged batch by batch with Chan et al.'s
      pairwise update (no catastrophic cancellation when activations have a large mean, as
      residual streams do, unlike E‖x‖² − ‖E x‖²);
    * Σ‖x − x̂‖² (the difference taken in float64), Σ‖f‖₀, Σ‖f‖₁;
    * per-latent firing counts, a latent "firing" on a token when its activation is non-zero
      (SAELens's `!= 0`).

    Firing statistics are over the window of tokens seen: a latent is dead when it never fired
    in the window (so the dead fraction depends on the window's length), dense when its firing
    frequency exceeds `dense_threshold` (default 0.1, a convention, not from the paper).
    """

    def __init__(
        self,
        *,
        dense_threshold: float = DEFAULT_DENSE_THRESHOLD,
        hist_edges: Iterable[float] | None = None,
    ):
        if not 0.0 <= dense_threshold <= 1.0:
            raise AlignlabError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        edges = np.asarray(DEFAULT_HIST_EDGES if hist_edges is None else list(hist_edges), float)
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
            raise AlignlabError("hist_edges must be at least two strictly increasing numbers")
        self.dense_threshold = float(dense_threshold)
        self.hist_edges = edges
        self.d_in: int | None = None
        self.d_sae: int | None = None
        self.n_tokens = 0
        self._mean: torch.Tensor | None = None  # (d_in,) float64, running E x
        self._m2 = 0.0  # Σ ‖x − E x‖² (float64 scalar tensor once updated)
        self._sq_err: torch.Tensor | None = None  # Σ ‖x − x̂‖²
        self._l0_sum: torch.Tensor | None = None  # Σ ‖f‖₀ (int64)
        self._l1_sum: torch.Tensor | None = None  # Σ ‖f‖₁
        self._fire: torch.Tensor | None = None  # (d_sae,) int64 firing counts

    # --- accumulation -----------------------------------------------------------------------

    @torch.no_grad()
    def update(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        f: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: x, x̂ (..., d_in), f (..., d_sae), optional bool mask (...)."""
        x, x_hat, f = (as_tensor(a, n) for a, n in ((x, "x"), (x_hat, "x_hat"), (f, "f")))
        if x.ndim < 1 or x.shape != x_hat.shape:
            raise AlignlabError(
                f"x and x_hat must have the same shape (..., d_in), got {tuple(x.shape)} and "
                f"{tuple(x_hat.shape)}"
            )
        if f.ndim != x.ndim or f.shape[:-1] != x.shape[:-1]:
            raise AlignlabError(
                f"f must have shape (..., d_sae) with the same leading shape as x "
                f"{tuple(x.shape[:-1])}, got {tuple(f.shape)}"
            )
        d_in, d_sae = x.shape[-1], f.shape[-1]
        if self.d_in is None:
            self.d_in, self.d_sae = d_in, d_sae
        elif (d_in, d_sae) != (self.d_in, self.d_sae):
            raise AlignlabError(
                f"batch has d_in={d_in}, d_sae={d_sae}, but earlier batches had "
                f"d_in={self.d_in}, d_sae={self.d_sae}"
            )
        lead = tuple(x.shape[:-1])
        x, x_hat, f = x.reshape(-1, d_in), x_hat.reshape(-1, d_in), f.reshape(-1, d_sae)
        if mask is not None:
            mask = as_tensor(mask, "mask")
            if tuple(mask.shape) != lead:
                raise AlignlabError(
                    f"mask must have the leading shape of x {lead}, got {tuple(mask.shape)}"
                )
            keep = mask.reshape(-1).to(device=x.device, dtype=torch.bool)
            x, x_hat, f = x[keep], x_hat[keep], f[keep.to(f.device)]
        n = x.shape[0]
        if n == 0:
            return
        if self._mean is None:
            dev = x.device
            self._mean = torch.zeros(d_in, dtype=torch.float64, device=dev)
            self._m2 = torch.zeros((), dtype=torch.float64, device=dev)
            self._sq_err = torch.zeros((), dtype=torch.float64, device=dev)
            self._l0_sum = torch.zeros((), dtype=torch.int64, device=dev)
            self._l1_sum = torch.zeros((), dtype=torch.float64, device=dev)
            self._fire = torch.zeros(d_sae, dtype=torch.int64, device=dev)
        dev = self._mean.device
        xd = x.to(device=dev, dtype=torch.float64)
        batch_mean = xd.mean(0)
        batch_m2 = (xd - batch_mean).pow(2).sum()
        # Chan, Golub & LeVeque (1979) pairwise merge of (count, mean, M2).
        total = self.n_tokens + n
        delta = batch_mean - self._mean
        self._m2 = self._m2 + batch_m2 + delta.pow(2).sum() * (self.n_tokens * n / total)
        self._mean = self._mean + delta * (n / total)
        self.n_tokens = total
        self._sq_err += (xd - x_hat.to(device=dev, dtype=torch.float64)).pow(2).sum()
        active = f != 0
        self._l0_sum += active.sum().to(dev)
        self._l1_sum += f.abs().sum(dtype=torch.float64).to(dev)
        self._fire += active.sum(0).to(dev)

    # --- results ----------------------------------------------------------------------------

    def _need_data(self) -> None:
        if self.n_tokens == 0:
            raise AlignlabError("no tokens accumulated yet: call update() with a batch first")

    @property
    def l0(self) -> float:
        """Mean number of non-zero latents per token, E‖f‖₀."""
        self._need_data()
        return float(self._l0_sum) / self.n_tokens

    @property
    def l1(self) -> float:
        """Mean ‖f‖₁ per token (SAELens `l1`)."""
        self._need_data()
        return float(self._l1_sum) / self.n_tokens

    @property
    def mse(self) -> float:
        """E‖x − x̂‖²: squared error summed over dimensions, mean over tokens (SAELens `mse`)."""
        self._need_data()
        return float(self._sq_err) / self.n_tokens

    @property
    def mse_per_dim(self) -> float:
        """E‖x − x̂‖² / d_in, the mean over all elements."""
        return self.mse / self.d_in

    @property
    def mean(self) -> np.ndarray:
        """E x over the tokens seen (float64)."""
        self._need_data()
        return self._mean.cpu().numpy()

    @property
    def total_variance(self) -> float:
        """E‖x − E x‖², the loss of always predicting the dataset mean (FVU's denominator)."""
        self._need_data()
        return float(self._m2) / self.n_tokens

    @property
    def fvu(self) -> float:
        """E‖x − x̂‖² / E‖x − E x‖² (ratio of means); nan when the data have no variance."""
        var = self.total_variance
        if var == 0.0:
            return 0.0 if self.mse == 0.0 else math.nan
        return self.mse / var

    @property
    def explained_variance(self) -> float:
        """1 − FVU (SAELens's current `explained_variance`, not `explained_variance_legacy`)."""
        return 1.0 - self.fvu

    @property
    def firing_counts(self) -> np.ndarray:
        """(d_sae,) int64: on how many tokens each latent was non-zero."""
        self._need_data()
        return self._fire.cpu().numpy()

    @property
    def firing_frequency(self) -> np.ndarray:
        """(d_sae,) float64: fraction of tokens on which each latent fired."""
        return self.firing_counts / self.n_tokens

    @property
    def dead_mask(self) -> np.ndarray:
        """(d_sae,) bool: latents that never fired in the window."""
        return self.firing_counts == 0

    @property
    def dense_mask(self) -> np.ndarray:
        """(d_sae,) bool: latents firing on more than `dense_threshold` of the tokens."""
        return self.firing_frequency > self.dense_threshold

    @property
    def dead_fraction(self) -> float:
        return float(self.dead_mask.mean())

    @property
    def dense_fraction(self) -> float:
        return float(self.dense_mask.mean())

    def log10_frequency_histogram(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(counts, edges, n_dead): histogram of log10 firing frequency over live latents.

        Fixed bins (`hist_edges`, by default 0.25 decades from 1e-8 to 1, as paper Fig. 5
        plots frequencies); a frequency outside the edges goes to the nearest end bin, and
        dead latents (log10 0 = −inf) are counted separately, so counts.sum() + n_dead equals
        d_sae.
        """
        freq = self.firing_frequency
        live = freq > 0
        logf = np.clip(np.log10(freq[live]), self.hist_edges[0], self.hist_edges[-1])
        counts, _ = np.histogram(logf, bins=self.hist_edges)
        return counts.astype(np.int64), self.hist_edges.copy(), int((~live).sum())

    def summary(self) -> dict[str, float]:
        """The scalar metrics as plain floats (and ints), for logs and reports."""
        return {
            "n_tokens": int(self.n_tokens),
            "d_in": int(self.d_in),
            "d_sae": int(self.d_sae),
            "l0": self.l0,
            "l1": self.l1,
            "mse": self.mse,
            "mse_per_dim": self.mse_per_dim,
            "total_variance": self.total_variance,
            "fvu": self.fvu,
            "explained_variance": self.explained_variance,
            "dead_fraction": self.dead_fraction,
            "dense_fraction": self.dense_fraction,
            "dense_threshold": self.dense_threshold,
        }


@torch.no_grad()
def evaluate_reconstruction(
    sae: Any,
    batches: Iterable[torch.Tensor],
    *,
    max_batches: int | None = None,
    dense_threshold: float = DEFAULT_DENSE_THRESHOLD,
) -> ReconstructionStats:
    """Run `sae.encode` / `sae.decode` over activation batches (N, d_in) and accumulate stats.

    Any object with encode(x) -> f and decode(f) -> x̂ works (duck typing). Batches are cast
    to the SAE's parameter dtype and device when it has parameters.
    """
    stats = ReconstructionStats(dense_threshold=dense_threshold)
    dtype, device = sae_dtype_device(sae)
    for i, x in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x = as_tensor(x, "activation batch")
        if dtype is not None:
            x = x.to(device=device, dtype=dtype)
        f = sae.encode(x)
        stats.update(x, sae.decode(f), f)
    return stats


def sae_dtype_device(sae: Any) -> tuple[torch.dtype | None, torch.device | None]:
    w = getattr(sae, "W_enc", None)
    if isinstance(w, torch.Tensor):
        return w.dtype, w.device
    if isinstance(sae, nn.Module):
        p = next(sae.parameters(), None)
        if p is not None:
            return p.dtype, p.device
    return None, None


# --------------------------------------------------------------------------------------------
# Dictionary recovery


class MeanMaxCosine(NamedTuple):
    """mean: mean over true features of their best cosine similarity to a learned latent;
    per_feature: (n_features,) those maxima; best_latent: (n_features,) the argmax latents."""

    mean: float
    per_feature: np.ndarray
    best_latent: np.ndarray


@torch.no_grad()
def mean_max_cosine(
    learned: torch.Tensor | np.ndarray,
    true: torch.Tensor | np.ndarray,
    *,
    chunk_size: int = 1024,
    absolute: bool = False,
) -> MeanMaxCosine:
    """Dictionary recovery: mean over TRUE features of max_j cos(true_i, learned_j).

    `learned` is [n_latents, d] (an SAE's `W_dec`, whose rows are the latent directions),
    `true` is [n_features, d]. Cosines are signed (the toy codes are non-negative, so a
    flipped direction is not a recovery) unless `absolute`. A zero row has cosine 0 with
    everything. True features are processed `chunk_size` at a time, so memory is
    chunk_size × n_latents. Computed in float32 at least (float64 inputs stay float64).
    """
    L, Tr = as_tensor(learned, "learned"), as_tensor(true, "true")
    if L.ndim != 2 or Tr.ndim != 2:
        raise AlignlabError(
            f"learned and true must be 2-D [rows, d], got shapes {tuple(L.shape)} and "
            f"{tuple(Tr.shape)}"
        )
    if L.shape[1] != Tr.shape[1]:
        raise AlignlabError(
            f"learned rows have dimension {L.shape[1]} but true rows have {Tr.shape[1]}; pass "
            "the decoder as [n_latents, d] (W_dec) and the dictionary as [n_features, d]"
        )
    if L.shape[0] == 0 or Tr.shape[0] == 0:
        raise AlignlabError("learned and true dictionaries must have at least one row each")
    if chunk_size < 1:
        raise AlignlabError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = torch.promote_types(torch.promote_types(L.dtype, Tr.dtype), torch.float32)
    L = L.to(dtype=dtype)
    Tr = Tr.to(device=L.device, dtype=dtype)

    def unit(a: torch.Tensor) -> torch.Tensor:
        n = a.norm(dim=1, keepdim=True)
        return torch.where(n > 0, a / n.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(a))

    Ln, Tn = unit(L), unit(Tr)
    best, arg = [], []
    for s in range(0, Tn.shape[0], chunk_size):
        sims = Tn[s : s + chunk_size] @ Ln.T
        if absolute:
            sims = sims.abs()
        m, a = sims.max(dim=1)
        best.append(m)
        arg.append(a)
    per = torch.cat(best).double().cpu().numpy()
    return MeanMaxCosine(float(per.mean()), per, torch.cat(arg).cpu().numpy())
