"""The SAC brain (lesion, stimulation), the patient env and CopAC's parts, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from alignlab.copac.brain import SACBrain, load_brain
from alignlab.copac.copac import CopAC, CopACConfig, StopRule, fit, grid, qmax
from alignlab.copac.envs import make_world
from alignlab.copac.patient import Evaluator, PatientEnv
from alignlab.core.errors import AlignlabError
from alignlab.rl.sac import SAC, SACConfig


def sac(obs_dim=10, act_dim=2, hidden=(32, 32), seed=0) -> SAC:
    torch.manual_seed(seed)
    return SAC(obs_dim, act_dim, SACConfig(net_arch=hidden))


@pytest.fixture(scope="module")
def reacher_sac():
    return sac()


# -- the brain ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_lesion_zeroes_exactly_round_p_1024_weights(reacher_sac, p):
    w0 = reacher_sac.actor.latent_pi[2].weight.detach().clone()
    assert (w0 != 0).all()
    b = SACBrain(reacher_sac.actor, p=p, injury_seed=7)
    w = b.actor.latent_pi[2].weight
    assert int((w == 0).sum()) == round(p * 1024)
    kept = w != 0
    assert torch.equal(w[kept], w0[kept])  # nothing else changes
    again = SACBrain(reacher_sac.actor, p=p, injury_seed=7).actor.latent_pi[2].weight
    assert torch.equal(w, again)  # fixed by the seed
    if 0 < p < 1:
        other = SACBrain(reacher_sac.actor, p=p, injury_seed=8).actor.latent_pi[2].weight
        assert not torch.equal(w == 0, other == 0)
    # the healthy actor is untouched
    assert torch.equal(reacher_sac.actor.latent_pi[2].weight, w0)


def test_healthy_brain_without_stimulation_is_the_actor_bit_for_bit(reacher_sac):
    b = SACBrain(reacher_sac.actor, p=0.0, stim_dim=2)
    s = torch.randn(64, 10)
    with torch.no_grad():
        ref = reacher_sac.actor.deterministic(s)
    assert torch.equal(b.act(s, torch.zeros(64, 2)), ref)
    assert torch.equal(b.act(s, None), ref)


def test_stimulation_adds_w_mu_columns_before_the_tanh(reacher_sac):
    b = SACBrain(reacher_sac.actor, p=0.5, stim_dim=3, stim_seed=4)
    assert list(b.units) == sorted(b.units) and len(set(b.units)) == 3
    s = torch.randn(16, 10, dtype=torch.float64)
    x = torch.rand(16, 3, dtype=torch.float64) * 2 - 1  # small enough that tanh does not saturate
    b = b.double()
    lhs = torch.atanh(b.act(s, x)) - torch.atanh(b.act(s, torch.zeros_like(x)))
    w_mu = b.actor.mu.weight[:, torch.as_tensor(b.units)]
    assert torch.allclose(lhs, x @ w_mu.T, atol=1e-9)


def test_brain_rejects_bad_lesion_and_channels(reacher_sac):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        SACBrain(reacher_sac.actor, p=1.5)
    with pytest.raises(ValueError, match=r"stim_dim must be in \[1, 32\]"):
        SACBrain(reacher_sac.actor, stim_dim=33)
    with pytest.raises(ValueError, match=r"stim_dim must be in \[1, 32\]"):
        SACBrain(reacher_sac.actor, stim_dim=0)


def test_corrupt_cached_brain_names_its_path(tmp_path):
    from alignlab.copac.brain import BrainTraining

    (tmp_path / "brain.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "brain.json").write_text(json.dumps({}))
    with pytest.raises(AlignlabError, match=str(tmp_path / "brain.safetensors")):
        load_brain(tmp_path, "Pendulum-v1", BrainTraining(hidden=(8, 8)))


def test_unknown_world_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid worlds: Pendulum-v1, Reacher-v5"):
        make_world("CartPole-v1")


# -- the patient env ----------------------------------------------------------------------


def test_patient_env_passes_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    s = sac(3, 1, (8, 8))
    env = PatientEnv("Pendulum-v1", SACBrain(s.actor, p=0.5, stim_dim=2))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    _, _, _, _, info = env.step(np.array([5.0, -5.0], np.float32))
    a = SACBrain(s.actor, p=0.5, stim_dim=2).act(
        torch.as_tensor(obs)[None], torch.tensor([[5.0, -5.0]])
    )
    assert np.array_equal(info["world_action"], a[0].numpy())


def test_tester_matches_one_episode_at_a_time():
    s = sac(3, 1, (8, 8))
    brain = SACBrain(s.actor, p=0.5, stim_dim=2)
    pol = lambda st: torch.tanh(st[:, :2]) * 5  # noqa: E731
    batched = Evaluator("Pendulum-v1", brain, [3, 4, 5])(pol)
    for seed, ret in zip([3, 4, 5], batched):
        env = PatientEnv("Pendulum-v1", brain)
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            x = pol(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            obs, r, term, trunc, _ = env.step(x)
            total, done = total + r, term or trunc
        assert ret == pytest.approx(total, rel=1e-7)  # batched matmuls round differently


# -- CopAC's parts ------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """Q(s, a) = -(a - c(s))^2 summed: a known maximiser, for the argmax tests."""

    def forward(self, obs, action):
        q = -((action - torch.tanh(obs[:, : action.shape[1]])) ** 2).sum(1, keepdim=True)
        return q, q + 0.1

    def q_min(self, obs, action):
        q1, q2 = self(obs, action)
        return torch.minimum(q1, q2)[:, 0]


def test_grid_covers_the_box_in_order():
    g = grid(5, 2)
    assert g.shape == (25, 2)
    assert torch.equal(g[0], torch.tensor([-5.0, -5.0])) and torch.equal(
        g[-1], torch.tensor([5.0, 5.0])
    )
    assert torch.equal(g[1], torch.tensor([-5.0, -2.5]))  # the last dimension fastest


def test_batched_argmax_equals_a_brute_force_loop():
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2), nn.Tanh())
    model = lambda s, x: f(torch.cat([s, x], 1))  # noqa: E731
    critic = LinearCritic()
    obs = torch.randn(7, 3)
    cands = grid(11, 2)
    got = qmax(critic, model, obs, cands, chunk=50)  # chunked over states
    for i in range(len(obs)):
        best, best_q = None, -float("inf")
        for c in cands:
            q = float(critic.q_min(obs[i : i + 1], model(obs[i : i + 1], c[None])))
            if q > best_q:
                best, best_q = c, q
        assert torch.equal(got[i], best)


def test_stop_rule_on_a_scripted_loss_sequence():
    rule = StopRule(every=10, min_drop=1e-3)
    # epoch 0: drop 10000 - 1.0 -> keep going; epochs 1-10 drop 0.05 each -> mean 0.05, keep;
    # epochs 11-20 drop 1e-4 each -> mean 1e-4 < 1e-3: stop at epoch 20
    losses = [1.0] + [1.0 - 0.05 * i for i in range(1, 11)] + [0.5 - 1e-4 * i for i in range(1, 11)]
    stops = [rule(e, loss) for e, loss in enumerate(losses)]
    assert stops.index(True) == 20 and not any(stops[:20])
    # a loss that rises stops at the first check after it
    rule = StopRule(every=10, min_drop=1e-3)
    assert not rule(0, 5.0)
    assert [rule(e, 5.0 + e) for e in range(1, 11)][-1] is True


def test_fit_recovers_a_known_tanh_affine_map():
    """f learns a = tanh(A s + B x + c) from 600 samples (the SAC brain's form)."""
    g = torch.Generator().manual_seed(0)
    a_mat, b_mat = torch.randn(2, 4, generator=g) * 0.5, torch.randn(2, 2, generator=g) * 0.2
    s = torch.randn(600, 4, generator=g)
    x = torch.rand(600, 2, generator=g) * 10 - 5
    a = torch.tanh(s @ a_mat.T + x @ b_mat.T + 0.1)
    from alignlab.copac.copac import ActionNet

    torch.manual_seed(0)
    f = ActionNet(4, 2, 2)
    before = float(nn.functional.mse_loss(f(s, x), a))
    fit(
        lambda b: nn.functional.mse_loss(f(b[0], b[1]), b[2]),
        f.parameters(),
        (s, x, a),
        lr=5e-3,
        epochs=300,
        batch_size=64,
        gen=g,
        stop=StopRule(10, 1e-7),
    )
    s2, x2 = torch.randn(200, 4, generator=g), torch.rand(200, 2, generator=g) * 10 - 5
    after = float(nn.functional.mse_loss(f(s2, x2), torch.tanh(s2 @ a_mat.T + x2 @ b_mat.T + 0.1)))
    assert after < 0.01 < before


def test_td_target_on_a_hand_made_buffer():
    critic = LinearCritic()
    brain = SACBrain(sac(3, 2, (8, 8)).actor, p=0.0, stim_dim=2)
    learner = CopAC(
        "copac",
        CopACConfig(disc_act=5, disc_td=3, gamma=0.9),
        obs_dim=3,
        action_dim=2,
        stim_dim=2,
        critic=critic,
        brain=brain,
        seed=0,
    )
    nxt = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]])
    rew = torch.tensor([1.0, -2.0])
    nstim = torch.tensor([[5.0, -5.0], [0.0, 0.0]])
    done = torch.zeros(2)
    with torch.no_grad():
        a = learner.f(nxt, nstim)
        c = torch.tanh(nxt[:, :2])
        q = -((a - c) ** 2).sum(1)  # min(Q1, Q1 + 0.1) = Q1
    expect = rew + 0.9 * q
    assert torch.allclose(learner.td_target(nxt, rew, nstim, done), expect)
    # with a done mask the target of a terminal step is its reward
    learner.cfg.done_mask = True
    got = learner.td_target(nxt, rew, nstim, torch.tensor([1.0, 0.0]))
    assert got[0] == rew[0] and torch.allclose(got[1], expect[1])


