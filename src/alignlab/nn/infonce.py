"""Contrastive losses on a (B, B) logit matrix whose diagonal holds the positives.

Row i is anchor i (phi(s_i, a_i)), column j is goal j (psi(g_j)); logits[i, i] scores the
future state actually reached from anchor i, the off-diagonal entries score the other rows'
goals, which serve as negatives (samples from the goal marginal p(g)).

| kind        | loss                                                                  |
|-------------|-----------------------------------------------------------------------|
| symmetric   | (CE over rows + CE over columns) / 2              (CMD default, ESR)   |
| forward     | CE over rows + penalty * mean_i logsumexp_j(logits[i, j])^2    (CPC)   |
| nce         | mean over all B^2 entries of sigmoid BCE, label 1 on the diagonal      |

The symmetric loss removes the per-anchor normaliser c(s, a) that the rows-only loss leaves in
f, which matters when f is differenced, as in d_SD = f(g, a_g, g) - f(s, a, g) (CMD notes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INFONCE_KINDS = ("symmetric", "forward", "nce")


def _check_square(logits: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"expected a square (B, B) logit matrix, got shape {tuple(logits.shape)}")


def _diagonal_targets(logits: torch.Tensor) -> torch.Tensor:
    return torch.arange(logits.shape[0], device=logits.device)


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the row-wise and column-wise softmax cross-entropies, diagonal as the label.

    Rows classify which goal came from anchor i; columns classify which anchor reached goal j.
    """
    _check_square(logits)
    targets = _diagonal_targets(logits)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def forward_infonce(logits: torch.Tensor, logsumexp_penalty: float = 0.01) -> torch.Tensor:
    """CPC: row-wise softmax cross-entropy plus penalty * mean_i logsumexp_j(logits[i, j])^2.

    The penalty pins the free per-row normaliser near zero (CMD notes: 0.01 * logsumexp^2).
    """
    _check_square(logits)
    rows = F.cross_entropy(logits, _diagonal_targets(logits))
    return rows + logsumexp_penalty * torch.logsumexp(logits, dim=1).square().mean()


def nce_loss(logits: torch.Tensor) -> torch.Tensor:
    """Binary NCE: sigmoid cross-entropy with label 1 on the diagonal and 0 elsewhere.

    Weighting: a plain mean over all B^2 entries, so each anchor contributes one positive and
    B - 1 negatives. The Bayes-optimal logit is then log p(g | s, a) / p(g) - log(B - 1): the
    log-ratio shifted by a constant, which cancels in differences of f.
    """
    _check_square(logits)
    labels = torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, labels)


def infonce(
    logits: torch.Tensor, kind: str = "symmetric", logsumexp_penalty: float = 0.01
) -> torch.Tensor:
    """The contrastive loss named by `kind`; `logsumexp_penalty` is used by "forward" only."""
    if kind == "symmetric":
        return symmetric_infonce(logits)
    if kind == "forward":
        return forward_infonce(logits, logsumexp_penalty)
    if kind == "nce":
        return nce_loss(logits)
    raise ValueError(f"unknown InfoNCE kind {kind!r}; valid kinds: {', '.join(INFONCE_KINDS)}")


@torch.no_grad()
def contrastive_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose largest logit is the diagonal (a logging metric; 1/B is chance)."""
    _check_square(logits)
    # max(...).indices is argmax's index (the first maximum, or the first NaN), by a faster
    # CPU kernel
    return (logits.max(dim=1).indices == _diagonal_targets(logits)).float().mean()
