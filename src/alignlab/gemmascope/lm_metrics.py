"""Metrics of an SAE spliced into its language model (Gemma Scope §4), as SAELens evals name them.

    delta LM loss = CE(x̂ spliced in) − CE(clean), next-token cross-entropy on real tokens

`spliced_lm_metrics` runs the language model three ways on each token batch (clean, x̂ spliced
at one site, zero ablation at that site) and reports SAELens's `ce_loss_score`
(CE_abl − CE_sae) / (CE_abl − CE_clean) and `kl_div_score` with the delta LM loss, and the
reconstruction statistics of the spliced tokens (`alignlab.gemmascope.metrics`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import AlignlabError

from .metrics import DEFAULT_DENSE_THRESHOLD, ReconstructionStats, as_tensor, sae_dtype_device

__all__ = ["SplicedLMMetrics", "spliced_lm_metrics"]


@dataclass
class SplicedLMMetrics:
    """Result of `spliced_lm_metrics` (SAELens evals names in brackets).

    ce_clean [ce_loss_without_sae], ce_spliced [ce_loss_with_sae], ce_ablated
    [ce_loss_with_ablation]: mean next-token CE (nats) over the scored positions.
    delta_lm_loss = ce_spliced − ce_clean (the paper's primary fidelity metric).
    ce_loss_score = (ce_ablated − ce_spliced) / (ce_ablated − ce_clean): 1 for a perfect
    SAE, 0 for one as bad as zero ablation; nan when ablation does not change the loss.
    kl_spliced [kl_div_with_sae], kl_ablated [kl_div_with_ablation]: mean KL(clean ‖ variant)
    of the next-token distributions over the same positions; kl_div_score =
    (kl_ablated − kl_spliced) / kl_ablated. nan when compute_kl=False.
    per_position_mse[t]: mean ‖x − x̂‖² over spliced tokens at index t of the batch rows
    (nan where none); per_position_fvu = per_position_mse / reconstruction["total_variance"]
    (the global denominator, so the count-weighted mean of per_position_fvu is the FVU);
    per_position_count[t]: how many spliced tokens sat at index t. The index is the column of
    the batch, i.e. the position within the sequence only when rows start at a document's
    <bos> (paper §4's "reconstruction loss by token position"); `eval_batches` windows start
    anywhere in the stream.
    reconstruction: `stats.summary()` (L0, FVU, MSE, dead/dense fractions) over the spliced
    tokens; stats: the `ReconstructionStats` itself (firing histograms).
    """

    site: str
    layer: int
    ce_clean: float
    ce_spliced: float
    ce_ablated: float
    delta_lm_loss: float
    ce_loss_score: float
    kl_spliced: float
    kl_ablated: float
    kl_div_score: float
    n_ce_tokens: int
    n_spliced_tokens: int
    n_batches: int
    per_position_mse: np.ndarray
    per_position_fvu: np.ndarray
    per_position_count: np.ndarray
    reconstruction: dict[str, float]
    stats: ReconstructionStats = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists, `stats` left out (its summary is `reconstruction`)."""
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(self):
            if fld.name == "stats":
                continue
            v = getattr(self, fld.name)
            out[fld.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def _logits(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor | None):
    out = model(ids, attention_mask=attention_mask)
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):  # Hugging Face ModelOutput
        return out.logits
    if isinstance(out, tuple):
        return out[0]
    raise AlignlabError(f"cannot find logits in the model's output of type {type(out).__name__}")


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


@torch.no_grad()
def spliced_lm_metrics(
    model: nn.Module,
    batches: Iterable[torch.Tensor | np.ndarray],
    site: str,
    layer: int,
    sae: Any,
    special_ids: Collection[int],
    *,
    pad_id: int | None = None,
    max_batches: int | None = None,
    compute_kl: bool = True,
    dense_threshold: float = DEFAULT_DENSE_THRESHOLD,
    replace: Callable[..., Any] | None = None,
) -> SplicedLMMetrics:
    """Delta LM loss, ce_loss_score, KL and reconstruction stats of `sae` at (site, layer).

    Each batch is (B, T) int64 token ids (documents as <bos> ... <eos>; e.g. the windows of
    `alignlab.gemma2.data.eval_batches`); the model reads all T tokens and the logits at
    position t are scored against the token at t + 1. Per batch, three forward passes:

    * clean;
    * spliced: the activation x at the site is replaced by x̂ = sae.decode(sae.encode(x)) at
      every position whose INPUT token is not in `special_ids` (nor padding): Gemma Scope
      trains and evaluates with BOS, EOS and pad excluded (paper §4). Activations at special
      positions are kept as they are and never reach the SAE, so they count in no
      reconstruction statistic either;
    * zero-ablated: x is set to 0 at the same positions (special positions kept). SAELens's
      zero-ablation hook zeroes every position, special ones included, so its ablated CE (and
      ce_loss_score) can differ slightly from ours.

    Scored positions t (CE and KL): input token t and target token t + 1 are both real, i.e.
    not `pad_id`. BOS/EOS inputs and targets are scored (they are real text boundaries);
    SAELens instead drops positions whose input token is special. `pad_id` defaults to
    `model.config.pad_token_id` when the model has a config; when a batch holds padding, the
    model also gets attention_mask = (ids != pad_id).

    `special_ids` is the set of ids never spliced, e.g. {bos, eos, pad}; `pad_id` is added to
    it. `replace(model, site, layer, fn)` is the context manager that substitutes fn(x) for x
    (default `alignlab.gemmascope.sites.replace_site`, our Gemma 2 or Hugging Face's). The
    SAE sees the site's activations cast to its parameter dtype, as (N, d_in) rows.
    """
    if replace is None:
        from alignlab.gemmascope.sites import replace_site as replace
    if pad_id is None:
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
    specials = {int(i) for i in special_ids} | ({int(pad_id)} if pad_id is not None else set())
    splicer = _Splicer(sae, site, layer, dense_threshold)

    ce_sum = {"clean": 0.0, "spliced": 0.0, "ablated": 0.0}
    kl_sum = {"spliced": 0.0, "ablated": 0.0}
    n_ce = n_spliced = n_batches = 0
    device = next(model.parameters()).device
    special_t = torch.tensor(sorted(specials), dtype=torch.long, device=device)

    for bi, batch in enumerate(batches):
        if max_batches is not None and bi >= max_batches:
            break
        ids = as_tensor(batch, "token batch")
        if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise AlignlabError(
                f"token batches must be (B, T) integer ids, got {tuple(ids.shape)} {ids.dtype}"
            )
        ids = ids.to(device=device, dtype=torch.long)
        real = ids != pad_id if pad_id is not None else torch.ones_like(ids, dtype=torch.bool)
        attention_mask = None if bool(real.all()) else real.long()
        keep = ~torch.isin(ids, special_t)  # spliced / ablated positions
        scored = real[:, :-1] & real[:, 1:]  # (B, T - 1) positions whose next token is scored

        clean_ce, clean_logp = _next_token_ce(_logits(model, ids, attention_mask), ids, scored)
        splicer.keep = keep
        with replace(model, site, layer, splicer):
            spliced_ce, spliced_logp = _next_token_ce(
                _logits(model, ids, attention_mask), ids, scored
            )
        with replace(model, site, layer, _Ablator(keep)):
            ablated_ce, ablated_logp = _next_token_ce(
                _logits(model, ids, attention_mask), ids, scored
            )
        if splicer.calls != n_batches + 1:
            raise AlignlabError(
                f"the SAE was applied {splicer.calls - n_batches} times in one forward pass at "
                f"({site!r}, {layer}); expected once"
            )

        ce_sum["clean"] += clean_ce
        ce_sum["spliced"] += spliced_ce
        ce_sum["ablated"] += ablated_ce
        if compute_kl:
            p_clean = clean_logp.exp()
            for name, logp in (("spliced", spliced_logp), ("ablated", ablated_logp)):
                kl = (p_clean * (clean_logp - logp)).sum(-1)
                kl_sum[name] += float(kl[scored].sum(dtype=torch.float64))
        n_ce += int(scored.sum())
        n_spliced += int(keep.sum())
        n_batches += 1

    if n_batches == 0:
        raise AlignlabError("no token batches to evaluate")
    if n_ce == 0:
        raise AlignlabError("no scored positions: every batch is padding or one token wide")
    if n_spliced == 0:
        raise AlignlabError("no spliced positions: every token is a special token")

    ce = {k: v / n_ce for k, v in ce_sum.items()}
    kl = {k: (v / n_ce if compute_kl else math.nan) for k, v in kl_sum.items()}
    recon = splicer.stats.summary()
    cnt = splicer.pos_cnt.numpy()
    per_pos = np.full(len(cnt), np.nan)
    per_pos[cnt > 0] = splicer.pos_err.numpy()[cnt > 0] / cnt[cnt > 0]
    var = recon["total_variance"]
    per_pos_fvu = per_pos / var if var > 0 else np.full(len(cnt), np.nan)
    return SplicedLMMetrics(
        site=site,
        layer=int(layer),
        ce_clean=ce["clean"],
        ce_spliced=ce["spliced"],
        ce_ablated=ce["ablated"],
        delta_lm_loss=ce["spliced"] - ce["clean"],
        ce_loss_score=_ratio(ce["ablated"] - ce["spliced"], ce["ablated"] - ce["clean"]),
        kl_spliced=kl["spliced"],
        kl_ablated=kl["ablated"],
        kl_div_score=_ratio(kl["ablated"] - kl["spliced"], kl["ablated"]),
        n_ce_tokens=n_ce,
        n_spliced_tokens=n_spliced,
        n_batches=n_batches,
        per_position_mse=per_pos,
        per_position_fvu=per_pos_fvu,
        per_position_count=cnt,
        reconstruction=recon,
        stats=splicer.stats,
    )


def _next_token_ce(
    logits: torch.Tensor, ids: torch.Tensor, scored: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """(Σ CE over scored positions in float64, log-probs (B, T - 1, V) of positions 0..T-2)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return float(nll[scored].sum(dtype=torch.float64)), logp


class _Ablator:
    """x -> x · 1[position is special]: zero at the spliced positions, kept elsewhere."""

    def __init__(self, keep: torch.Tensor):
        self.keep_special = (~keep)[..., None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep_special.to(x.dtype)


class _Splicer:
    """The replacement fn: x̂ = sae.decode(sae.encode(x)) at `keep` positions, x elsewhere.

    Accumulates reconstruction stats and the per-position squared error as it goes.
    """

    def __init__(self, sae: Any, site: str, layer: int, dense_threshold: float):
        self.sae, self.site, self.layer = sae, site, layer
        self.dtype, self.device = sae_dtype_device(sae)
        self.stats = ReconstructionStats(dense_threshold=dense_threshold)
        self.pos_err = torch.zeros(0, dtype=torch.float64)
        self.pos_cnt = torch.zeros(0, dtype=torch.int64)
        self.keep: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.keep
        self.calls += 1
        if x.ndim != 3 or x.shape[:2] != keep.shape:
            raise AlignlabError(
                f"activation at ({self.site!r}, {self.layer}) has shape {tuple(x.shape)}; "
                f"expected {tuple(keep.shape)} + (d,)"
            )
        d_in = getattr(self.sae, "d_in", None)
        if d_in is not None and d_in != x.shape[-1]:
            raise AlignlabError(
                f"the SAE takes d_in={d_in} but site ({self.site!r}, {self.layer}) has width "
                f"{x.shape[-1]}"
            )
        xk = x[keep]
        if self.dtype is not None:
            xk = xk.to(device=self.device, dtype=self.dtype)
        f = self.sae.encode(xk)
        x_hat = self.sae.decode(f)
        if x_hat.shape != xk.shape:
            raise AlignlabError(
                f"sae.decode(sae.encode(x)) has shape {tuple(x_hat.shape)}, expected "
                f"{tuple(xk.shape)}"
            )
        self.stats.update(xk, x_hat, f)
        err = (xk.double() - x_hat.double()).pow(2).sum(-1).cpu()
        cols = keep.nonzero()[:, 1].cpu()
        T = keep.shape[1]
        if T > len(self.pos_err):
            grow = T - len(self.pos_err)
            self.pos_err = torch.cat([self.pos_err, self.pos_err.new_zeros(grow)])
            self.pos_cnt = torch.cat([self.pos_cnt, self.pos_cnt.new_zeros(grow)])
        self.pos_err.index_add_(0, cols, err)
        self.pos_cnt.index_add_(0, cols, torch.ones_like(cols))
        out = x.clone()
        out[keep] = x_hat.to(device=x.device, dtype=x.dtype)
        return out
