"""RL pieces that two or more systems share: episode storage with future-state goal sampling,
target-network updates."""

from .dataset import EpisodeDataset, to_torch
from .polyak import polyak_update

__all__ = ["EpisodeDataset", "polyak_update", "to_torch"]