def test_true_f_acts_by_qmax_through_the_real_brain():
    brain = SACBrain(sac(3, 2, (8, 8)).actor, p=0.5, stim_dim=2)
    learner = CopAC(
        "true_f",
        CopACConfig(disc_act=7, disc_td=3),
        obs_dim=3,
        action_dim=2,
        stim_dim=2,
        critic=LinearCritic(),
        brain=brain,
        seed=0,
    )
    s = torch.randn(4, 3)
    x = learner.select(s)
    cands = grid(7, 2)
    for i in range(4):
        q = LinearCritic().q_min(
            s[i : i + 1].expand(49, -1), brain.act(s[i : i + 1].expand(49, -1), cands)
        )
        assert torch.equal(x[i], cands[q.argmax()])


def test_copac_rejects_bad_methods_and_grids():
    brain = SACBrain(sac(3, 2, (8, 8)).actor, stim_dim=2)
    kw = dict(obs_dim=3, action_dim=2, stim_dim=2, critic=LinearCritic(), brain=brain)
    with pytest.raises(ValueError, match="valid methods: copac, copac_noq"):
        CopAC("ppo", CopACConfig(), **kw)
    with pytest.raises(ValueError, match="over the limit of 1,000,000"):
        CopAC("copac", CopACConfig(disc_act=1001), **kw)
