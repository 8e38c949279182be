"""GCBC: goal-conditioned behaviour cloning with hindsight (future-state) goals.

pi(a | s, g) imitates the dataset action at s for goals reached later in the same trajectory.
Discrete actions: softmax cross-entropy, acting by argmax. Continuous actions: MSE regression
of the action, acting by the candidate direction closest (in cosine) to the prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignlab.nn import mlp

from .common import ActionSpec, Method, MethodConfig


class GCBC(Method):
    name = "gcbc"
    has_value = False  # the policy itself: no actor on top

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        out = len(act_spec.candidates) if act_spec.discrete else act_spec.dim
        self.policy = mlp(2 * obs_dim, cfg.hidden, out, cfg.activation)
        self._make_optimizer()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = self.policy(torch.cat([batch["obs"], batch["goal"]], -1))
        if self.act_spec.discrete:
            loss = F.cross_entropy(out, batch["action"].argmax(-1))
        else:
            loss = (out - batch["action"]).square().sum(-1).mean()
        self._step(loss + self.behaviour_loss(batch))
        return {"bc_loss": loss.item()}

    def score(self, obs, cand, goal):
        out = self.policy(torch.cat([obs, goal], -1))
        return out if self.act_spec.discrete else out @ cand.T
