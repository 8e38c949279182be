"""The contrastive critic: shapes, normalisation, temperature, logit scales, and that it learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.nn import ContrastiveCritic, contrastive_accuracy, symmetric_infonce


def batch(b=6, sa_dim=5, g_dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, sa_dim, generator=gen), torch.randn(b, g_dim, generator=gen)


def test_logits_are_all_pairs_and_forward_is_their_diagonal():
    torch.manual_seed(0)
    critic = ContrastiveCritic(5, 3, repr_dim=16, hidden=(32,))
    sa, g = batch()
    logits = critic.logits(sa, g)
    assert logits.shape == (6, 6)
    assert critic(sa, g).shape == (6,)
    assert torch.allclose(torch.diagonal(logits), critic(sa, g), atol=1e-6)
    assert torch.equal(critic.pairwise(sa, g), logits)
    # Row i is anchor i: its logits only depend on sa_i.
    assert torch.allclose(critic.logits(sa[2:3], g), logits[2:3], atol=1e-6)


@pytest.mark.parametrize("logit_scale", ["sqrt", "dim", "none"])
def test_normalised_logits_are_cosines_over_the_initial_temperature(logit_scale):
    torch.manual_seed(0)
    critic = ContrastiveCritic(5, 3, repr_dim=16, hidden=(32,), logit_scale=logit_scale)
    sa, g = batch()
    cos = F.normalize(critic.phi_net(sa), dim=-1) @ F.normalize(critic.psi_net(g), dim=-1).T
    assert torch.allclose(critic.logits(sa, g), cos / 0.1, atol=1e-5)
    assert critic.temperature.item() == pytest.approx(0.1)
    assert torch.allclose(critic.psi(g).norm(dim=-1), torch.ones(6))
    assert torch.allclose(
        critic.phi(sa).norm(dim=-1), torch.full((6,), 1 / critic.log_tau.exp().item())
    )


@pytest.mark.parametrize("logit_scale,c", [("sqrt", 4.0), ("dim", 16.0), ("none", 1.0)])
def test_unnormalised_logits_divide_by_the_scale(logit_scale, c):
    critic = ContrastiveCritic(
        5, 3, repr_dim=16, hidden=(32,), normalize=False, logit_scale=logit_scale
    )
    sa, g = batch()
    expected = critic.phi_net(sa) @ critic.psi_net(g).T / c
    assert torch.allclose(critic.logits(sa, g), expected, atol=1e-6)


def test_temperature_is_a_parameter_only_when_learned():
    learned = ContrastiveCritic(5, 3, repr_dim=16, hidden=(8,))
    fixed = ContrastiveCritic(5, 3, repr_dim=16, hidden=(8,), learn_temperature=False)
    assert any(p is learned.log_tau for p in learned.parameters())
    assert not any(p is fixed.log_tau for p in fixed.parameters())
    assert "log_tau" in fixed.state_dict()
    assert fixed.log_tau.item() == pytest.approx(math.log(0.1 / 4))


def test_unknown_logit_scale_lists_valid_ones():
    with pytest.raises(ValueError, match="sqrt, dim, none"):
        ContrastiveCritic(5, 3, logit_scale="sqrtd")


def test_critic_learns_to_match_anchors_to_their_goals():
    """A goal that is a fixed function of the anchor: InfoNCE should find it in 200 steps."""
    torch.manual_seed(0)
    critic = ContrastiveCritic(4, 4, repr_dim=16, hidden=(64,))
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    mix = torch.randn(4, 4)
    for _ in range(200):
        sa = torch.randn(64, 4)
        loss = symmetric_infonce(critic.logits(sa, torch.tanh(sa @ mix)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sa = torch.randn(64, 4)
    assert contrastive_accuracy(critic.logits(sa, torch.tanh(sa @ mix))) > 0.5  # chance: 1/64
