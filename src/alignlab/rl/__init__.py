"""RL pieces that two or more systems share: episode storage with future-state goal sampling,
target-network updates, a transition replay buffer and Soft Actor-Critic."""

from .dataset import EpisodeDataset, to_torch
from .polyak import polyak_update
from .replay import ReplayBatch, ReplayBuffer
from .sac import SAC, SACConfig

__all__ = [
    "EpisodeDataset",
    "ReplayBatch",
    "ReplayBuffer",
    "SAC",
    "SACConfig",
    "polyak_update",
    "to_torch",
]
