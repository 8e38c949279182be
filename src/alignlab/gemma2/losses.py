"""The training losses of Gemma 2: next-token prediction and knowledge distillation.

Gemma 2 (Gemma Team 2024, §3.2 "Knowledge distillation") trains the 2B and 9B models by
distillation: instead of the one-hot next token, the student minimises the cross-entropy to
a frozen teacher's full next-token distribution,

    min_{P_S}  Σ_x −P_T(x | x_c) log P_S(x | x_c),                                  (KD)

which is the forward KL(P_T ‖ P_S) plus the teacher's entropy (a constant for the student).
The 27B model is trained from scratch with ordinary next-token prediction (NTP).

Small pure functions of logits; the loop that uses them is `alignlab.gemma2.train`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this id carry no loss (F.cross_entropy's convention)


def _float(logits: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (bf16 logits lose the tail of the softmax), float64 kept."""
    return logits if logits.dtype == torch.float64 else logits.float()


def ntp_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy −log P(x_{t+1} | x_{≤t}) over positions (B, T, V) vs (B, T).

    Targets equal to IGNORE_INDEX (-100) are skipped; "mean" averages over the others.
    """
    return F.cross_entropy(
        _float(logits).flatten(0, -2),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def teacher_probs(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P_T(x | x_c) = softmax(z_T / τ): the teacher's full next-token distribution."""
    return torch.softmax(_float(teacher_logits) / temperature, dim=-1)


def subsample_teacher(
    probs: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep k token ids per position, sampled by teacher probability; zero the rest, renormalise.

    This is the *Gemma 3* recipe (Gemma 3 report §2.2: "we sample 256 logits per token,
    weighted by teacher probabilities ... non-sampled logits are set to zero probability and
    renormalized"); it is NOT part of Gemma 2, which distils on the full distribution. The k
    ids are drawn without replacement with the Gumbel-top-k / exponential-race trick: the k
    largest p_i / E_i, E_i ~ Exp(1), are a sample without replacement proportional to p.
    """
    if k >= probs.shape[-1]:
        return probs
    race = torch.empty_like(probs).exponential_(generator=generator)
    idx = (probs / race).topk(k, dim=-1).indices
    kept = torch.zeros_like(probs).scatter_(-1, idx, probs.gather(-1, idx))
    return kept / kept.sum(-1, keepdim=True)


def kd_loss(
    student_logits: torch.Tensor,
    probs: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Distillation loss, Gemma 2 §3.2: Σ_x −P_T(x | x_c) log P_S(x | x_c), per position.

    `probs` is the teacher's distribution P_T (B, T, V) (`teacher_probs`, optionally
    `subsample_teacher`); P_S = softmax(z_S / τ). With τ ≠ 1 the loss is multiplied by τ² so
    its gradient keeps its scale (Hinton et al. 2015); Gemma 2 uses τ = 1. It equals
    H(P_T) + KL(P_T ‖ P_S), so it is the forward KL up to a constant, and equals `ntp_loss`
    when P_T is one-hot. `mask` (B, T) selects the positions that count.
    """
    log_ps = torch.log_softmax(_float(student_logits) / temperature, dim=-1)
    # xlogy-style: a zero teacher probability contributes 0 even where log P_S = -inf, while a
    # NaN in the student's logits stays NaN (a diverged run must not report a falling loss)
    terms = torch.where(probs > 0, probs * log_ps, torch.zeros_like(log_ps))
    per_pos = -terms.sum(-1) * temperature**2
    if mask is not None:
        per_pos = per_pos[mask]
    return per_pos.sum() if reduction == "sum" else per_pos.mean()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(P) = −Σ_x P(x) log P(x) over the last dimension (0 log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def kl_divergence(probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_T ‖ P_S) per position: the forward KL that (KD) minimises, = KD − H(P_T)."""
    log_ps = torch.log_softmax(_float(student_logits), dim=-1)
    return (torch.special.xlogy(probs, probs) - probs * log_ps).sum(-1)
