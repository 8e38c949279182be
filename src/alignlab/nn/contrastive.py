"""The contrastive critic f(s, a, g) = phi(s, a)^T psi(g) of contrastive RL (CMD and ESR).

Trained with InfoNCE on future states (`alignlab.nn.infonce`), f approximates
log p_gamma(s+ = g | s, a) / p(g) up to a normaliser (CMD notes, "Successor distance").

Logit scale. The B x B logit matrix is phi psi^T / c with
  c = sqrt(repr_dim)  ("sqrt", CMD's convention),
  c = repr_dim        ("dim", ESR's convention: <phi, psi> / repr_dim / temp),
  c = 1               ("none").
The two papers differ here; do not mix them (CMD notes, Pitfalls).

Normalisation and temperature. With `normalize=True`, phi and psi are L2-normalised and phi
is divided by a temperature tau = exp(log_tau), so logits = cos(phi, psi) / (tau * c). Left at
tau = 1 the logits would lie in [-1/c, 1/c] (+-0.125 for CMD's d = 64): far too flat for a
softmax over a batch, and at CMD's learning rate (1e-5) log_tau would need ~10^5 steps to
recover. So tau starts at `init_temperature / c`: the effective temperature on the cosine
similarity, tau * c, starts at `init_temperature` (0.1: positives can beat B - 1 negatives by
up to 10 nats > log 1024) whatever the logit scale. With a learned temperature the scale c
is then only a reparametrisation of log_tau; it changes the critic only when
`normalize=False` (ESR's default), where phi and psi are raw and no temperature is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import mlp

LOGIT_SCALES = ("sqrt", "dim", "none")


def logit_divisor(repr_dim: int, logit_scale: str) -> float:
    """c in logits = phi psi^T / c: sqrt(d) (CMD), d (ESR) or 1."""
    if logit_scale not in LOGIT_SCALES:
        raise ValueError(
            f"unknown logit_scale {logit_scale!r}; valid scales: {', '.join(LOGIT_SCALES)}"
        )
    return {"sqrt": math.sqrt(repr_dim), "dim": float(repr_dim), "none": 1.0}[logit_scale]


class ContrastiveCritic(nn.Module):
    """f(s, a, g) = phi(s, a)^T psi(g) / c, with phi and psi MLPs (CMD notes, "Contrastive critic").

    `sa` is the concatenation [s, a] (ESR: [s, a_R, a_H]); `g` is a goal (a future state).
    `forward(sa, g)` gives f on paired rows (B,); `logits(sa, g)` the (B, B) matrix of f for
    every anchor i (row) against every goal j (column), whose diagonal holds the positives.
    """

    def __init__(
        self,
        sa_dim: int,
        g_dim: int,
        repr_dim: int = 64,
        hidden: tuple[int, ...] = (256, 256),
        normalize: bool = True,
        learn_temperature: bool = True,
        logit_scale: str = "sqrt",
        init_temperature: float = 0.1,
        activation: str = "relu",
        layer_norm: bool = False,
    ):
        super().__init__()
        self.repr_dim = repr_dim
        self.normalize = normalize
        self.logit_scale = logit_scale
        self.c = logit_divisor(repr_dim, logit_scale)
        self.phi_net = mlp(sa_dim, hidden, repr_dim, activation, layer_norm)
        self.psi_net = mlp(g_dim, hidden, repr_dim, activation, layer_norm)
        # tau * c = init_temperature at the start (module docstring); used only when normalising.
        log_tau = torch.tensor(math.log(init_temperature / self.c))
        if learn_temperature:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    @property
    def temperature(self) -> torch.Tensor:
        """The effective temperature on cos(phi, psi), tau * c (meaningful when normalising)."""
        return self.log_tau.detach().exp() * self.c

    def phi(self, sa: torch.Tensor) -> torch.Tensor:
        """phi(s, a): (B, repr_dim); unit norm divided by tau when normalising."""
        phi = self.phi_net(sa)
        if self.normalize:
            phi = F.normalize(phi, dim=-1) / self.log_tau.exp()
        return phi

    def psi(self, g: torch.Tensor) -> torch.Tensor:
        """psi(g): (B, repr_dim); unit norm when normalising."""
        psi = self.psi_net(g)
        return F.normalize(psi, dim=-1) if self.normalize else psi

    def logits(
        self, sa: torch.Tensor, g: torch.Tensor, psi: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, B) with entry [i, j] = f(sa_i, g_j) = phi(sa_i)^T psi(g_j) / c; `psi`, if given,
        is psi(g) already computed (a caller that needs it too saves a forward pass)."""
        return self.phi(sa) @ (self.psi(g) if psi is None else psi).T / self.c

    # Named like the quasimetric heads: `pairwise` is the all-pairs matrix, `forward` the paired rows.
    pairwise = logits

    def forward(
        self, sa: torch.Tensor, g: torch.Tensor, psi: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f(sa_i, g_i) for paired rows: (B,), the diagonal of `logits(sa, g)`; `psi` as there."""
        return (self.phi(sa) * (self.psi(g) if psi is None else psi)).sum(-1) / self.c
