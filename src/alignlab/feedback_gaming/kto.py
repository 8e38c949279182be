"""KTO as TRL's `KTOTrainer` computes it (`loss_type="kto"`), for the feedback-gaming agent.

Williams, Carroll et al. 2024 (arXiv 2411.02306), training method: iterated KTO with TRL, each
iteration taking the top 1/16 of trajectories by the simulated user's rating as desirable and
the bottom 1/16 as undesirable examples; β = 0.1, w_d = 1 and w_u set so that
n_d·w_d / (n_u·w_u) = 1.05 (the official repo's `target_ratio`). KTO is Ethayarajh et al. 2024
(arXiv 2402.01306): the Kahneman-Tversky value function around a reference point z₀, in the form
of their Eq. (7), which TRL's code cites:

    r_θ(x, y) = log π_θ(y|x) − log π_ref(y|x)              (implied reward, summed over tokens)
    z₀        = KL(π_θ ‖ π_ref), estimated on mismatched pairs (x, y′)
    v(x, y)   = w_d σ(β(r_θ − z₀))   if y is desirable
                w_u σ(β(z₀ − r_θ))   if y is undesirable
    L         = E[w_y − v(x, y)]

What TRL 1.16.0 does (`trl/trainer/kto_trainer.py`), and so what this module does; the anchor
test in tests/feedback_gaming/test_kto.py checks loss, z₀ and gradients against `KTOTrainer`:

- `DataCollatorForUnpairedPreference` right-pads prompt + completion; `completion_mask` marks
  the completion tokens. The KL pairs come from `_prepare_dataset.add_kl_completion_ids`: within
  each batch of `per_device_train_batch_size` examples (sequential sampling) the completions are
  rotated by one, (x₁, y_B), (x₂, y₁), …, (x_B, y_{B−1}).
- Log-probabilities (`add_fused_lm_head`): token t is scored from position t − 1, only where
  the label is a completion token, and summed (not averaged) over the sequence.
- z₀ = max(0, mean_i[log π(y′ᵢ|xᵢ) − log π_ref(y′ᵢ|xᵢ)]), both terms under `torch.no_grad`
  (`_compute_kl_logps`), so no gradient flows through it; it is logged as "kl".
- The loss is the nan-mean of cat(w_d · chosen losses, w_u · rejected losses): a plain mean
  over the batch's examples, each weighted by its class weight (not a per-class mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignlab.gemma2.model import Gemma2ForCausalLM


@dataclass
class KTOBatch:
    """One collated batch, right-padded (TRL's `DataCollatorForUnpairedPreference`)."""

    input_ids: torch.Tensor  # (B, T) prompt + completion ids
    attention_mask: torch.Tensor  # (B, T) 1 for real tokens
    completion_mask: torch.Tensor  # (B, T) 1 on completion tokens (the ids whose logprob counts)
    kl_input_ids: torch.Tensor  # (B, T') prompt_i + completion of the mismatched example
    kl_attention_mask: torch.Tensor
    kl_completion_mask: torch.Tensor
    desirable: torch.Tensor  # (B,) bool


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _pad_pairs(prompts, completions, pad_id):
    ids = [p + c for p, c in zip(prompts, completions)]
    mask = [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)]
    return _pad(ids, pad_id), _pad([[1] * len(s) for s in ids], 0), _pad(mask, 0)


def collate(
    prompts: list[list[int]], completions: list[list[int]], desirable: list[bool], pad_id: int
) -> KTOBatch:
    """Right-padded batch; example i's KL sequence is prompt i + completion i − 1 (cyclically).

    TRL: `[completion_ids[-1]] + completion_ids[:-1]` per batch. With one example the KL
    sequence is the example itself (TRL refuses batch size 1 for this reason).
    """
    if not (len(prompts) == len(completions) == len(desirable)) or not prompts:
        raise ValueError("collate needs equally many (≥ 1) prompts, completions and labels")
    if any(not c for c in completions):
        raise ValueError("every completion needs at least one token")
    kl_completions = completions[-1:] + completions[:-1]
    ids, attn, comp = _pad_pairs(prompts, completions, pad_id)
    kl_ids, kl_attn, kl_comp = _pad_pairs(prompts, kl_completions, pad_id)
    return KTOBatch(ids, attn, comp, kl_ids, kl_attn, kl_comp, torch.tensor(desirable).bool())


