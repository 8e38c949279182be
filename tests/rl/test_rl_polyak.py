"""Soft target updates."""

import torch
from torch import nn

from alignlab.rl import polyak_update


def nets():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    source(torch.randn(5, 3))  # move the running statistics
    return target, source


def test_polyak_interpolates_parameters_and_float_buffers():
    target, source = nets()
    before = [t.clone() for t in target.state_dict().values()]
    polyak_update(target, source, 0.25)
    for old, new, src, key in zip(
        before, target.state_dict().values(), source.state_dict().values(), target.state_dict()
    ):
        if key.endswith("num_batches_tracked"):
            assert new == src  # integer counters are copied
        else:
            assert torch.allclose(new, 0.75 * old + 0.25 * src)
    assert not any(p.grad is not None for p in target.parameters())


def test_tau_one_copies_and_tau_zero_keeps():
    target, source = nets()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    polyak_update(target, source, 0.0)
    floats = {k: v for k, v in target.state_dict().items() if v.is_floating_point()}
    assert floats and all(torch.equal(v, before[k]) for k, v in floats.items())
    polyak_update(target, source, 1.0)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
