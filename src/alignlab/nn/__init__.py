"""Torch modules that two or more systems share: MLPs, the contrastive critic and its losses,
quasimetric heads."""

from .contrastive import ContrastiveCritic
from .infonce import (
    INFONCE_KINDS,
    contrastive_accuracy,
    forward_infonce,
    infonce,
    nce_loss,
    symmetric_infonce,
)
from .mlp import mlp
from .quasimetric import IQE, MRN, MLPDistance, QuasimetricDistance, QuasimetricHead

__all__ = [
    "INFONCE_KINDS",
    "IQE",
    "MLPDistance",
    "MRN",
    "ContrastiveCritic",
    "QuasimetricDistance",
    "QuasimetricHead",
    "contrastive_accuracy",
    "forward_infonce",
    "infonce",
    "mlp",
    "nce_loss",
    "symmetric_infonce",
]
