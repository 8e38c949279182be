"""MBPO (Janner et al. 2019) as reimplemented in alignlab.copac.mbpo after mbrl-lib's MBPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignlab.copac.mbpo import (
    MBPO,
    GaussianEnsemble,
    MBPOConfig,
    quick_config,
    rollout_horizon,
    run_mbpo,
)
from alignlab.rl.replay import ReplayBuffer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_config(**overrides) -> MBPOConfig:
    """MBPO at toy size: 1 exploration episode, refits every 20 steps."""
    values = dict(
        sac_hidden=16,
        updates_per_step=2,
        rollouts_per_step=8,
        explore_episodes=1,
        ensemble_size=3,
        num_elites=2,
        model_hidden=16,
        model_layers=2,
        freq_train_model=20,
        sac_batch_size=32,
        model_batch_size=32,
        max_model_epochs=20,
    )
    values.update(overrides)
    return quick_config(**values)


def pendulum(steps: int = 40):
    return lambda: gym.make("Pendulum-v1", max_episode_steps=steps)


# ---------------------------------------------------------------------------------------
# configuration and schedule


def test_horizon_schedule():
    assert [rollout_horizon(e) for e in (0, 20, 85, 150)] == [1, 1, 8, 15]
    hs = [rollout_horizon(e, (20, 150, 1, 15)) for e in range(400)]
    assert min(hs) == 1 and max(hs) == 15 and all(a <= b for a, b in zip(hs, hs[1:]))


def test_defaults_are_the_official_coproc_config():
    cfg = MBPOConfig()
    official = dict(
        ensemble_size=7,
        num_elites=5,
        model_hidden=200,
        model_layers=4,
        model_lr=1e-3,
        model_weight_decay=1e-5,
        patience=5,
        freq_train_model=250,
        rollouts_per_step=400,
        rollout_schedule=(20, 150, 1, 15),
        updates_per_step=40,
        sac_hidden=512,
        ent_coef=0.2,
        real_data_ratio=0.0,
        exploration_steps=5000,
        target_update_interval=4,
    )
    assert {k: getattr(cfg, k) for k in official} == official
    q = quick_config()
    assert (q.sac_hidden, q.updates_per_step, q.rollouts_per_step) == (256, 10, 100)
    assert (q.exploration_steps, q.explore_episodes) == (0, 2)
    with pytest.raises(ValueError, match="num_elites"):
        quick_config(ensemble_size=3, num_elites=4)


# ---------------------------------------------------------------------------------------
# the ensemble


def member_loop(model: GaussianEnsemble, x: torch.Tensor, member: int):
    """Member `member` alone on x (B, in), layer by layer with F.linear."""
    h = (x - model.in_mean) / model.in_std
    n = len(model.weights)
    for i in range(n):
        h = F.linear(h, model.weights[i][member].T, model.biases[i][member, 0])
        if i < n - 1:
            h = F.silu(h)
    mean, raw = h[:, : model.out_dim], h[:, model.out_dim :]
    logvar = model.max_logvar - F.softplus(model.max_logvar - raw)
    return mean, model.min_logvar + F.softplus(logvar - model.min_logvar)


def test_batched_forward_equals_member_loop():
    torch.manual_seed(0)
    model = GaussianEnsemble(5, 4, ensemble_size=4, num_elites=2, hidden=32, layers=3)
    model.set_normaliser(np.random.default_rng(0).normal(2.0, 3.0, size=(100, 5)))
    x = torch.randn(4, 17, 5)
    with torch.no_grad():
        mean, logvar = model(x)
        for m in range(4):
            ref_mean, ref_logvar = member_loop(model, x[m], m)
            torch.testing.assert_close(mean[m], ref_mean, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logvar[m], ref_logvar, rtol=1e-5, atol=1e-5)
        # rows dealt to a subset of members, unevenly: row j under members[assignment[j]]
        members = [3, 0, 2]
        rows = torch.randn(23, 5)
        assignment = np.random.default_rng(1).integers(0, 3, size=23)
        assignment[:3] = 0  # at least one group is larger than the others
        mean, logvar = model.forward_assigned(rows, assignment, members)
        for j in range(23):
            ref_mean, ref_logvar = member_loop(model, rows[j : j + 1], members[assignment[j]])
            torch.testing.assert_close(mean[j : j + 1], ref_mean, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logvar[j : j + 1], ref_logvar, rtol=1e-5, atol=1e-5)


def linear_gaussian(rng: np.random.Generator, n: int, noise: float = 0.05):
    """s' - s = A s + B a + noise, r = c.s + d.a + noise (3 states, 2 actions)."""
    a_mat = np.array([[0.1, -0.2, 0.0], [0.3, 0.0, 0.1], [0.0, 0.2, -0.3]])
    b_mat = np.array([[0.5, 0.0], [0.0, -0.4], [0.2, 0.3]])
    c, d = np.array([1.0, -0.5, 0.3]), np.array([0.2, -0.1])
    s = rng.normal(size=(n, 3))
    a = rng.uniform(-1, 1, size=(n, 2))
    delta = s @ a_mat.T + a @ b_mat.T + noise * rng.normal(size=(n, 3))
    r = s @ c + a @ d + noise * rng.normal(size=n)
    inputs = np.concatenate([s, a], 1).astype(np.float32)
    return inputs, np.concatenate([delta, r[:, None]], 1).astype(np.float32)


