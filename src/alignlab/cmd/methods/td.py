"""TD: goal-conditioned Q-learning with hindsight relabelling (reward 1 on reaching the goal).

Q(s, a, g) estimates E[gamma^(T_g - 1)], the discounted probability-style value of reaching g:
    r = 1[s' = g],   Q_target = r + gamma (1 - r) max_a' Q_bar(s', a', g),
with Q_bar a Polyak-averaged target network (tau). Goals are the batch's future states; a share
`td_random_goal_prob` of rows takes another row's goal instead, so unreachable goals are seen
(reward 0 almost surely). The reward-1-at-goal form is chosen over -1 per step because it is
defined for continuous states (s' = g holds exactly when the goal is the recorded next state)
and keeps Q in [0, 1]. Acting: argmax_a Q(s, a, g) over the candidate actions.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from alignlab.nn import mlp
from alignlab.rl import polyak_update

from .common import ActionSpec, Method, MethodConfig


class TD(Method):
    name = "td"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        self.q = mlp(self.sa_dim + obs_dim, cfg.hidden, 1, cfg.activation)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            [p for n, p in self.named_parameters() if not n.startswith("q_target.")], lr=cfg.lr
        )

    def q_values(self, net, obs, cand, goal) -> torch.Tensor:
        """Q(s, a_k, g) for every candidate: (B, K)."""
        sa = self.tile_sa(obs, cand)
        g = goal[:, None].expand(-1, cand.shape[0], -1)
        return net(torch.cat([sa, g], -1)).squeeze(-1)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        goal = batch["goal"]
        B = len(goal)
        # relabel a share of rows with another row's goal: a fixed-order rotation of the
        # shuffled batch (rows are i.i.d., so "the next row's goal" is a random dataset goal)
        swap = torch.as_tensor(np.arange(B) < int(self.cfg.td_random_goal_prob * B))
        goal = torch.where(swap[:, None], goal.roll(1, 0), goal)
        reward = (goal == batch["next_obs"]).all(-1).float()
        with torch.no_grad():
            nxt = self.q_values(self.q_target, batch["next_obs"], self.candidates, goal)
            target = reward + self.cfg.gamma * (1 - reward) * nxt.amax(1)
        sa = torch.cat([batch["obs"], batch["action"], goal], -1)
        q = self.q(sa).squeeze(-1)
        loss = F.mse_loss(q, target)
        self._step(loss + self.behaviour_loss(batch), batch)
        polyak_update(self.q_target, self.q, self.cfg.tau)
        return {"td_loss": loss.item(), "q_mean": q.mean().item()}

    def value(self, obs, action, goal, goal_action):
        return self.q(torch.cat([obs, action, goal], -1)).squeeze(-1)

    def score(self, obs, cand, goal):
        return self.q_values(self.q, obs, cand, goal)
