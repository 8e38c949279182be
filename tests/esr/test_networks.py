"""The authors' conv phi, psi and Q (`esr.networks`, `AgentConfig.torso="conv"`): the input
planes (a_R's one-hot at its cell, a_H broadcast, the state's human and box planes), the
marginal as the joint with the a_H planes zeroed, shapes, haiku's initialisation, the
Overcooked refusal, the paper preset, and a smoke run with the conv torso."""

import numpy as np
import pytest
import torch

from alignlab.core import config as cfglib
from alignlab.core import experiment as registry
from alignlab.core.config import ConfigError
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, run_status
from alignlab.esr import networks as nets
from alignlab.esr.agent import AgentConfig, ESRRepresentation, QLearner
from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.overcooked import VecOvercooked

CONV = AgentConfig(torso="conv", hidden=(24,), repr_dim=8)


def _obs(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    env = VecGridWorld(batch, size, num_boxes=3)
    env.reset(np.random.default_rng(seed))
    return torch.as_tensor(env.observe())


@pytest.mark.parametrize("size", [3, 5, 6])
def test_robot_action_plane_is_a_one_at_channel_a_mod_5_of_cell_a_div_5(size):
    actions = torch.arange(5 * size * size)
    planes = nets.robot_action_planes(actions, size)
    assert planes.shape == (len(actions), 5, size, size)
    for a in actions.tolist():
        cell = a // 5
        expected = torch.zeros(5, size, size)
        expected[a % 5, cell // size, cell % size] = 1.0
        assert torch.equal(planes[a], expected), a


def test_the_robot_plane_sits_on_the_box_the_env_pushes():
    """The cell of action a's plane is where the env takes the box it moves from."""
    n = 5
    env = VecGridWorld(1, n, num_boxes=2)
    state = {"human": [[0, 0]], "boxes": [[[2, 1], [4, 4]]], "goal": [[3, 3]], "dead": [False]}
    env.set_state({k: np.asarray(v) for k, v in state.items()})
    a = 5 * (2 * n + 1) + 2  # push the box on (2, 1) right
    plane = nets.robot_action_planes(torch.tensor([a]), n)[0]
    assert plane.nonzero().tolist() == [[2, 2, 1]]  # channel "right" at (2, 1)
    env.step(np.array([a]), np.array([4]))
    assert env.boxes[0].tolist() == [[2, 2], [4, 4]]


def test_human_action_is_broadcast_over_every_cell():
    planes = nets.human_action_planes(torch.arange(5), 4)
    assert planes.shape == (5, 5, 4, 4)
    for a in range(5):
        assert torch.equal(planes[a, a], torch.ones(4, 4))
        assert planes[a].sum() == 16  # the other channels are zero


def test_state_planes_are_the_human_and_the_boxes():
    env = VecGridWorld(1, 5, num_boxes=3)
    env.reset(np.random.default_rng(3))
    planes = nets.state_planes(torch.as_tensor(env.observe()), 5)[0]
    human = torch.zeros(5, 5)
    human[tuple(env.human[0])] = 1.0
    boxes = torch.zeros(5, 5)
    for r, c in env.boxes[0]:
        boxes[r, c] = 1.0
    assert torch.equal(planes[0], human) and torch.equal(planes[1], boxes)


def test_phi_input_is_state_then_a_r_then_a_h():
    phi = nets.ConvPhi(5, (8,), 4)
    obs, a_r, a_h = _obs(5, 3), torch.tensor([0, 61, 124]), torch.tensor([4, 0, 2])
    planes = phi.planes(obs, a_r, a_h)
    assert planes.shape == (3, 12, 5, 5)
    assert torch.equal(planes[:, :2], nets.state_planes(obs, 5))
    assert torch.equal(planes[:, 2:7], nets.robot_action_planes(a_r, 5))
    assert torch.equal(planes[:, 7:], nets.human_action_planes(a_h, 5))


def test_the_marginal_is_the_joint_with_the_a_h_planes_zeroed():
    torch.manual_seed(0)
    phi = nets.ConvPhi(5, (16,), 8)
    obs = _obs(5, 7)
    a_r, a_h = torch.randint(125, (7,)), torch.randint(5, (7,))
    joint_planes = phi.planes(obs, a_r, a_h)
    zeroed = joint_planes.clone()
    zeroed[:, 7:] = 0.0
    assert torch.equal(phi.planes(obs, a_r, None), zeroed)
    with torch.no_grad():
        marginal = phi(obs, a_r, None)
        assert torch.equal(marginal, phi.torso(zeroed))
        joint_pair, marginal_pair = phi.pair(obs, a_r, a_h)
        # one batched pass of [joint; marginal] gives the same as two separate ones
        torch.testing.assert_close(marginal_pair, marginal, rtol=0, atol=1e-6)
        torch.testing.assert_close(joint_pair, phi(obs, a_r, a_h), rtol=0, atol=1e-6)
    assert not torch.allclose(joint_pair, marginal_pair)  # a_H matters
    # ESRRepresentation's phis are the conv pair
    rep = ESRRepresentation(50, 125, 5, CONV)
    with torch.no_grad():
        j, m = rep.phis(obs, a_r, a_h)
        torch.testing.assert_close(m, rep.phi_conv(obs, a_r, None), rtol=0, atol=1e-6)
        torch.testing.assert_close(j, rep.phi_conv(obs, a_r, a_h), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [5, 4])
@pytest.mark.parametrize("batch", [1, 7])
def test_shapes_of_phi_psi_and_q(size, batch):
    obs_dim, n_r = 2 * size * size, 5 * size * size
    rep, learner = ESRRepresentation(obs_dim, n_r, 5, CONV), QLearner(obs_dim, n_r, CONV)
    obs = _obs(size, batch)
    a_r, a_h = torch.randint(n_r, (batch,)), torch.randint(5, (batch,))
    j, m = rep.phis(obs, a_r, a_h)
    assert j.shape == m.shape == rep.psi(obs).shape == (batch, CONV.repr_dim)
    assert rep.reward(obs, a_r, a_h, obs).shape == (batch,)
    assert learner.q(obs).shape == learner.q_target(obs).shape == (batch, n_r)
    assert learner.act(obs.numpy(), np.random.default_rng(0)).shape == (batch,)
    info, reward = rep.update(obs, a_r, a_h, obs)
    assert reward.shape == (batch,) and np.isfinite(info["repr_loss"])


def test_architecture_is_conv16_conv32_then_the_hidden_mlp():
    q = QLearner(50, 125, AgentConfig(torso="conv", hidden=(100,))).q.torso
    convs = [m for m in q.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in q.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (2, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(800, 100), (100, 125)]
    assert [type(m) for m in q.convs] == [torch.nn.Conv2d, torch.nn.SiLU] * 2


def test_flatten_is_in_row_col_channel_order():
    """haiku's Flatten of NHWC: feature (r, c, k) of the last conv at index (r n + c) 32 + k."""
    torso = nets.ConvTorso(2, 3, (), 1)
    torch.nn.init.zeros_(torso.head[0].weight)
    with torch.no_grad():
        torso.head[0].weight[0, (1 * 3 + 2) * 32 + 5] = 1.0  # row 1, col 2, channel 5
    x = torch.randn(2, 2, 3, 3)
    with torch.no_grad():
        assert torch.equal(torso(x)[:, 0], torso.convs(x)[:, 5, 1, 2])


def test_init_is_haikus_truncated_normal_with_zero_biases():
    torch.manual_seed(0)
    cfg = AgentConfig(torso="conv", hidden=(100,), repr_dim=100)
    rep, q = ESRRepresentation(50, 125, 5, cfg), QLearner(50, 125, cfg).q
    nets_ = [*rep.modules(), *q.modules()]
    layers = [m for m in nets_ if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 12  # phi, psi and Q: 2 convs and 2 linear layers each
    for m in layers:
        fan_in = m.weight.shape[1] * (
            m.kernel_size[0] * m.kernel_size[1] if m.weight.ndim == 4 else 1
        )
        sigma = fan_in**-0.5
        assert torch.count_nonzero(m.bias) == 0
        assert m.weight.abs().max() <= 2 * sigma
        if m.weight.numel() >= 10_000:  # truncation at 2 sigma leaves std 0.880 sigma
            assert abs(m.weight.std().item() / sigma - 0.880) < 0.02
    assert rep.phi_conv.torso.convs[0].weight.shape[1:] == (12, 3, 3)  # fan_in 108


def test_conv_refuses_overcooked_with_a_config_error():
    env = VecOvercooked(num_envs=1)
    with pytest.raises(ConfigError, match="torso 'conv' needs the obstacle gridworld"):
        QLearner(env.obs_dim, env.robot_actions, CONV)
    with pytest.raises(ConfigError, match="use torso='mlp'"):
        ESRRepresentation(env.obs_dim, env.robot_actions, env.human_actions, CONV)


def test_torso_is_mlp_or_conv():
    assert AgentConfig().torso == "mlp"
    with pytest.raises(AlignlabError, match="torso"):
        cfglib.validate(AgentConfig(torso="cnn"))


def test_the_paper_preset_uses_the_conv_torso_with_one_hidden_layer_of_100():
    agent = registry.get("esr.gridworld").preset("paper").agent
    assert agent.torso == "conv" and agent.hidden == (100,) and agent.repr_dim == 100


def test_smoke_run_with_the_conv_torso(tmp_path):
    overrides = ("agent.torso=conv", "obstacles=[2]", "methods=[esr]", "n_seeds=1")
    spec = RunSpec(
        "esr.gridworld", preset="smoke", out=str(tmp_path / "run"), quiet=True,
        overrides=overrides, threads=1, workers=1,
    )  # fmt: skip
    out = execute(spec)
    assert run_status(out.dir) == "complete"
    assert np.isfinite(out.results["per"]["esr"]["2"]["return"]["mean"])