def test_ensemble_fits_a_linear_gaussian_system():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    inputs, targets = linear_gaussian(rng, 2000)
    model = GaussianEnsemble(5, 4, ensemble_size=3, num_elites=2, hidden=64, layers=2, lr=3e-3)
    fit = model.fit(inputs, targets, rng, batch_size=256, max_epochs=300)
    assert fit.epochs > 5
    x_test, y_test = linear_gaussian(np.random.default_rng(1), 1000)
    x_test = torch.as_tensor(x_test)
    with torch.no_grad():
        mean, logvar = model(x_test.expand(2, *x_test.shape), model.elites)
    y_test = torch.as_tensor(y_test)
    mse = ((mean - y_test) ** 2).mean().item()
    # targets have variance 0.13-1.4 and noise variance 0.0025: the mean is near the noise floor
    assert mse < 2 * 0.0025, mse
    # the predicted noise level is the true one (0.05^2) to within a factor of 3
    var = logvar.exp().mean().item()
    assert 0.0025 / 3 < var < 0.0025 * 3, var


def test_elites_are_the_best_members_by_validation():
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    inputs, targets = linear_gaussian(rng, 600)
    model = GaussianEnsemble(5, 4, ensemble_size=5, num_elites=2, hidden=32, layers=2)
    with torch.no_grad():  # spoil member 1: it can never be an elite after a short fit
        model.weights[-1][1] += 5.0
    fit = model.fit(inputs, targets, rng, batch_size=64, max_epochs=8)
    assert 1 not in fit.elites
    assert fit.elites == list(np.argsort(fit.best_val)[:2]) == model.elites
    # every member was restored to the weights of its best validation MSE
    x_val, y_val = (torch.as_tensor(v[fit.val_idx]) for v in (inputs, targets))
    np.testing.assert_allclose(model.mse(x_val, y_val), fit.best_val, rtol=1e-5)
    assert len(fit.val_idx) == 120 and not set(fit.val_idx) & set(fit.train_idx)


# ---------------------------------------------------------------------------------------
# rollouts and the loop


def test_rollouts_start_from_real_states_and_respect_the_horizon():
    m = MBPO(pendulum(), tiny_config(), seed=5)
    m.run(1)  # the exploration episode
    assert len(m.real) == 40 and not m.refits
    m.fit_model()
    real_obs = {tuple(o) for o in m.real.state()["observations"]}
    data = m.model_rollouts(64, horizon=4)
    assert len(data["rewards"]) == 64 * 4 and data["step"].max() == 3
    assert all(tuple(o) in real_obs for o in data["observations"][data["step"] == 0])
    for rid in range(64):
        mine = data["rollout"] == rid
        assert np.array_equal(data["step"][mine], np.arange(mine.sum()))
        np.testing.assert_array_equal(
            data["observations"][mine][1:], data["next_observations"][mine][:-1]
        )
    # with a termination function a rollout stops at its first terminal step
    m.term_fn = lambda action, next_obs: next_obs[:, 2] > 0.0
    data = m.model_rollouts(64, horizon=5)
    for rid in range(64):
        done = data["dones"][data["rollout"] == rid]
        assert len(done) <= 5 and not done[:-1].any()
        assert done[-1] or len(done) == 5
    # the loop's refits roll out freq_train_model * rollouts_per_step rollouts of horizon h
    m.term_fn = None
    m.run(1)
    assert len(m.refits) == 2 and all(r["horizon"] == 1 for r in m.refits)
    assert len(m.model_buffer) == m.model_buffer_capacity(1) == 2 * 20 * 8  # 2 refits an epoch


def test_model_buffer_resize_keeps_the_newest_transitions_in_order():
    m = MBPO(pendulum(), tiny_config(), seed=0)
    m.model_buffer = ReplayBuffer(5, 3, 1)
    obs = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    m.model_buffer.add(obs, obs, np.zeros((7, 1)), np.arange(7), np.zeros(7))
    m._resize_model_buffer(10)
    assert m.model_buffer.capacity == 10
    np.testing.assert_array_equal(m.model_buffer.state()["rewards"][:, 0], [2, 3, 4, 5, 6])


def test_same_seed_same_returns():
    cfg = tiny_config()

    def run(seed):
        m = MBPO(pendulum(), cfg, seed=seed)
        seen = []
        returns = m.run(3, on_episode_end=lambda i, r: seen.append((i, r)))
        assert seen == list(enumerate(returns))
        assert m.agent.num_updates > 0 and len(m.refits) == 4
        return returns, m.predict(np.zeros((2, 3), dtype=np.float32))

    (r1, a1), (r2, a2), (r3, _) = run(7), run(7), run(8)
    assert r1 == r2 and np.array_equal(a1, a2)
    assert r1 != r3
    assert run_mbpo(pendulum(), cfg, episodes=3, seed=7) == r1
    stop = run_mbpo(pendulum(), cfg, episodes=3, seed=7, on_episode_end=lambda i, r: i < 1)
    assert stop == r1[:2]
