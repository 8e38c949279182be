"""CMD-1: one step. The critic *is* the quasimetric: f(s, a, g) = c(g) - d_theta((s, a), (g, a_g)).

CMD notes, "CMD-1 (one-step, --onestep)": the same symmetric InfoNCE as the contrastive critic,
with logits[i, j] = c(g_j) - d_theta((s_i, a_i), (g_j, a_gj)); c is a learned potential MLP on
the goal, or 0 with `potential=False` (--nopotential). Acting as in CMD-2.
"""

from __future__ import annotations

import torch

from alignlab.nn import contrastive_accuracy, infonce, mlp

from .cmd2 import QuasimetricMethod, pairwise, quasimetric
from .common import ActionSpec, MethodConfig, sa_cat


class CMD1(QuasimetricMethod):
    name = "cmd1"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        self.qd = quasimetric(self.sa_dim, cfg)
        self.potential = mlp(obs_dim, cfg.hidden, 1, cfg.activation) if cfg.potential else None
        self._make_optimizer()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        sa = sa_cat(batch["obs"], batch["action"])
        ga = sa_cat(batch["goal"], batch["goal_action"])
        d = pairwise(self.qd, sa, ga)
        logits = -d
        if self.potential is not None:
            logits = logits + self.potential(batch["goal"]).squeeze(-1)[None, :]
        loss = infonce(logits, self.cfg.infonce)
        self._step(loss + self.behaviour_loss(batch), batch)
        return {
            "critic_loss": loss.item(),
            "accuracy": contrastive_accuracy(logits).item(),
            "d_pos": d.diagonal().mean().item(),
        }
