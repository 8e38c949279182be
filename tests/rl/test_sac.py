"""Soft Actor-Critic (alignlab.rl.sac) and its replay buffer (alignlab.rl.replay).

The anchors (tests named `test_sb3_*`) run Stable-Baselines3 2.9's SAC on the same weights,
batch and torch seed, and need the `anchors` venv:

    /work/anchors-venv/bin/python -m pytest tests/rl/test_sac.py

Without stable_baselines3 they are skipped with that reason; the others run in the main venv.
"""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from alignlab.rl import SAC, ReplayBatch, ReplayBuffer, SACConfig, polyak_update
from alignlab.rl.sac import Actor, Critic, _adam_step

TOL = 1e-6
SB3_REASON = "the anchors extra: pip install 'alignlab[anchors]'"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Small networks: one torch thread (tests/conftest.py)."""


class Tracker(gym.Env):
    """s ~ U(-1, 1)^2 each step; reward -(a - s_0)^2 with a in [-2, 2]; `horizon` steps, then a
    time-limit truncation, or a termination once |a - s_0| < `terminate_within`."""

    def __init__(self, horizon: int = 20, terminate_within: float = 0.0):
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.horizon, self.terminate_within = horizon, terminate_within
        self.terminations: list[bool] = []  # every step's `terminated`, over all episodes

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        error = float(action[0]) - float(self.obs[0])
        self.t += 1
        self.obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        terminated = abs(error) < self.terminate_within
        self.terminations.append(terminated)
        return self.obs, -(error**2), terminated, self.t >= self.horizon, {}


def random_batch(n: int, obs_dim: int, action_dim: int, seed: int) -> ReplayBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    return ReplayBatch(
        observations=obs,
        actions=torch.rand(n, action_dim, generator=g) * 2 - 1,
        next_observations=obs + 0.1 * torch.randn(n, obs_dim, generator=g),
        dones=(torch.rand(n, 1, generator=g) < 0.2).float(),
        rewards=torch.randn(n, 1, generator=g),
    )


def exact_adams(sac: SAC) -> None:
    """Non-fused Adam optimizers: SAC then runs SB3's Adam arithmetic, bitwise."""
    lr = sac.config.learning_rate
    sac.actor_optimizer = torch.optim.Adam(sac.actor.parameters(), lr=lr)
    sac.critic_optimizer = torch.optim.Adam(sac.critic.parameters(), lr=lr)
    if sac.log_ent_coef is not None:
        sac.ent_coef_optimizer = torch.optim.Adam([sac.log_ent_coef], lr=lr)


# ---- replay buffer ----------------------------------------------------------------------------


def fill(buffer: ReplayBuffer, ids) -> None:
    """Transition i: obs (i, -i), next_obs (i + 0.5, 0), action 0.01 i, reward i, done i odd."""
    for i in ids:
        buffer.add([i, -i], [i + 0.5, 0], [0.01 * i], float(i), bool(i % 2))


