"""Target networks that trail their online networks (soft updates, as in DQN/SAC critics)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """theta_target <- (1 - tau) theta_target + tau theta_source, in place, parameters and buffers.

    tau = 1 copies the source; tau = 0 leaves the target as it is. Integer buffers (counters)
    are copied, since they cannot be averaged.
    """
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        if t.is_floating_point():
            t.lerp_(s, tau)
        else:
            t.copy_(s)
