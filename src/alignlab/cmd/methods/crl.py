"""CRL (contrastive RL): the critic f(s, a, g) = phi(s, a)^T psi(g) alone, acting by argmax f.

CMD notes, "Baselines": CRL maximises phi^T psi. The critic and its loss are CMD-2's step 1;
without the distillation there is no triangle inequality, hence (the paper's point) no
stitching of A -> B and B -> C data into A -> C.
"""

from __future__ import annotations

import torch

from alignlab.nn import ContrastiveCritic, contrastive_accuracy, infonce

from .common import ActionSpec, Method, MethodConfig, sa_cat


class CRL(Method):
    name = "crl"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        self.critic = ContrastiveCritic(
            self.sa_dim, obs_dim, cfg.repr_dim, cfg.hidden, activation=cfg.activation
        )
        self._make_optimizer()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        logits = self.critic.logits(sa_cat(batch["obs"], batch["action"]), batch["goal"])
        loss = infonce(logits, self.cfg.infonce)
        self._step(loss + self.behaviour_loss(batch), batch)
        return {"critic_loss": loss.item(), "accuracy": contrastive_accuracy(logits).item()}

    def value(self, obs, action, goal, goal_action):
        phi, psi = self.critic.phi(sa_cat(obs, action)), self.critic.psi(goal)
        return (phi * psi).sum(-1) / self.critic.c

    def score(self, obs, cand, goal):
        phi = self.critic.phi(self.tile_sa(obs, cand))  # (B, K, d)
        psi = self.critic.psi(goal)  # (B, d)
        return torch.einsum("bkd,bd->bk", phi, psi) / self.critic.c