def sequence_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """(B,) Σ_t log p(x_t | x_<t) over completion tokens t (shifted: x_t from position t − 1).

    Only the scored positions are unembedded for our Gemma 2 (as TRL's fused LM head); any
    other model is called as `model(input_ids, attention_mask=...)`, returning logits or an
    HF output with `.logits`.
    """
    mask = completion_mask[:, 1:].bool()
    labels = input_ids[:, 1:][mask]
    if isinstance(model, Gemma2ForCausalLM):
        h = model.model(input_ids, attention_mask=attention_mask)
        logits = model.logits(h[:, :-1][mask])
    else:
        out = model(input_ids, attention_mask=attention_mask)
        logits = getattr(out, "logits", out)[:, :-1][mask]
    logp = logits.float().log_softmax(-1).gather(-1, labels[:, None]).squeeze(-1)
    return logp.new_zeros(mask.shape).masked_scatter(mask, logp).sum(-1)


def undesirable_weight(n_desirable: int, n_undesirable: int, target_ratio: float = 1.05) -> float:
    """w_u with n_d·w_d / (n_u·w_u) = target_ratio at w_d = 1 (the paper's repo); 1 if a class is empty."""
    if n_desirable == 0 or n_undesirable == 0:
        return 1.0
    return n_desirable / (n_undesirable * target_ratio)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    kl_policy_logps: torch.Tensor,
    kl_ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Scalar KTO loss (TRL `loss_type="kto"`) and float stats; all inputs are (B,) sums of logps.

    Stats: z0 (TRL's "kl"), rewards_chosen / rewards_rejected (mean β·r per class, nan if the
    class is empty), rewards_margin, logps_chosen / logps_rejected, n_desirable, n_undesirable.
    """
    desirable = desirable.to(torch.bool)
    z0 = (kl_policy_logps - kl_ref_logps).mean().detach().clamp(min=0)
    logratios = policy_logps - ref_logps  # r_θ(x, y)
    chosen, rejected = logratios[desirable], logratios[~desirable]
    chosen_losses = 1 - F.sigmoid(beta * (chosen - z0))
    rejected_losses = 1 - F.sigmoid(beta * (z0 - rejected))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses))
    loss = losses.nanmean()

    def mean(x: torch.Tensor) -> float:
        return float(x.detach().mean()) if x.numel() else math.nan

    stats = {
        "loss": float(loss.detach()),
        "z0": float(z0),
        "rewards_chosen": mean(beta * chosen),
        "rewards_rejected": mean(beta * rejected),
        "logps_chosen": mean(policy_logps[desirable]),
        "logps_rejected": mean(policy_logps[~desirable]),
        "n_desirable": int(desirable.sum()),
        "n_undesirable": int((~desirable).sum()),
    }
    stats["rewards_margin"] = stats["rewards_chosen"] - stats["rewards_rejected"]
    return loss, stats


def _stack(a: torch.Tensor, b: torch.Tensor, value: int) -> torch.Tensor:
    width = max(a.shape[1], b.shape[1])
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=value) for t in (a, b)])


def kto_step(
    model,
    ref_model,
    batch: KTOBatch,
    optimizer: torch.optim.Optimizer,
    *,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
    max_grad_norm: float | None = 1.0,
) -> dict:
    """One optimiser step of TRL's KTOTrainer: stats of `kto_loss` plus loss and grad_norm.

    Under no_grad: the policy's KL logps (as TRL) and the reference's logps of the batch and
    of its KL sequences (one forward pass over both, stacked; right padding changes nothing).
    Then the policy's logps with gradients, the loss, backward, clip_grad_norm_ (skipped when
    max_grad_norm is None or ≤ 0, as HF's Trainer), step, zero_grad. Modes (train/eval) are
    left as they are: Gemma 2 has no dropout.
    """
    B = batch.input_ids.shape[0]
    with torch.no_grad():
        kl_policy = sequence_logps(
            model, batch.kl_input_ids, batch.kl_attention_mask, batch.kl_completion_mask
        )
        ref = sequence_logps(
            ref_model,
            _stack(batch.input_ids, batch.kl_input_ids, 0),
            _stack(batch.attention_mask, batch.kl_attention_mask, 0),
            _stack(batch.completion_mask, batch.kl_completion_mask, 0),
        )
    policy = sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    loss, stats = kto_loss(
        policy, ref[:B], kl_policy, ref[B:], batch.desirable, beta,
        desirable_weight, undesirable_weight,
    )  # fmt: skip
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    clip = max_grad_norm if max_grad_norm is not None and max_grad_norm > 0 else math.inf
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats
