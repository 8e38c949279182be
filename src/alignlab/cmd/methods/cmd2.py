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
from torch.autograd.function import once_differentiable

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
    ||x - y||^2 = |x|^2 + |y|^2 - 2 x.y; the max-ReLU part by `MaxResidualReLU`, whose gradient
    is the one amax has (a one-hot at the maximising coordinate). Training only: the Gram form
    loses precision near d = 0.
    """
    h = x.shape[-1] // 2
    xs, xa, ys, ya = x[:, :h], x[:, h:], y[:, :h], y[:, h:]
    sq = xs.square().sum(1)[:, None] + ys.square().sum(1)[None, :] - 2 * xs @ ys.T
    sym = sq.clamp(min=1e-12).sqrt()
    return sym + MaxResidualReLU.apply(xa, ya)


class MaxResidualReLU(torch.autograd.Function):
    """ReLU(max_k (xa[i, k] - ya[j, k])) for all pairs: (B, D), (B', D) -> (B, B').

    The values and gradients of the gather form
        k = max_residual(xa, ya)[1];  (xa.gather(1, k) - ya.gather(1, k.T).T).relu()
    bit for bit: the forward is the ReLU of the maximal differences themselves (the same
    subtractions), and the backward runs the ops autograd runs for that form (ReLU's
    threshold_backward on the output, then gather's backward, a scatter_add into zeros with the
    same index and source layouts), without the forward's two gathers and their graph.
    """

    @staticmethod
    def forward(ctx, xa: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        top, k = max_residual(xa, ya)
        out = top.relu()
        ctx.save_for_backward(k, out)
        ctx.shapes = xa.shape, ya.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        k, out = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad, out, 0)
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = g.new_zeros(ctx.shapes[0]).scatter_add_(1, k, g)
        if ctx.needs_input_grad[1]:
            gy = g.new_zeros(ctx.shapes[1]).scatter_add_(1, k.T, g.neg().T)
        return gx, gy


@torch.no_grad()
def max_residual(
    xa: torch.Tensor, ya: torch.Tensor, rows: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """max_k (xa[i, k] - ya[j, k]) and its argmax k*(i, j), the first maximum on ties:
    (B, D), (B', D) -> (B, B') values and int64 indices, exactly what
    `torch.max(xa[:, None] - ya[None], dim=-1)` (or `argmax(-1)`) gives.

    On CPU, argmax (and max with indices) over a short last dimension runs a scalar loop per
    (i, j); the same index comes from vectorised float ops instead. With v_k = xa[i, k] - ya[j, k]
    and m = max_k v_k (one of the v_k), v_k >= m holds exactly where v_k = m, so (v_k >= m) *
    (D - k) is D - k at the maxima and 0 elsewhere, and its max over k is D - k* for the first
    maximising k* (small integers: exact). This needs every v_k finite, which |xa| + |ya| < inf
    guarantees; otherwise (a NaN or an overflow) `torch.max` picks the index, as argmax would
    (the first NaN, else the first maximum). The differences are laid out (D, rows, B'), so
    both maxima over k are elementwise maxima of planes, in blocks of `rows` rows that stay in
    cache: no (B, B', D) tensor.
    """
    n, m, h = xa.shape[0], ya.shape[0], xa.shape[1]
    fast = xa.device.type == "cpu" and xa.dtype in (torch.float32, torch.float64) and n * m * h > 0
    if not (fast and bool(torch.isfinite(xa.abs().amax() + ya.abs().amax()))):
        return torch.max(xa[:, None, :] - ya[None, :, :], dim=-1)
    top = torch.empty(n, m, dtype=xa.dtype)
    index = torch.empty(n, m, dtype=torch.long)
    block = torch.empty(h, min(rows, n), m, dtype=xa.dtype)
    rank = torch.arange(h, 0, -1, dtype=xa.dtype)[:, None, None]  # D - k
    xt, yt = xa.T.contiguous()[:, :, None], ya.T.contiguous()[:, None, :]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        v = torch.sub(xt[:, start:stop], yt, out=block[:, : stop - start])  # (D, rows, B')
        torch.amax(v, 0, out=top[start:stop])
        score = torch.ge(v, top[start:stop], out=v).mul_(rank)
        index[start:stop] = h - score.amax(0)
    return top, index


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
def successor_target(
    critic,
    ga: torch.Tensor,
    goal: torch.Tensor,
    logits: torch.Tensor,
    psi: torch.Tensor | None = None,
):
    """d_target[i, j] = sg[f(g_j, a_gj, g_j) - f(s_i, a_i, g_j)], given logits[i, j] = f(s_i, a_i, g_j).

    The change of variables with the action a_gj recorded at g_j (notes, "Successor distance").
    `psi`, if given, is critic.psi(goal) already computed for the logits (saves a forward pass).
    """
    return critic(ga, goal, psi=psi)[None, :] - logits.detach()


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (n, n) matrix, row by row: m[~eye(n)], as a view.

    Read row-major, the diagonal entries are every (n + 1)-th from the first; dropping the first
    leaves (n - 1) runs of n off-diagonal entries, each followed by a diagonal one. No boolean
    mask, hence no nonzero() and index_put in the backward pass.
    """
    n = m.shape[0]
    return m.reshape(-1)[1:].view(n - 1, n + 1)[:, :n]


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
        psi = self.critic.psi(batch["goal"])  # for the logits and the target
        logits = self.critic.logits(sa, batch["goal"], psi=psi)  # f(s_i, a_i, g_j)
        critic_loss = infonce(logits, self.cfg.infonce)
        target = successor_target(self.critic, ga, batch["goal"], logits, psi)
        d = pairwise(self.qd, sa, ga)
        pos = (d.diagonal() - target.diagonal()).relu().square().mean()
        # contiguous copy before the mean: the same elements in the same order as a boolean
        # mask, m[~eye], gives, so the same sum
        neg = off_diagonal((target - d).relu().square()).contiguous().mean()
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