def test_replay_is_a_ring_of_the_latest_transitions():
    buffer = ReplayBuffer(5, 2, 1)
    fill(buffer, range(3))
    assert len(buffer) == 3 and buffer.pos == 3 and not buffer.full
    fill(buffer, range(3, 7))
    assert len(buffer) == 5 and buffer.pos == 2 and buffer.full
    # storage order: 5 and 6 overwrote the oldest two
    assert buffer.field("observations")[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert buffer.field("next_observations")[:, 0].tolist() == [5.5, 6.5, 2.5, 3.5, 4.5]
    assert buffer.field("rewards")[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert buffer.field("dones")[:, 0].tolist() == [1, 0, 0, 1, 0]
    # a batch add wraps round too, and one longer than the ring keeps its newest rows
    ids = np.arange(7, 10)
    buffer.add(
        np.stack([ids, -ids], 1),
        np.stack([ids + 0.5, 0 * ids], 1),
        0.01 * ids[:, None],
        ids.astype(float),
        ids % 2 == 1,
    )
    assert buffer.field("observations")[:, 0].tolist() == [5, 6, 7, 8, 9] and buffer.pos == 0
    ids = np.arange(10, 22)
    buffer.add(np.stack([ids, -ids], 1), np.stack([ids, ids], 1), ids[:, None], ids, ids * 0)
    assert buffer.pos == 2 and sorted(buffer.field("observations")[:, 0]) == list(range(17, 22))
    assert buffer.field("observations")[:, 0].tolist() == [20, 21, 17, 18, 19]


def test_replay_samples_the_filled_part_as_sb3_samples():
    buffer = ReplayBuffer(100, 2, 1)
    fill(buffer, range(10))
    batch = buffer.sample(1000, np.random.default_rng(0))
    assert batch.observations.shape == (1000, 2) and batch.actions.shape == (1000, 1)
    assert batch.rewards.shape == (1000, 1) and batch.dones.shape == (1000, 1)
    assert all(t.dtype == torch.float32 for t in vars(batch).values())
    ids = batch.observations[:, 0]
    assert set(ids.tolist()) == set(range(10))  # uniform over the 10 stored, all of them hit
    assert torch.equal(batch.observations[:, 1], -ids)
    assert torch.equal(batch.next_observations[:, 0], ids + 0.5)
    assert torch.allclose(batch.actions[:, 0], 0.01 * ids)
    assert torch.equal(batch.rewards[:, 0], ids) and torch.equal(batch.dones[:, 0], ids % 2)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2, 1).sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="actions must hold 1 value"):
        buffer.add([0, 0], [0, 0], [0, 0], 0.0, False)


def test_replay_state_round_trip():
    a = ReplayBuffer(6, 2, 1)
    fill(a, range(9))
    b = ReplayBuffer(6, 2, 1)
    b.load_state(a.state())
    assert (b.pos, b.full, len(b)) == (a.pos, a.full, len(a))
    idx = np.arange(len(a))
    assert all(
        torch.equal(x, y) for x, y in zip(vars(a.batch(idx)).values(), vars(b.batch(idx)).values())
    )
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(7, 2, 1).load_state(a.state())


def test_learn_stores_terminations_but_not_time_limits():
    """SB3's handle_timeout_termination: a truncated episode's last transition bootstraps
    (done 0) and keeps its true next observation; a terminated one has done 1."""
    env = gym.wrappers.TimeLimit(Tracker(horizon=1000), max_episode_steps=7)  # truncation only
    sac = SAC(2, 1, SACConfig(net_arch=(8,), learning_starts=1000), action_low=-2, action_high=2)
    sac.learn(env, 21, rng=np.random.default_rng(0))
    obs, nxt = sac.replay.field("observations"), sac.replay.field("next_observations")
    assert len(sac.replay) == 21 and not sac.replay.field("dones").any()
    inside = [i for i in range(20) if (i + 1) % 7]
    assert np.array_equal(nxt[inside], obs[[i + 1 for i in inside]])  # s' is the next s
    assert not np.isclose(nxt[[6, 13]], obs[[7, 14]]).all(axis=1).any()  # reset, not s'
    env = Tracker(horizon=50, terminate_within=0.03)
    sac = SAC(2, 1, SACConfig(net_arch=(8,), learning_starts=1000), action_low=-2, action_high=2)
    ends = []  # (episode index, index of its last transition)
    sac.learn(
        env,
        600,
        rng=np.random.default_rng(1),
        on_episode_end=lambda i, r: ends.append((i, sac.num_timesteps - 1)),
    )
    assert [i for i, _ in ends] == list(range(sac.num_episodes))
    dones = sac.replay.field("dones")[:, 0]
    assert np.array_equal(dones, env.terminations)
    last = np.array([t for _, t in ends])
    length = np.diff(np.concatenate([[-1], last]))
    assert set(np.flatnonzero(dones)) <= set(last)  # a termination ends its episode
    assert (length < 50).any() and (dones[last[length == 50]] == 0).any()  # both kinds of end


