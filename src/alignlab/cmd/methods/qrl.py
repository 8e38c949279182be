"""QRL (quasimetric RL, Wang et al. 2023): push distances up globally, keep one step <= 1.

On the same quasimetric of state-action pairs x = (s, a) as CMD:
    maximise  E_{x, y random} phi(d(x, y)),  phi(d) = -softplus(offset - d) (beta-soft)
    subject to E_{(x, x') consecutive} relu(d(x, x') - 1)^2 <= eps^2,
by a Lagrangian with lambda = softplus(raw) >= 0 that ascends on the constraint violation.
Random pairs: anchor i against goal pair (g_j, a_gj) for j != i (a dataset state-action pair of
another trajectory segment). Acting as in CMD: argmin_a min_b d((s, a), (g, b)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cmd2 import QuasimetricMethod, quasimetric
from .common import ActionSpec, MethodConfig, sa_cat, softplus_inverse

LAMBDA_LR = 0.01  # the dual variable moves faster than the networks, as in QRL


class QRL(QuasimetricMethod):
    name = "qrl"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        self.qd = quasimetric(self.sa_dim, cfg)
        self.lam_raw = nn.Parameter(torch.tensor(softplus_inverse(1.0)))
        self.optimizer = torch.optim.Adam(
            [
                {"params": [p for n, p in self.named_parameters() if n != "lam_raw"], "lr": cfg.lr},
                {"params": [self.lam_raw], "lr": LAMBDA_LR},
            ]
        )

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        sa = sa_cat(batch["obs"], batch["action"])
        nxt = sa_cat(batch["next_obs"], batch["next_action"])
        ga = sa_cat(batch["goal"], batch["goal_action"]).roll(1, 0)  # another row's goal
        d_global = self.qd(sa, ga)
        d_local = self.qd(sa, nxt)
        global_loss = F.softplus(cfg.qrl_offset - d_global, beta=cfg.qrl_beta).mean()
        violation = (d_local - 1).relu().square().mean() - cfg.qrl_eps**2
        lam = F.softplus(self.lam_raw)
        # primal descends on global + lambda * violation; the dual ascends on violation
        loss = global_loss + lam.detach() * violation - lam * violation.detach()
        self._step(loss + self.behaviour_loss(batch), batch)
        return {
            "qrl_loss": global_loss.item(),
            "violation": violation.item(),
            "lambda": lam.item(),
            "d_global": d_global.mean().item(),
        }
