"""Quasimetric heads: d(x, y) >= 0, d(x, x) = 0 and d(x, z) <= d(x, y) + d(y, z) by construction.

CMD distils the successor distance d_SD into such a head so that the learned distance obeys
the triangle inequality whatever the weights, which is what gives stitching (CMD notes,
"Quasimetric heads"). `MLPDistance` is the unconstrained ablation that does not.

Every head computes d on broadcastable embeddings, so `forward(x, y)` (paired rows, (B,)) and
`pairwise(x, y)` (row i of x against row j of y, (B, B)) run the same arithmetic. `pairwise`
materialises B x B x D differences: mind memory at large B x D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import mlp


class QuasimetricHead(nn.Module):
    """A distance between embeddings; subclasses define `distance` on broadcastable inputs."""

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(x_i, y_i) for paired rows: (B, D), (B, D) -> (B,)."""
        return self.distance(x, y)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(x_i, y_j) for all pairs: (B, D), (B', D) -> (B, B')."""
        return self.distance(x[:, None], y[None])


class MRN(QuasimetricHead):
    """Metric Residual Network: d = ||x_sym - y_sym||_2 + max_k ReLU(x_asym - y_asym)_k.

    The L2 term is a metric and the max-ReLU term a quasimetric (ReLU(a - c) <= ReLU(a - b) +
    ReLU(b - c)); their sum is a quasimetric. With `n_components` K the embedding is cut into K
    equal chunks, each chunk's first half is its symmetric part and second half its asymmetric
    part, and d is the mean of the K chunk distances; a mean of quasimetrics is a quasimetric
    (the TMD variant uses K = 8; CMD's MRN is K = 1).
    """

    def __init__(self, dim: int, n_components: int = 1):
        super().__init__()
        if dim % (2 * n_components):
            raise ValueError(
                f"MRN needs dim divisible by 2 * n_components, got {dim}, {n_components}"
            )
        self.n_components = n_components

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = (x - y).unflatten(-1, (self.n_components, 2, -1))  # (..., K, sym/asym, D/2K)
        sym = torch.linalg.vector_norm(diff[..., 0, :], dim=-1)
        asym = diff[..., 1, :].amax(dim=-1).relu()  # max_k ReLU(v_k) = ReLU(max_k v_k)
        return (sym + asym).mean(dim=-1)


def interval_union_length(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Total length of the union of intervals [lo_j, hi_j] (lo <= hi) over the last dimension.

    Sort by left end; interval j then adds only the part right of everything before it,
    max(0, hi_j - max(lo_j, R_{j-1})) with R_{j-1} the largest right end so far. Each term is
    one difference of input values, so the result is exact up to a single rounding per term.
    """
    lo, order = lo.sort(dim=-1)
    hi = hi.gather(-1, order)
    reach = hi.cummax(dim=-1).values
    covered = torch.cat([lo[..., :1], reach[..., :-1]], dim=-1)  # nothing before interval 0
    return (hi - torch.maximum(lo, covered)).clamp(min=0).sum(dim=-1)


class IQE(QuasimetricHead):
    """Interval Quasimetric Embedding (Wang & Isola 2022).

    The embedding is cut into dim / component_dim groups of `component_dim` components. Group
    distance: the length of the union over components i of [x_i, max(x_i, y_i)]. Since
    [x_i, z_i] lies inside [x_i, y_i] u [y_i, z_i], each group distance is a quasimetric; the
    output alpha * mean + (1 - alpha) * max over groups, alpha = sigmoid(learned) in [0, 1],
    is a convex combination of quasimetrics, hence one too. CMD notes: 32 groups x 8.
    """

    def __init__(self, dim: int, component_dim: int = 8):
        super().__init__()
        if dim % component_dim:
            raise ValueError(
                f"IQE needs dim divisible by component_dim, got {dim}, {component_dim}"
            )
        self.component_dim = component_dim
        self.alpha_logit = nn.Parameter(torch.zeros(()))  # alpha = 0.5 at the start

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha_logit)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = torch.broadcast_tensors(x, y)
        lo = x.unflatten(-1, (-1, self.component_dim))  # (..., groups, components)
        hi = torch.maximum(lo, y.unflatten(-1, (-1, self.component_dim)))
        groups = interval_union_length(lo, hi)
        return self.alpha * groups.mean(dim=-1) + (1 - self.alpha) * groups.amax(dim=-1)


class MLPDistance(QuasimetricHead):
    """Ablation: softplus(MLP([x, y])) >= 0, with no d(x, x) = 0 and no triangle inequality."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (256, 256), activation: str = "relu"):
        super().__init__()
        self.net = mlp(2 * dim, hidden, 1, activation)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = torch.broadcast_tensors(x, y)
        return F.softplus(self.net(torch.cat([x, y], dim=-1))).squeeze(-1)


HEADS = {"mrn": MRN, "iqe": IQE, "mlp": MLPDistance}


class QuasimetricDistance(nn.Module):
    """d_theta((s, a), (g, a_g)): MLP encoders of [s, a] and of [g, a_g], then a head.

    CMD embeds the goal together with an action (the action recorded at g, or a permuted one)
    so both arguments are state-action pairs and d lives on one space, S x A (CMD notes,
    "Quasimetric heads"). With `share_encoder=True` (needs sa_dim == g_dim) one encoder embeds
    both, so d is a quasimetric on S x A itself: d(x, x) = 0 and the triangle inequality hold
    through any chain of state-action pairs. With two encoders d is a quasimetric only between
    embeddings, and d(x, x) need not be 0.
    """

    def __init__(
        self,
        sa_dim: int,
        g_dim: int,
        embed_dim: int = 64,
        hidden: tuple[int, ...] = (256, 256),
        head: str = "mrn",
        share_encoder: bool = True,
        activation: str = "relu",
        layer_norm: bool = False,
        head_kwargs: dict | None = None,
    ):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown quasimetric head {head!r}; valid heads: {', '.join(HEADS)}")
        if share_encoder and sa_dim != g_dim:
            raise ValueError(
                f"a shared encoder needs sa_dim == g_dim, got {sa_dim} and {g_dim}; "
                "pass share_encoder=False for separate encoders"
            )
        self.sa_encoder = mlp(sa_dim, hidden, embed_dim, activation, layer_norm)
        # No second copy when shared: a module registered twice breaks safetensors checkpoints.
        self.g_encoder = (
            None if share_encoder else mlp(g_dim, hidden, embed_dim, activation, layer_norm)
        )
        self.head = HEADS[head](embed_dim, **(head_kwargs or {}))

    def embed_goal(self, ga: torch.Tensor) -> torch.Tensor:
        return self.sa_encoder(ga) if self.g_encoder is None else self.g_encoder(ga)

    def forward(self, sa: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
        """d(sa_i, ga_i) for paired rows: (B,)."""
        return self.head(self.sa_encoder(sa), self.embed_goal(ga))

    def pairwise(self, sa: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
        """d(sa_i, ga_j) for all pairs: (B, B)."""
        return self.head.pairwise(self.sa_encoder(sa), self.embed_goal(ga))