# ---- the actor's distribution -------------------------------------------------------------------


def test_log_prob_is_the_tanh_change_of_variables():
    """log pi(a|s) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2 + 1e-6), a = tanh(u), with u
    the Gaussian draw from torch's global generator (Haarnoja et al. 2018a, App. C)."""
    torch.manual_seed(0)
    actor = Actor(3, 2, (16, 16))
    obs = torch.randn(64, 3)
    torch.manual_seed(5)
    action, log_prob = actor.action_log_prob(obs)
    with torch.no_grad():
        mean, log_std = actor.heads(actor.latent(obs))
    torch.manual_seed(5)
    eps = torch.randn(64, 2)
    u = (mean + log_std.exp() * eps).double()
    mean, log_std = mean.double(), log_std.double()
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    manual = gauss.sum(1) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum(1)
    assert torch.allclose(action.double(), torch.tanh(u), atol=1e-6)
    assert torch.allclose(log_prob.double(), manual, atol=1e-4)
    # and torch's own tanh-transformed Gaussian, which has no 1e-6 in the Jacobian
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.TanhTransform()
    )
    inside = torch.tanh(u).abs().max(1).values < 0.99  # where the 1e-6 is negligible
    exact = squashed.log_prob(torch.tanh(u)).sum(1)
    assert inside.sum() > 10 and torch.allclose(log_prob.double()[inside], exact[inside], atol=1e-3)
    with torch.no_grad():
        assert torch.equal(actor.deterministic(obs), torch.tanh(actor.heads(actor.latent(obs))[0]))


def test_log_std_is_clamped_as_sb3():
    actor = Actor(1, 1, (4,))
    with torch.no_grad():
        actor.log_std.weight.zero_()
        actor.log_std.bias.fill_(7.0)
        assert actor.heads(torch.zeros(2, 4))[1].eq(2.0).all()
        actor.log_std.bias.fill_(-70.0)
        assert actor.heads(torch.zeros(2, 4))[1].eq(-20.0).all()


def test_actor_loss_gradcheck_float64():
    """The actor loss mean(alpha log pi(a~|s) - min_i Q_i(s, a~)), noise fixed by the seed,
    against finite differences in every actor parameter; min_i Q_i through q_min_action's
    hand-written backward (which is also checked on its own, in the action)."""
    torch.manual_seed(0)
    actor, critic = Actor(3, 2, (5, 4)).double(), Critic(3, 2, (6, 5)).double()
    obs = torch.randn(7, 3, dtype=torch.float64)
    names = [n for n, _ in actor.named_parameters()]
    alpha = 0.3

    class Policy(torch.nn.Module):  # action_log_prob as a forward, for functional_call
        def __init__(self):
            super().__init__()
            self.actor = actor

        def forward(self, obs):
            return self.actor.action_log_prob(obs)

    policy = Policy()

    def loss(*params):
        torch.manual_seed(1)  # the same noise at every evaluation
        tensors = {f"actor.{n}": p for n, p in zip(names, params)}
        a, log_prob = torch.func.functional_call(policy, tensors, (obs,))
        return (alpha * log_prob.reshape(-1, 1) - critic.q_min_action(obs, a)).mean()

    params = tuple(p.detach().clone().requires_grad_(True) for p in actor.parameters())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-5)
    action = (torch.rand(7, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: critic.q_min_action(obs, a), (action,), eps=1e-6)
    # its value and gradient are those of the min over both critics, differentiated by autograd
    q = critic.q_min_action(obs, action)
    ref = torch.minimum(*critic(obs, action))
    assert torch.equal(q, ref)
    (g,) = torch.autograd.grad(q.sum(), action)
    (g_ref,) = torch.autograd.grad(ref.sum(), action)
    assert torch.allclose(g, g_ref, atol=1e-12)


# ---- training ----------------------------------------------------------------------------------


def test_adam_fast_path_is_torch_adam_bitwise():
    """_adam_step leaves parameters and state exactly as optimizer.step() does, for the fused
    kernel and for the single-tensor loop."""
    for kwargs in ({"fused": True}, {"foreach": False}):
        torch.manual_seed(0)
        nets = [torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))]
        nets.append(copy.deepcopy(nets[0]))
        opts = [torch.optim.Adam(n.parameters(), lr=1e-2, **kwargs) for n in nets]
        for step in range(4):
            x = torch.randn(16, 3, generator=torch.Generator().manual_seed(step))
            for n, opt in zip(nets, opts):
                opt.zero_grad()
                n(x).pow(2).mean().backward()
            opts[0].step()
            _adam_step(opts[1])
        for p, q in zip(nets[0].parameters(), nets[1].parameters()):
            assert torch.equal(p, q)
            assert all(torch.equal(v, opts[1].state[q][k]) for k, v in opts[0].state[p].items())


def test_target_update_is_sb3_polyak():
    torch.manual_seed(0)
    sac = SAC(3, 1, SACConfig(net_arch=(8, 8), tau=0.1))
    with torch.no_grad():
        for p in sac.critic.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in sac.critic_target.parameters()]
    reference = copy.deepcopy(sac.critic_target)
    sac.polyak_update()
    polyak_update(reference, sac.critic, 0.1)
    for b, t, r, s in zip(
        before, sac.critic_target.parameters(), reference.parameters(), sac.critic.parameters()
    ):
        assert torch.equal(t, torch.add(torch.mul(b, 1 - 0.1), s, alpha=0.1))  # SB3's ops
        assert torch.allclose(t, r, atol=1e-7)


def test_train_moves_target_on_call_steps_multiple_of_interval():
    """SB3 counts target_update_interval within each train call: with interval 2 the target
    moves on steps 0, 2, 4, ... of every call, so train(1) always moves it."""
    torch.manual_seed(0)
    sac = SAC(2, 1, SACConfig(net_arch=(8,), batch_size=16, target_update_interval=2))
    rng = np.random.default_rng(0)
    sac.replay.add(
        rng.normal(size=(50, 2)),
        rng.normal(size=(50, 2)),
        rng.uniform(-1, 1, (50, 1)),
        rng.normal(size=50),
        np.zeros(50),
    )
    before = [p.clone() for p in sac.critic_target.parameters()]
    out = sac.train(1, rng)
    assert not any(torch.equal(a, b) for a, b in zip(before, sac.critic_target.parameters()))
    assert set(out) == {"actor_loss", "critic_loss", "ent_coef", "ent_coef_loss"}
    assert all(math.isfinite(v) for v in out.values()) and sac.num_updates == 1
    moves = []
    polyak = sac.polyak_update
    sac.polyak_update = lambda: (moves.append(sac.num_updates), polyak())
    for steps in (1, 2, 3, 5):
        sac.train(steps, rng)
    # updates counted before each step: calls start at 1, 2, 4, 7
    assert moves == [1, 2, 4, 6, 7, 9, 11]


def run_learn(steps: int, seed: int = 0, stop_after: int | None = None) -> tuple[SAC, list]:
    torch.manual_seed(seed)
    env = gym.make("Pendulum-v1")
    cfg = SACConfig(net_arch=(32, 32), batch_size=64, learning_starts=100)
    sac = SAC(3, 1, cfg, action_low=env.action_space.low, action_high=env.action_space.high)
    calls, ticks = [], []

    def on_end(i, r):
        calls.append((i, r))
        return stop_after is None or len(calls) < stop_after

    sac.learn(
        env, steps, rng=np.random.default_rng(seed), on_episode_end=on_end, progress=ticks.append
    )
    env.close()
    assert sum(ticks) == sac.num_timesteps  # progress(n): the steps since its last call
    return sac, calls


