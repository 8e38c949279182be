"""CMD-2: contrastive critic, then distil its successor distance into a quasimetric.

Step 1 (CMD notes, "Contrastive critic"): f(s, a, g) = phi(s, a)^T psi(g) / sqrt(d), trained
with symmetric InfoNCE on anchors (s, a) and their future states g.
Step 2 (notes, "CMD-2"): over the whole B x B batch, the change-of-variables target
    d_target[i, j] = sg[f(g_j, a_gj, g_j) - f(s_i, a_i, g_j)]
and the quasimetric d_theta((s_i, a_i), (g_j, a_gj)) is fitted with
    pos = mean_i max(0, d_theta[i, i] - d_target[i, i])^2          (diagonal hinge)
    neg = mean_{i != j} max(0, d_target[i, j] - d_theta[i, j])^2   (off-diagonal hinge)
    loss = pos + neg / lambda + lambda (margin - sg(pos)),   lambda = softplus(raw) + 0.01.
Acting: a = argmin_a min_b d_theta((s, a), (g, b)) over the candidate actions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.nn import MRN, ContrastiveCritic, QuasimetricDistance, contrastive_accuracy, infonce

from .common import ActionSpec, Method, MethodConfig, sa_cat, softplus_inverse


def quasimetric(sa_dim: int, cfg: MethodConfig) -> QuasimetricDistance:
    """d_theta on state-action pairs, one shared encoder (a quasimetric on S x A)."""
    kwargs = {"mrn": {"n_components": cfg.mrn_components}, "mlp": {"hidden": cfg.hidden}}.get(
        cfg.head
    )
    return QuasimetricDistance(
        sa_dim, sa_dim, cfg.repr_dim, cfg.hidden, cfg.head, True, cfg.activation, head_kwargs=kwargs
    )


def mrn_pairwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MRN d(x_i, y_j) for all pairs (one component), without the (B, B, D) autograd graph.

    Same value as `MRN.pairwise` (up to rounding): the L2 part from the Gram matrix,
    ||x - y||^2 = |x|^2 + |y|^2 - 2 x.y; the max-ReLU part by finding the maximising coordinate
    k*(i, j) without gradients, then gathering x[i, k*] - y[j, k*], whose gradient is the one
    amax has (a one-hot at k*). Training only: the Gram form loses precision near d = 0.
    """
    h = x.shape[-1] // 2
    xs, xa, ys, ya = x[:, :h], x[:, h:], y[:, :h], y[:, h:]
    sq = xs.square().sum(1)[:, None] + ys.square().sum(1)[None, :] - 2 * xs @ ys.T
    sym = sq.clamp(min=1e-12).sqrt()
    with torch.no_grad():
        k = (xa[:, None, :] - ya[None, :, :]).argmax(-1)  # (B, B')
    asym = (xa.gather(1, k) - ya.gather(1, k.T).T).relu()
    return sym + asym


def pairwise(qd: QuasimetricDistance, sa: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
    """qd.pairwise(sa, ga), by `mrn_pairwise` for a one-component MRN head (training speed)."""
    if isinstance(qd.head, MRN) and qd.head.n_components == 1:
        return mrn_pairwise(qd.sa_encoder(sa), qd.embed_goal(ga))
    return qd.pairwise(sa, ga)


def distance_score(qd: QuasimetricDistance, obs, cand, goal) -> torch.Tensor:
    """-min_b d((s, a_k), (g, b)): (B, K); the goal's action is free (reach g, then anything)."""
    x = qd.sa_encoder(Method.tile_sa(obs, cand))  # (B, K, D)
    y = qd.embed_goal(Method.tile_sa(goal, cand))  # (B, K', D)
    d = qd.head.distance(x[:, :, None], y[:, None])  # (B, K, K')
    return -d.amin(dim=2)


@torch.no_grad()
def successor_target(critic, ga: torch.Tensor, goal: torch.Tensor, logits: torch.Tensor):
    """d_target[i, j] = sg[f(g_j, a_gj, g_j) - f(s_i, a_i, g_j)], given logits[i, j] = f(s_i, a_i, g_j).

    The change of variables with the action a_gj recorded at g_j (notes, "Successor distance").
    """
    return critic(ga, goal)[None, :] - logits.detach()


class QuasimetricMethod(Method):
    """A method that acts by a quasimetric `self.qd` on state-action pairs (CMD-2, CMD-1, QRL):
    its value is -d, its scores `distance_score`."""

    qd: QuasimetricDistance

    def value(self, obs, action, goal, goal_action):
        return -self.qd(sa_cat(obs, action), sa_cat(goal, goal_action))

    def score(self, obs, cand, goal):
        return distance_score(self.qd, obs, cand, goal)

    @torch.no_grad()
    def distance(self, sa: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
        """d_theta(sa_i, ga_j) for all pairs, (B, B')."""
        return self.qd.pairwise(sa, ga)


class CMD2(QuasimetricMethod):
    name = "cmd2"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__(obs_dim, act_spec, cfg)
        self.critic = ContrastiveCritic(
            self.sa_dim, obs_dim, cfg.repr_dim, cfg.hidden, activation=cfg.activation
        )
        self.qd = quasimetric(self.sa_dim, cfg)
        self.lam_raw = nn.Parameter(torch.tensor(softplus_inverse(cfg.lam_init - 0.01)))
        self._make_optimizer()

    @property
    def lam(self) -> torch.Tensor:
        return F.softplus(self.lam_raw) + 0.01

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        sa = sa_cat(batch["obs"], batch["action"])
        ga = sa_cat(batch["goal"], batch["goal_action"])
        logits = self.critic.logits(sa, batch["goal"])  # f(s_i, a_i, g_j)
        critic_loss = infonce(logits, self.cfg.infonce)
        target = successor_target(self.critic, ga, batch["goal"], logits)
        d = pairwise(self.qd, sa, ga)
        off = ~torch.eye(len(d), dtype=torch.bool)
        pos = (d.diagonal() - target.diagonal()).relu().square().mean()
        neg = (target - d).relu().square()[off].mean()
        lam = self.lam
        distill_loss = pos + neg / lam + lam * (self.cfg.margin - pos.detach())
        self._step(critic_loss + distill_loss + self.behaviour_loss(batch), batch)
        return {
            "critic_loss": critic_loss.item(),
            "distill_loss": distill_loss.item(),
            "pos": pos.item(),
            "neg": neg.item(),
            "lambda": lam.item(),
            "accuracy": contrastive_accuracy(logits).item(),
        }
