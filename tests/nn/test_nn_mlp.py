"""The shared MLP builder."""

import pytest
import torch
from torch import nn

from alignlab.nn import mlp


def test_layers_shapes_and_activation():
    net = mlp(3, (8, 4), 2, activation="swish", layer_norm=True)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.SiLU, nn.Linear, nn.LayerNorm, nn.SiLU, nn.Linear]
    assert net(torch.zeros(5, 3)).shape == (5, 2)


def test_no_hidden_layers_is_one_linear_map():
    net = mlp(3, (), 2)
    assert len(net) == 1 and isinstance(net[0], nn.Linear)


@pytest.mark.parametrize("activation,cls", [("relu", nn.ReLU), ("gelu", nn.GELU)])
def test_named_activations(activation, cls):
    assert isinstance(mlp(2, (4,), 1, activation=activation)[1], cls)


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError, match="relu, swish, gelu"):
        mlp(2, (4,), 1, activation="tanh")