def test_learn_is_deterministic_and_reports_each_episode():
    a, calls_a = run_learn(450)
    b, calls_b = run_learn(450)
    ta, tb = a.state_tensors(), b.state_tensors()
    assert ta.keys() == tb.keys()
    assert all(ta[k].numpy().tobytes() == tb[k].numpy().tobytes() for k in ta)
    assert calls_a == calls_b and [i for i, _ in calls_a] == [0, 1]  # 200-step episodes
    assert all(isinstance(r, float) and r < 0 for _, r in calls_a)
    assert a.num_timesteps == 450 and a.num_updates == 350 and a.num_episodes == 2
    c, _ = run_learn(450, seed=1)
    assert not torch.equal(c.state_tensors()["actor.mu.weight"], ta["actor.mu.weight"])
    stopped, calls = run_learn(450, stop_after=1)  # on_episode_end returned False
    assert len(calls) == 1 and stopped.num_timesteps == 200 and stopped.num_updates == 99


def test_state_tensors_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    a = SAC(3, 2, SACConfig(net_arch=(16, 16), ent_coef="auto_0.1"))
    rng = np.random.default_rng(0)
    a.replay.add(
        rng.normal(size=(64, 3)),
        rng.normal(size=(64, 3)),
        rng.uniform(-1, 1, (64, 2)),
        rng.normal(size=64),
        np.zeros(64),
    )
    a.config.batch_size = 32
    a.train(3, rng)
    save_file(a.state_tensors(), tmp_path / "sac.safetensors")
    torch.manual_seed(1)
    b = SAC(3, 2, SACConfig(net_arch=(16, 16), ent_coef="auto_0.1"))
    b.load_state_tensors(load_file(tmp_path / "sac.safetensors"))
    sa, sb = a.state_tensors(), b.state_tensors()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.alpha == a.alpha != 0.1
    obs = rng.normal(size=(5, 3))
    assert np.array_equal(a.predict(obs), b.predict(obs))
    fixed = SAC(3, 2, SACConfig(net_arch=(16, 16), ent_coef=0.2))
    with pytest.raises(ValueError, match="log_ent_coef"):
        fixed.load_state_tensors(sa)
    with pytest.raises(ValueError, match="missing"):
        SAC(3, 2, SACConfig(net_arch=(8,))).load_state_tensors(sa)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("ent_coef", "autox", ["ent_coef", "'auto'", "auto_<init>", "'autox'"]),
        ("ent_coef", "auto_-1", ["ent_coef", "auto_<init>"]),
        ("ent_coef", -0.5, ["ent_coef", ">= 0"]),
        ("target_entropy", "max", ["target_entropy", "'auto'"]),
        ("tau", 1.5, ["tau", "[0, 1]"]),
        ("gamma", -0.1, ["gamma", "[0, 1]"]),
        ("net_arch", (32, 0), ["net_arch", ">= 1"]),
        ("batch_size", 0, ["batch_size", ">= 1"]),
        ("train_freq", 0, ["train_freq", ">= 1"]),
        ("gradient_steps", -2, ["gradient_steps", ">= -1"]),
        ("learning_rate", 0.0, ["learning_rate", "> 0"]),
    ],
)
def test_bad_config_raises_naming_field_and_options(field, value, words):
    with pytest.raises(ValueError) as err:
        SAC(3, 1, SACConfig(**{field: value}))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_action_scaling_and_predict():
    torch.manual_seed(0)
    sac = SAC(2, 2, SACConfig(net_arch=(8,)), action_low=[-2.0, 0.0], action_high=[2.0, 10.0])
    assert np.allclose(sac.unscale_action([-1, -1]), [-2, 0])
    assert np.allclose(sac.unscale_action([1, 1]), [2, 10])
    assert np.allclose(sac.unscale_action([0, 0.5]), [0, 7.5])
    a = np.array([[1.5, 3.0], [-0.5, 9.0]], dtype=np.float32)
    assert np.allclose(sac.unscale_action(sac.scale_action(a)), a, atol=1e-6)
    obs = np.array([0.3, -0.2], dtype=np.float32)
    with torch.no_grad():
        want = sac.unscale_action(
            torch.tanh(sac.actor.heads(sac.actor.latent(torch.as_tensor(obs)[None]))[0]).numpy()
        )[0]
    assert sac.predict(obs).shape == (2,) and np.array_equal(sac.predict(obs), want)
    batch = sac.predict(np.stack([obs, obs, obs]), deterministic=False)
    assert batch.shape == (3, 2) and (batch >= [-2, 0]).all() and (batch <= [2, 10]).all()
    assert not np.array_equal(batch[0], batch[1])
    with pytest.raises(ValueError, match="high > low"):
        SAC(2, 1, action_low=[1.0], action_high=[1.0])


