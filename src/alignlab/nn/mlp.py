"""The multilayer perceptron every system builds its encoders, critics and actors from."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU}


def mlp(
    in_dim: int,
    hidden: tuple[int, ...],
    out_dim: int,
    activation: str = "relu",
    layer_norm: bool = False,
) -> nn.Sequential:
    """Linear -> [LayerNorm] -> activation for each hidden width, then a linear output layer.

    `hidden=()` gives a single linear map. The output layer has no activation, so the caller
    decides what the outputs mean (logits, embeddings, means).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATIONS)}"
        )
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))  # before the nonlinearity, as in the TMD/CMD agents
        layers.append(ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
