"""The Michaels brain (alignlab.copac.michaels): dynamics, wiring, lesion, stimulation, DAgger."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from alignlab.copac.michaels import (
    MichaelsBrain,
    _unscale,
    evaluate,
    gaussian_stim_kernel,
    pendulum_swingup_teacher,
    reacher_pd_teacher,
    retanh,
    run_episodes,
    train_dagger,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet_brain(**kw) -> MichaelsBrain:
    """A brain whose recurrent weights, inputs, biases and x0 are all zero (stimulation only)."""
    brain = MichaelsBrain(**kw)
    with torch.no_grad():
        for p in (brain.J, brain.I, brain.b, brain.x0):
            p.zero_()
    return brain


# ------------------------------------------------------------------------------ stimulation
def test_kernel_rows_sum_to_one_and_are_centred():
    for n, k, sigma in [(32, 2, 0.1), (32, 5, 1.5), (100, 3, 2.0), (10, 1, 0.5)]:
        K = gaussian_stim_kernel(n, k, sigma).double()
        assert K.shape == (k, n)
        assert torch.allclose(K.sum(1), torch.ones(k, dtype=torch.float64), atol=1e-6)
        assert (K >= 0).all()
        centres = n * torch.arange(1, k + 1, dtype=torch.float64) / (k + 1)
        # the weight peaks at the neuron nearest the centre n j / (k + 1)
        assert torch.equal(K.argmax(1), torch.round(centres).long())
    # integer centres, kernel far from the edges: the weighted mean position is the centre
    K = gaussian_stim_kernel(100, 3, 2.0).double()
    mean_pos = K @ torch.arange(100, dtype=torch.float64)
    assert torch.allclose(mean_pos, torch.tensor([25.0, 50.0, 75.0], dtype=torch.float64))


def test_sigma_is_in_neuron_units_and_0_1_drives_one_neuron_per_channel():
    K = gaussian_stim_kernel(32, 2)  # the default sigma = 0.1 (setup_brain.DEFAULT_STIM_SIGMA)
    assert K[0].argmax() == 11 and K[1].argmax() == 21  # centres 10.67 and 21.33
    assert (K.max(1).values > 0.99).all()
    # pdf(d) / pdf(0) = exp(-d^2 / (2 sigma^2)): neighbours 1 neuron apart at sigma = 1
    K1 = gaussian_stim_kernel(99, 2, 1.0).double()  # centres 33 and 66, exact integers
    assert math.isclose(K1[0, 34] / K1[0, 33], math.exp(-0.5), rel_tol=1e-6)
    # a half-integer centre is split evenly between its two neighbours
    K2 = gaussian_stim_kernel(3, 1, 0.1)
    assert torch.allclose(K2[0, 1:], torch.tensor([0.5, 0.5]), atol=1e-6)
    with pytest.raises(ValueError):
        gaussian_stim_kernel(4, 4)


@pytest.mark.parametrize("temporal, expected_c2", [(False, 0.0), (True, 0.7)])
def test_stimulation_decay_one_vs_0_3_by_hand(temporal, expected_c2):
    """Tick 1 stimulates channel 0 with 1, tick 2 gives no stimulation.

    With J = I = b = x0 = 0: c1 = 1 on the stimulated neuron, x1 = c1 / 10 = 0.1.
    decay 1 (pulse):   c2 = 0,                       x2 = 0.1 + (0 - 0.1) / 10 = 0.09.
    decay 0.3:         c2 = 0 + (1 - 0.3) * 1 = 0.7, x2 = 0.1 + (0.7 - 0.1) / 10 = 0.16.
    """
    brain = quiet_brain(obs_dim=1, action_dim=1, stim_dim=1, n=5, temporal=temporal)
    j = 2  # n = 5, k = 1: centre 5 * 1 / 2 = 2.5 -> split 0.5 / 0.5 between neurons 2 and 3
    w = float(brain.stim_kernel[0, j])
    assert w == pytest.approx(0.5, abs=1e-6)
    obs = torch.zeros(1, 1)
    brain.reset(1)
    brain.act(obs, torch.tensor([[1.0]]))
    assert brain.state.c[0, j].item() == pytest.approx(w)
    assert brain.state.x[0, j].item() == pytest.approx(0.1 * w)
    brain.act(obs, None)
    c2 = expected_c2 * w
    assert brain.state.c[0, j].item() == pytest.approx(c2)
    assert brain.state.x[0, j].item() == pytest.approx(0.1 * w + (c2 - 0.1 * w) / 10)
    # the current reaches M1 only
    assert torch.all(brain.state.x[0, 5:] == 0)
    if temporal:
        assert brain.stim_decay == 0.3
        brain.act(obs, None)  # c3 = 0.7 * c2
        assert brain.state.c[0, j].item() == pytest.approx(0.7 * c2)


def test_stim_none_equals_zero_stim_and_stimulation_moves_the_action():
    brain = MichaelsBrain(obs_dim=3, action_dim=2, stim_dim=2, n=16, seed=3)
    obs = torch.randn(6, 4, 3)
    a_none = brain.rollout(obs)
    a_zero = brain.rollout(obs, torch.zeros(6, 4, 2))
    a_stim = brain.rollout(obs, torch.full((6, 4, 2), 5.0))
    assert torch.allclose(a_none, a_zero, atol=1e-7)
    assert not torch.allclose(a_none, a_stim, atol=1e-4)


# ---------------------------------------------------------------------------------- dynamics
def test_one_tick_matches_the_formula_by_hand():
    n, d = 2, 1
    brain = MichaelsBrain(obs_dim=d, action_dim=1, stim_dim=1, n=n, seed=0, head_hidden=())
    N = 3 * n
    assert torch.equal(brain.J_mask, torch.block_diag(*[torch.ones(n, n)] * 3))  # int(0.4) = 0
    with torch.no_grad():
        brain.J.copy_(torch.arange(N * N, dtype=torch.float32).reshape(N, N) / 50 - 0.3)
        brain.J.mul_(brain.J_mask)
        brain.I.copy_(torch.tensor([[0.0], [0.0], [0.0], [0.0], [1.5], [-2.0]]))
        brain.b.copy_(torch.tensor([0.2, -0.1, 0.3, 0.0, -0.4, 0.5]))
        brain.x0.copy_(torch.tensor([0.5, -1.0, 2.0, 0.1, 0.0, 0.3]))
    J, Iw, b, x0 = (p.detach().double().numpy() for p in (brain.J, brain.I, brain.b, brain.x0))
    u, s = np.array([0.7]), np.array([-2.0])
    K = brain.stim_kernel.double().numpy()  # (1, 2): centre 1.0 -> neuron 1
    r0 = np.tanh(np.maximum(x0, 0.0))
    stim = np.concatenate([K.T @ s, np.zeros(2 * n)])
    x1 = x0 + (-x0 + J @ r0 + Iw @ u + b + stim) / 10.0
    r1 = np.tanh(np.maximum(x1, 0.0))
    W, c = brain.readout.weight.detach().double().numpy(), brain.readout.bias.detach().numpy()
    Wh, ch = brain.head[0].weight.detach().double().numpy(), brain.head[0].bias.detach().numpy()
    a1 = np.tanh(Wh @ (W @ r1[:n] + c) + ch)

    brain.reset(1)
    a = brain.act(torch.tensor(u[None], dtype=torch.float32), torch.tensor(s[None]).float())
    np.testing.assert_allclose(brain.state.x[0].double().numpy(), x1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(brain.state.r[0].double().numpy(), r1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[0].double().numpy(), a1, rtol=1e-5, atol=1e-6)
    assert torch.equal(
        retanh(torch.tensor([-1.0, 0.0, 2.0])), torch.tanh(torch.tensor([0, 0, 2.0]))
    )


def test_rollout_equals_repeated_act_and_is_differentiable():
    brain = MichaelsBrain(obs_dim=5, action_dim=2, stim_dim=3, n=16, seed=1, temporal=True)
    brain.lesion(0.25, np.random.default_rng(0))
    obs, stim = torch.randn(7, 4, 5), torch.randn(7, 4, 3)
    rolled = brain.rollout(obs, stim)
    brain.reset(4)
    stepped = torch.stack([brain.act(obs[t], stim[t]) for t in range(7)])
    assert rolled.shape == (7, 4, 2)
    assert torch.allclose(rolled, stepped, atol=1e-6)
    assert rolled.abs().max() <= 1.0
    rolled.sum().backward()
    assert brain.J.grad is not None and brain.J.grad.abs().sum() > 0


def test_wiring_input_to_aip_readout_from_m1_and_sparse_inter_module_blocks():
    n = 32
    brain = MichaelsBrain(obs_dim=4, action_dim=2, stim_dim=2, n=n, seed=0)
    M = brain.J_mask

    def block(o, i):
        return M[o * n : (o + 1) * n, i * n : (i + 1) * n]

    for m in range(3):
        assert block(m, m).all()
    for o, i in [(1, 0), (0, 1), (2, 1), (1, 2)]:  # M1<->F5, F5<->AIP
        assert int(block(o, i).sum()) == int(0.1 * n * n)
    assert block(0, 2).sum() == 0 and block(2, 0).sum() == 0  # no M1<->AIP
    assert torch.all(brain.J[M == 0] == 0)
    assert torch.all(brain.I[: 2 * n] == 0) and torch.all(brain.I[2 * n :] != 0)
    # input reaches M1 two ticks later (AIP -> F5 -> M1), not before
    brain.reset(2)
    obs = torch.zeros(2, 4)
    obs[1] = 3.0
    for t in range(3):
        brain.act(obs)
        x = brain.state.x
        diff = (x[0] - x[1]).abs()
        assert diff[2 * n :].max() > 0
        assert (diff[n : 2 * n].max() > 0) == (t >= 1)
        assert (diff[:n].max() > 0) == (t >= 2)
    # the action depends on M1's rates only
    s = brain.initial_state(1)
    s2 = type(s)(s.x, s.r.clone(), s.c)
    s2.r[:, n:] += 1.0
    assert torch.equal(brain.action_from(s), brain.action_from(s2))


def test_same_seed_same_brain_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = MichaelsBrain(obs_dim=6, action_dim=2, stim_dim=2, n=16, seed=7)
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = MichaelsBrain(obs_dim=6, action_dim=2, stim_dim=2, n=16, seed=7)
    c = MichaelsBrain(obs_dim=6, action_dim=2, stim_dim=2, n=16, seed=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["J"], c.state_dict()["J"])
    assert not torch.equal(sa["J_mask"], c.state_dict()["J_mask"])
    obs, stim = torch.randn(5, 3, 6), torch.rand(5, 3, 2)
    a.reset(3)
    b.reset(3)
    for t in range(5):
        x, y = a.act(obs[t], stim[t]), b.act(obs[t], stim[t])
        assert torch.equal(x, y)
    assert torch.equal(a.act(obs[0]), b.act(obs[0]))  # deterministic


# ------------------------------------------------------------------------------------ lesion
def test_lesion_silences_exactly_round_pn_m1_neurons_even_when_stimulated():
    n = 32
    brain = MichaelsBrain(obs_dim=3, action_dim=1, stim_dim=4, n=n, seed=0, temporal=True)
    idx = brain.lesion(0.1, np.random.default_rng(5))
    assert len(idx) == round(0.1 * n) == 3
    assert np.array_equal(idx, brain.lesion(0.1, np.random.default_rng(5)))  # seeded
    idx = brain.lesion(0.5, np.random.default_rng(5))
    assert len(idx) == 16 and idx.max() < n and np.array_equal(brain.lesioned, idx)
    with torch.no_grad():  # make the lesioned neurons want to fire: big x0 and bias
        brain.x0.fill_(3.0)
        brain.b.fill_(2.0)
    # put a stimulation channel right on a lesioned neuron too
    rng = np.random.default_rng(0)
    brain.reset(3)
    assert torch.all(brain.state.r[:, idx] == 0)
    for _ in range(60):
        obs = torch.tensor(rng.normal(size=(3, 3)) * 3, dtype=torch.float32)
        brain.act(obs, torch.full((3, 4), 5.0))
        assert torch.all(brain.state.r[:, idx] == 0.0)
    alive = np.setdiff1d(np.arange(n), idx)
    assert torch.all(brain.state.r[:, alive] > 0)
    # the differentiable path silences them too
    acts, state = brain.rollout(
        torch.randn(20, 2, 3), torch.full((20, 2, 4), 5.0), return_state=True
    )
    assert torch.all(state.r[:, idx] == 0.0)
    brain.lesion(0.0, np.random.default_rng(0))
    assert len(brain.lesioned) == 0


def test_lesion_other_modules_and_bounds():
    brain = MichaelsBrain(obs_dim=3, action_dim=1, stim_dim=2, n=10, seed=0)
    idx = brain.lesion(0.3, np.random.default_rng(1), module="AIP")
    assert len(idx) == 3 and idx.min() >= 20
    idx = brain.lesion(1.0, np.random.default_rng(1))
    assert np.array_equal(idx, np.arange(10))
    with pytest.raises(ValueError):
        brain.lesion(1.5, np.random.default_rng(1))


# ---------------------------------------------------------------------------------- training
def test_sparsity_masks_survive_training():
    brain = MichaelsBrain(obs_dim=4, action_dim=2, stim_dim=2, n=16, seed=0)
    zero_J = (brain.J == 0).clone()
    zero_I = (brain.I == 0).clone()
    assert torch.equal(zero_J, brain.J_mask == 0) and zero_J.sum() > 0
    opt = torch.optim.AdamW(brain.parameters(), lr=1e-2, weight_decay=0.1)
    obs, target = torch.randn(10, 8, 4), torch.rand(10, 8, 2) * 2 - 1
    J0 = brain.J.detach().clone()
    for _ in range(5):
        loss = ((brain.rollout(obs) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert torch.all(brain.J.grad[zero_J] == 0) and torch.all(brain.I.grad[zero_I] == 0)
        opt.step()
        brain.apply_masks_()
        assert torch.all(brain.J[zero_J] == 0) and torch.all(brain.I[zero_I] == 0)
    assert not torch.equal(brain.J, J0)  # it did train


def pendulum_short():
    return gym.make("Pendulum-v1", max_episode_steps=25)


def imitation_loss(brain, obs, labels):
    with torch.no_grad():
        return float(((brain.rollout(obs) - labels) ** 2).mean())


def teacher_data(make_env, teacher, episodes, seed):
    envs = [make_env() for _ in range(episodes)]
    obs, labels, _ = run_episodes(
        envs, teacher, np.random.default_rng(seed), teacher=teacher, beta=1.0
    )
    return torch.tensor(np.stack(obs, 1)), torch.tensor(np.stack(labels, 1))


def linear_teacher(obs):
    """A smooth stabilising policy for Pendulum-v1 (easy to imitate within a tiny budget)."""
    return torch.tanh(-1.5 * obs[:, 1:2] - 0.3 * obs[:, 2:3])


def test_tiny_dagger_reduces_imitation_loss_and_keeps_masks():
    obs, labels = teacher_data(pendulum_short, linear_teacher, 8, seed=99)  # held-out episodes
    brain = MichaelsBrain(obs_dim=3, action_dim=1, stim_dim=2, n=16, seed=0)
    zero_J = brain.J_mask == 0
    before = imitation_loss(brain, obs, labels)
    seen = []
    m = train_dagger(
        brain,
        pendulum_short,
        linear_teacher,
        iterations=3,
        episodes_per_iter=4,
        epochs=30,
        lr=1e-3,
        rng=np.random.default_rng(0),
        progress=seen.append,
    )
    after = imitation_loss(brain, obs, labels)
    assert after < 0.75 * before, (before, after)
    assert m["loss"][-1] < m["loss"][0]
    assert seen == [1, 2, 3]
    assert m["beta"] == [1.0, 0.7, pytest.approx(0.49)]
    assert m["episodes"] == 12 and m["transitions"] == 12 * 25
    assert m["gradient_steps"] == 30 * 3  # one minibatch of <= 16 episodes per epoch
    assert len(m["loss"]) == 90 and len(m["iteration_loss"]) == 3
    assert torch.all(brain.J[zero_J] == 0)
    assert torch.all(brain.obs_std > 0) and not torch.all(brain.obs_std == 1)


def test_dagger_is_deterministic_and_keeps_the_best_validated_iterate():
    def run():
        brain = MichaelsBrain(obs_dim=3, action_dim=1, stim_dim=2, n=8, seed=4)
        m = train_dagger(
            brain,
            pendulum_short,
            pendulum_swingup_teacher,
            iterations=3,
            episodes_per_iter=2,
            epochs=2,
            lr=1e-3,
            rng=np.random.default_rng(3),
            eval_episodes=3,
        )
        return brain, m

    (b1, m1), (b2, m2) = run(), run()
    s1, s2 = b1.state_dict(), b2.state_dict()
    assert m1["loss"] == m2["loss"] and m1["student_return"] == m2["student_return"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert len(m1["student_return"]) == 3 and m1["best_return"] == max(m1["student_return"])
    assert m1["student_return"][m1["best_iteration"] - 1] == m1["best_return"]
    assert "teacher_return" in m1
    # the returned brain is the best iterate: it scores best_return on the validation seeds
    val = np.random.default_rng(3).integers(2**31)  # the first draw train_dagger makes
    rets = evaluate(b1, pendulum_short, episodes=3, rng=np.random.default_rng(val))
    assert float(np.mean(rets)) == pytest.approx(m1["best_return"], abs=1e-4)


# ------------------------------------------------------------------------- episodes, teachers
def test_unscale_maps_unit_box_to_env_box():
    space = gym.spaces.Box(low=np.float32([-2.0, 0.0]), high=np.float32([2.0, 10.0]))
    assert np.allclose(_unscale(np.array([-1.0, -1.0]), space), [-2.0, 0.0])
    assert np.allclose(_unscale(np.array([1.0, 0.0]), space), [2.0, 5.0])
    assert np.allclose(_unscale(np.array([3.0, 3.0]), space), [2.0, 10.0])  # clipped


def test_teachers_beat_doing_nothing_and_brain_runs_in_evaluate():
    def zero(o):
        return torch.zeros(o.shape[0], 2)

    def reacher():
        return gym.make("Reacher-v5")

    kw = dict(episodes=6)
    r_t = evaluate(reacher_pd_teacher, reacher, rng=np.random.default_rng(0), **kw).mean()
    r_0 = evaluate(zero, reacher, rng=np.random.default_rng(0), **kw).mean()
    assert r_t > r_0 + 2.0
    brain = MichaelsBrain(obs_dim=10, action_dim=2, stim_dim=2, n=8, seed=0)
    rets = evaluate(brain, reacher, rng=np.random.default_rng(0), stim=torch.ones(6, 2), **kw)
    assert rets.shape == (6,) and np.isfinite(rets).all()