def test_networks_survive_deepcopy():
    """The networks' fast paths read their own layers, also in a copy."""
    torch.manual_seed(0)
    sac = SAC(3, 1, SACConfig(net_arch=(8, 8)))
    actor, critic = copy.deepcopy(sac.actor), copy.deepcopy(sac.critic)
    obs, act = torch.randn(4, 3), torch.rand(4, 1)
    with torch.no_grad():
        for p in list(actor.parameters()) + list(critic.parameters()):
            p.mul_(2)
        assert not torch.equal(actor.deterministic(obs), sac.actor.deterministic(obs))
        assert not torch.equal(critic.q_min(obs, act), sac.critic.q_min(obs, act))
        ref = torch.nn.Sequential(*critic.q_networks[0])(torch.cat([obs, act], 1))
        assert torch.equal(critic(obs, act)[0], ref)


def test_sac_learns_a_tracking_task():
    """A sanity check of the whole loop: on the tracking task (reward -(a - s_0)^2, 20-step
    episodes) the return of the deterministic policy beats the uniform-random one's by far."""
    torch.manual_seed(0)
    env = Tracker(horizon=20)
    cfg = SACConfig(net_arch=(32, 32), batch_size=64, learning_rate=1e-3, learning_starts=200)
    sac = SAC(2, 1, cfg, action_low=-2.0, action_high=2.0)
    returns = []
    sac.learn(
        env, 1500, rng=np.random.default_rng(0), on_episode_end=lambda i, r: returns.append(r)
    )
    random_return = float(np.mean(returns[:10]))  # the first 200 steps act uniformly at random

    def evaluate(policy) -> float:
        test = Tracker(horizon=20)
        obs, _ = test.reset(seed=123)
        total = 0.0
        for _ in range(200):
            obs, r, _, trunc, _ = test.step(policy(obs))
            total += r
            if trunc:
                obs, _ = test.reset()
        return total / 10

    learned = evaluate(sac.predict)
    assert random_return < -20 and learned > -2.0, (random_return, learned)


# ---- anchors: Stable-Baselines3 2.9 ------------------------------------------------------------


def sb3_sac(arch, ent_coef, seed: int = 0):
    pytest.importorskip("stable_baselines3", reason=SB3_REASON)
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    torch.manual_seed(seed)
    kwargs = {} if arch is None else {"policy_kwargs": {"net_arch": list(arch)}}
    model = SB3SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        ent_coef=ent_coef,
        learning_starts=0,
        device="cpu",
        **kwargs,
    )
    model.set_logger(configure(None, [""]))  # records into name_to_value, writes nothing
    return model


def sb3_tensors(model) -> dict[str, torch.Tensor]:
    """SB3's networks under our names (qf<i> -> q_networks.<i>)."""
    out = {}
    for name in ("actor", "critic", "critic_target"):
        for k, v in getattr(model, name).state_dict().items():
            out[f"{name}.{k.replace('qf', 'q_networks.')}"] = v
    if model.log_ent_coef is not None:
        out["log_ent_coef"] = model.log_ent_coef.detach()
    else:
        out["ent_coef_tensor"] = model.ent_coef_tensor
    return out


def sb3_step(model, batch, seed: int) -> dict[str, float]:
    """One gradient step of SB3's SAC.train on `batch`, torch seeded with `seed`."""
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    samples = ReplayBufferSamples(
        batch.observations, batch.actions, batch.next_observations, batch.dones, batch.rewards
    )
    model.replay_buffer.sample = lambda *a, **k: samples
    torch.manual_seed(seed)
    model.train(gradient_steps=1, batch_size=len(batch.observations))
    logged = model.logger.name_to_value
    return {
        k: float(logged[f"train/{k}"])
        for k in ("actor_loss", "critic_loss", "ent_coef", "ent_coef_loss")
        if f"train/{k}" in logged
    }


def anchor(arch, ent_coef, steps: int, exact: bool):
    model = sb3_sac(arch, ent_coef, seed=0)
    torch.manual_seed(1)  # our own initialisation differs: SB3's weights are copied in
    cfg = (
        SACConfig(ent_coef=ent_coef)
        if arch is None
        else SACConfig(net_arch=arch, ent_coef=ent_coef)
    )
    ours = SAC(3, 1, cfg, action_low=-2.0, action_high=2.0)
    theirs = sb3_tensors(model)
    assert not torch.equal(ours.state_tensors()["actor.mu.weight"], theirs["actor.mu.weight"])
    ours.load_state_tensors(theirs)
    if exact:
        exact_adams(ours)
    for step in range(steps):
        batch = random_batch(100, 3, 1, seed=step)
        want = sb3_step(model, batch, seed=10 + step)
        torch.manual_seed(10 + step)
        got = ours.train_step(batch)
        assert got.keys() == want.keys()
        for k in want:
            assert abs(got[k] - want[k]) <= (0 if exact else TOL), (step, k, got[k], want[k])
        mine, theirs = ours.state_tensors(), sb3_tensors(model)
        assert mine.keys() == theirs.keys()
        for k in mine:
            diff = (mine[k] - theirs[k]).abs().max().item()
            assert diff <= (0 if exact else TOL), (step, k, diff)


@pytest.mark.parametrize("arch", [(32, 32), None], ids=["32x32", "default"])
def test_sb3_one_update(arch):
    """Losses and every parameter after one SB3 SAC.train step, same weights, batch and seed."""
    anchor(arch, "auto", steps=1, exact=False)


@pytest.mark.parametrize("ent_coef", ["auto", "auto_0.1", 0.2])
@pytest.mark.parametrize("arch", [(32, 32), None], ids=["32x32", "default"])
def test_sb3_three_updates(arch, ent_coef):
    anchor(arch, ent_coef, steps=3, exact=False)


@pytest.mark.parametrize("ent_coef", ["auto", 0.2])
def test_sb3_three_updates_bitwise_with_sb3_adam(ent_coef):
    """With SB3's (non-fused) Adam every other op is SB3's: the updates agree bit for bit."""
    anchor((32, 32), ent_coef, steps=3, exact=True)


def test_sb3_same_seed_same_initial_weights_and_scaling():
    model = sb3_sac((32, 32), "auto", seed=3)
    torch.manual_seed(3)
    ours = SAC(3, 1, SACConfig(net_arch=(32, 32)), action_low=-2.0, action_high=2.0)
    mine, theirs = ours.state_tensors(), sb3_tensors(model)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    a = np.array([[-2.0], [0.5], [1.9]], dtype=np.float32)
    assert np.array_equal(ours.scale_action(a), model.policy.scale_action(a))
    s = np.array([[-1.0], [0.25], [0.99]], dtype=np.float32)
    assert np.array_equal(ours.unscale_action(s), model.policy.unscale_action(s))
    obs = np.array([[0.1, -0.4, 0.7]], dtype=np.float32)
    assert np.array_equal(ours.predict(obs), model.predict(obs, deterministic=True)[0])
    torch.manual_seed(9)
    stochastic = ours.predict(obs, deterministic=False)
    torch.manual_seed(9)
    assert np.array_equal(stochastic, model.predict(obs, deterministic=False)[0])
