"""ESR's learners (`alignlab.esr.agent`) and training loop (`alignlab.esr.train`), each checked
against an explicit reference computation or a hand-worked case:

- the empowerment reward (phi(s, a_R, a_H) - phi(s, a_R, 0)) . psi(s+) of a hand-set critic,
  in numpy, and phi as one linear layer over [s, onehot(a_R), onehot(a_H)] (ESR notes);
- the tiled / masked / separate symmetric InfoNCE, the logged mutual information, the reward
  `update` returns, the logit scale, and the Adam step itself;
- the Q-learner's TD loss, Polyak target, Boltzmann sampling and dual (precision) step;
- AvE's empowerment proxy on hand-built gridworld states;
- Bayesian goal inference and the goal-inference robot's planner;
- determinism of `train_assistant`, its metric lines, its exact continuation from a
  checkpoint (the replay buffer's saved arrays included), and the configs' validation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from alignlab.core import config as cfglib
from alignlab.core.checkpoint import Checkpointer, SimulatedCrash, crash_after_checkpoint
from alignlab.core.context import RunContext
from alignlab.core.errors import AlignlabError
from alignlab.core.run import is_timing
from alignlab.esr.agent import (
    AgentConfig,
    ESRRepresentation,
    GoalPosterior,
    QLearner,
    ave_reward,
)
from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.train import (
    LoopConfig,
    RandomRobot,
    ReplayBuffer,
    plan_for_goal,
    rollout,
    train_assistant,
)

LEFT, DOWN, RIGHT, UP, STAY = range(5)


def silu(x):
    return x / (1.0 + np.exp(-x))


def t32(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def set_(param: torch.nn.Parameter, value) -> None:
    with torch.no_grad():
        param.copy_(t32(value))


# ---- 1. the ESR reward of a hand-made critic ------------------------------------------------

OBS, NR, NH, H, D = 3, 4, 3, 5, 2


def hand_critic():
    """An ESRRepresentation with every parameter set to known values (returned as numpy)."""
    rep = ESRRepresentation(OBS, NR, NH, AgentConfig(hidden=(H,), repr_dim=D))
    r = np.random.default_rng(7)

    def vals(*shape):  # "hand-chosen": multiples of 0.1 in [-1, 1]
        return np.round(r.uniform(-1, 1, size=shape), 1)

    p = {
        "Wo": vals(H, OBS),
        "bo": vals(H),
        "Er": vals(NR, H),
        "Eh": vals(NH, H),
        "W2": vals(D, H),
        "b2": vals(D),
        "V1": vals(H, OBS),
        "c1": vals(H),
        "V2": vals(D, H),
        "c2": vals(D),
    }
    set_(rep.phi_obs.weight, p["Wo"])
    set_(rep.phi_obs.bias, p["bo"])
    set_(rep.phi_robot.weight, p["Er"])
    set_(rep.phi_human.weight, p["Eh"])
    (out,) = [m for m in rep.phi_rest.modules() if isinstance(m, torch.nn.Linear)]
    set_(out.weight, p["W2"])
    set_(out.bias, p["b2"])
    psi1, psi2 = [m for m in rep.psi.modules() if isinstance(m, torch.nn.Linear)]
    set_(psi1.weight, p["V1"])
    set_(psi1.bias, p["c1"])
    set_(psi2.weight, p["V2"])
    set_(psi2.bias, p["c2"])
    return rep, p


def hand_batch():
    obs = np.array([[1.0, 0.0, 0.5], [0.0, -1.0, 2.0], [0.3, 0.3, 0.3], [-1.0, 1.0, 0.0]])
    a_r = np.array([0, 3, 1, 2])
    a_h = np.array([2, 0, 1, 2])
    goal = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, -1.0], [0.2, -0.4, 0.9], [0.0, 0.0, 0.0]])
    return obs, a_r, a_h, goal


def test_esr_reward_equals_closed_form_on_hand_made_critic():
    rep, p = hand_critic()
    obs, a_r, a_h, goal = hand_batch()
    pre = obs @ p["Wo"].T + p["bo"] + p["Er"][a_r]
    phi_joint = silu(pre + p["Eh"][a_h]) @ p["W2"].T + p["b2"]
    phi_marg = silu(pre) @ p["W2"].T + p["b2"]
    psi = silu(goal @ p["V1"].T + p["c1"]) @ p["V2"].T + p["c2"]
    expected = ((phi_joint - phi_marg) * psi).sum(1)

    got = rep.reward(t32(obs), torch.as_tensor(a_r), torch.as_tensor(a_h), t32(goal))
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(expected) > 1e-3)  # the hand values make every reward non-trivial
    joint, marg = rep.phis(t32(obs), torch.as_tensor(a_r), torch.as_tensor(a_h))
    np.testing.assert_allclose(joint.detach().numpy(), phi_joint, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(marg.detach().numpy(), phi_marg, rtol=1e-5, atol=1e-6)


def test_phi_is_one_linear_layer_on_concatenated_one_hots():
    """The paper's formulation: phi's first layer is Linear([s, onehot(a_R), onehot(a_H)]) and
    the marginal is the same layer with the human one-hot zeroed."""
    rep, p = hand_critic()
    obs, a_r, a_h, _ = hand_batch()
    lin = torch.nn.Linear(OBS + NR + NH, H)
    set_(lin.weight, np.concatenate([p["Wo"], p["Er"].T, p["Eh"].T], axis=1))
    set_(lin.bias, p["bo"])
    onehot_r = np.eye(NR)[a_r]
    onehot_h = np.eye(NH)[a_h]
    with torch.no_grad():
        joint_ref = rep.phi_rest(lin(t32(np.concatenate([obs, onehot_r, onehot_h], 1))))
        marg_ref = rep.phi_rest(lin(t32(np.concatenate([obs, onehot_r, 0 * onehot_h], 1))))
        joint, marg = rep.phis(t32(obs), torch.as_tensor(a_r), torch.as_tensor(a_h))
    torch.testing.assert_close(joint, joint_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(marg, marg_ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(joint, marg)


# ---- 2. the contrastive loss --------------------------------------------------------------


def sym_infonce_ref(logits: torch.Tensor) -> torch.Tensor:
    """(mean_i -log softmax_row(logits)[i, i] + mean_j -log softmax_col(logits)[j, j]) / 2,
    written out with logsumexp (entries of -inf drop out of the normalisers)."""
    diag = logits.diagonal()
    rows = (torch.logsumexp(logits, dim=1) - diag).mean()
    cols = (torch.logsumexp(logits, dim=0) - diag).mean()
    return 0.5 * (rows + cols)


def expected_loss(phi_sa, phi_s, psi, kind: str, c: float) -> torch.Tensor:
    b = len(phi_sa)
    if kind == "separate":
        return sym_infonce_ref(phi_sa @ psi.T / c) + sym_infonce_ref(phi_s @ psi.T / c)
    logits = torch.zeros(2 * b, 2 * b)
    rows = [phi_s, phi_sa]
    for r in range(2):
        for col in range(2):
            logits[r * b : (r + 1) * b, col * b : (col + 1) * b] = rows[r] @ psi.T / c
    if kind == "masked":
        for i in range(b):
            logits[i, i + b] = float("-inf")
            logits[i + b, i] = float("-inf")
    return sym_infonce_ref(logits)


def esr_batch(b=6, obs_dim=5, nr=4, nh=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, obs_dim, generator=g),
        torch.randint(nr, (b,), generator=g),
        torch.randint(nh, (b,), generator=g),
        torch.randn(b, obs_dim, generator=g),
    )


@pytest.mark.parametrize("kind", ["tiled", "masked", "separate"])
@pytest.mark.parametrize("scale", ["dim", "sqrt"])
def test_update_is_one_adam_step_on_the_explicit_infonce(kind, scale):
    d = 4  # sqrt(d) = 2 != d: the two scales give different losses
    cfg = AgentConfig(hidden=(8, 8), repr_dim=d, repr_lr=1e-2, contrastive=kind, logit_scale=scale)
    torch.manual_seed(0)
    rep = ESRRepresentation(5, 4, 3, cfg)
    with torch.no_grad():  # logits of order 1 (at init they are ~0 and every loss ~log 2B)
        rep.psi[-1].weight.mul_(30.0)
    batch = esr_batch()
    c = {"dim": float(d), "sqrt": math.sqrt(d)}[scale]

    # the reference: explicit loss on a copy of the networks, one plain torch Adam step
    ref = copy.deepcopy(rep)
    phi_sa, phi_s = ref.phis(*batch[:3])
    psi = ref.psi(batch[3])
    loss = expected_loss(phi_sa, phi_s, psi, kind, c)
    other_c = {"dim": math.sqrt(d), "sqrt": float(d)}[scale]
    other_loss = expected_loss(phi_sa, phi_s, psi, kind, other_c).item()
    mi = ((phi_sa - phi_s) * psi).sum(-1).detach().mean().item() / c
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.repr_lr)
    opt.zero_grad()
    loss.backward()
    opt.step()
    reward_before = rep.reward(*batch)

    info, reward = rep.update(*batch)
    assert info["repr_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert abs(other_loss - loss.item()) > 1e-3  # the scale is not a no-op
    assert info["mutual_info"] == pytest.approx(mi, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(reward, reward_before)
    assert not torch.allclose(rep.reward(*batch), reward_before, atol=1e-5)  # the step moved it
    for (name, got), want in zip(rep.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_masked_loss_differs_from_tiled_and_separate():
    """The three variants are different objectives on the same networks and batch."""
    losses = {}
    for kind in ("tiled", "masked", "separate"):
        torch.manual_seed(0)
        rep = ESRRepresentation(5, 4, 3, AgentConfig(hidden=(8,), repr_dim=4, contrastive=kind))
        losses[kind] = rep.update(*esr_batch())[0]["repr_loss"]
    assert len({round(v, 6) for v in losses.values()}) == 3, losses


def test_mutual_info_is_mean_joint_minus_marginal_diagonal():
    torch.manual_seed(1)
    rep = ESRRepresentation(5, 4, 3, AgentConfig(hidden=(8,), repr_dim=4))
    obs, a_r, a_h, goal = esr_batch(b=5, seed=3)
    with torch.no_grad():
        phi_sa, phi_s = rep.phis(obs, a_r, a_h)
        psi = rep.psi(goal)
        joint = (phi_sa @ psi.T).diagonal() / 4
        marginal = (phi_s @ psi.T).diagonal() / 4
    info, reward = rep.update(obs, a_r, a_h, goal)
    assert info["mutual_info"] == pytest.approx((joint - marginal).mean().item(), abs=1e-6)
    assert info["mutual_info"] == pytest.approx(reward.mean().item() / 4, abs=1e-6)


# ---- 3. the Q-learner ---------------------------------------------------------------------


def test_q_update_minimises_td_error_and_moves_target_by_tau():
    cfg = AgentConfig(hidden=(8,), gamma=0.9, tau=0.3, policy_lr=1e-2)
    torch.manual_seed(0)
    ql = QLearner(3, 4, cfg)
    with torch.no_grad():  # a target that differs from the online net
        for p in ql.q_target.parameters():
            p.add_(0.5 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    obs, nxt = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    action = torch.randint(4, (7,), generator=g)
    reward = torch.randn(7, generator=g)

    with torch.no_grad():
        q = ql.q(obs).numpy().astype(np.float64)
        q_next_target = ql.q_target(nxt).numpy().astype(np.float64)
        q_next_online = ql.q(nxt).numpy().astype(np.float64)
    r = reward.numpy().astype(np.float64)
    expected = np.mean((q[np.arange(7), action.numpy()] - (r + 0.9 * q_next_target.max(1))) ** 2)
    wrong = np.mean((q[np.arange(7), action.numpy()] - (r + 0.9 * q_next_online.max(1))) ** 2)
    target_before = [p.clone() for p in ql.q_target.parameters()]

    info = ql.q_update(obs, action, reward, nxt)
    assert info["q_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(wrong - expected) > 1e-3  # the target network, not the online one, bootstraps
    for t0, t1, online in zip(
        target_before, ql.q_target.parameters(), ql.q.parameters(), strict=True
    ):
        torch.testing.assert_close(t1, 0.7 * t0 + 0.3 * online.detach(), rtol=1e-5, atol=1e-6)
        assert not t1.requires_grad
    # and many steps on the batch drive the TD error down
    for _ in range(200):
        last = ql.q_update(obs, action, reward, nxt)["q_loss"]
    assert last < 0.2 * expected


def boltzmann_learner(n_actions, q_values, precision):
    """A QLearner whose Q(s, .) is the constant `q_values` (zero last-layer weights)."""
    ql = QLearner(2, n_actions, AgentConfig(hidden=(4,), precision_init=precision))
    last = ql.q[-1]
    set_(last.weight, np.zeros((n_actions, 4)))
    set_(last.bias, q_values)
    return ql


@pytest.mark.parametrize("precision", [1.5, 0.2])
def test_act_samples_softmax_of_precision_times_q(precision):
    q = np.array([0.0, 1.0, -0.5])
    ql = boltzmann_learner(3, q, precision)
    probs = np.exp(precision * q) / np.exp(precision * q).sum()
    n = 40_000
    obs = np.tile(np.array([[0.3, -1.0]], dtype=np.float32), (n, 1))
    a = ql.act(obs, np.random.default_rng(0))
    assert a.shape == (n,) and a.min() >= 0 and a.max() <= 2
    freq = np.bincount(a, minlength=3) / n
    np.testing.assert_allclose(freq, probs, atol=0.02)
    # a reproducible stream: the numpy generator alone decides the draws
    np.testing.assert_array_equal(ql.act(obs[:50], np.random.default_rng(5)),
                                  ql.act(obs[:50], np.random.default_rng(5)))  # fmt: skip


def entropy_np(beta, q):
    """Mean entropy of softmax(beta * log_softmax(q)) over the rows of q (float64)."""
    logp = q - np.log(np.exp(q).sum(1, keepdims=True))
    z = beta * logp
    logpi = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-(np.exp(logpi) * logpi).sum(1).mean())


def dual_setup(target_entropy, dual_lr=0.1, precision=1.0):
    torch.manual_seed(3)
    cfg = AgentConfig(hidden=(8,), target_entropy=target_entropy, dual_lr=dual_lr,
                      precision_init=precision)  # fmt: skip
    ql = QLearner(3, 4, cfg)
    with torch.no_grad():
        ql.q[-1].weight.mul_(20.0)  # a peaked Q, so the entropy depends visibly on beta
    obs = torch.randn(9, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        q = ql.q(obs).double().numpy()
    return ql, obs, q


@pytest.mark.parametrize("target", [0.1, 1.3])
def test_dual_step_is_a_finite_difference_gradient_step(target):
    ql, obs, q = dual_setup(target)
    beta = float(ql.precision)
    h = entropy_np(beta, q)
    assert 0.2 < h < 1.2  # between the two targets

    def f(b):
        return (target - entropy_np(b, q)) ** 2

    eps = 1e-5
    fd = (f(beta + eps) - f(beta - eps)) / (2 * eps)
    info = ql.dual_update(obs)
    assert info["entropy"] == pytest.approx(h, rel=1e-5)
    assert info["precision"] == pytest.approx(beta - 0.1 * fd, rel=1e-5)
    assert float(ql.precision) == pytest.approx(info["precision"])
    if target < h:  # too random: sharpen
        assert info["precision"] > beta
    else:  # too greedy: soften
        assert info["precision"] < beta


@pytest.mark.parametrize("target, bound", [(0.0, 100.0), (math.log(4) - 1e-3, 1e-3)])
def test_dual_step_clips_precision(target, bound):
    ql, obs, _ = dual_setup(target, dual_lr=1e6)
    info = ql.dual_update(obs)
    assert info["precision"] == pytest.approx(bound, rel=1e-6)


# ---- 4. AvE's empowerment proxy -----------------------------------------------------------


def grid(human, boxes, goal, n=5):
    env = VecGridWorld(len(human), n, len(boxes[0]), 0.2, 50)
    env.set_state(
        {
            "human": np.array(human),
            "boxes": np.array(boxes),
            "goal": np.array(goal),
            "dead": np.zeros(len(human), dtype=bool),
        }
    )
    return env


def make_grid(m):
    return VecGridWorld(m, 5, 2, 0.2, 50)


TRAPPED = ((0, 0), ((0, 1), (1, 0)), (4, 4))
OPEN = ((2, 2), ((4, 0), (4, 4)), (0, 0))


def ave(states, cfg=None, seed=0):
    """Our AvE, the human's mobility (ave_variant="mobility"; the paper's: test_ave.py)."""
    env = grid(*zip(*states, strict=True))
    cfg = dataclasses.replace(cfg or AgentConfig(), ave_variant="mobility")
    return ave_reward(make_grid, env.get_state(), np.random.default_rng(seed), cfg)


def test_ave_trapped_human_gets_log_of_the_floor():
    out = ave([TRAPPED])
    assert out.shape == (1,)
    assert out[0] == np.log(1e-3)


def test_ave_open_human_beats_trapped_and_rows_stay_separate():
    out = ave([TRAPPED, OPEN, TRAPPED])
    assert out[0] == out[2] == np.log(1e-3)
    assert out[1] > np.log(1e-3) + 2.0  # a spread of ~1 cell over 5 random steps


def test_ave_quirk_mostly_stays_and_gives_a_smaller_proxy():
    faithful = ave([OPEN], AgentConfig(ave_rollouts=200))
    quirk = ave([OPEN], AgentConfig(ave_rollouts=200, ave_quirk=True))
    # 5 steps with P(move) = 4/125 each: ~15% of rollouts move at all
    assert quirk[0] < faithful[0] - 1.0


def test_ave_ignores_the_hidden_goal():
    on_goal = ((2, 2), ((4, 0), (4, 4)), (2, 2))  # the human stands on its goal
    near_goal = ((2, 2), ((4, 0), (4, 4)), (2, 3))  # one step away
    a, b, c = ave([on_goal]), ave([near_goal]), ave([OPEN])
    assert a[0] > np.log(1e-3) + 2.0  # not frozen in the simulator
    assert a[0] == b[0] == c[0]  # the same draws give the same proxy whatever the goal


# ---- 5. Bayesian goal inference -----------------------------------------------------------


def test_goal_posterior_one_update_by_hand():
    env = grid([(1, 1)], [((0, 0), (2, 2))], [(0, 0)], n=3)
    post = GoalPosterior.uniform(1, 3)
    np.testing.assert_array_equal(post.goals[:4], [[0, 0], [0, 1], [0, 2], [1, 0]])
    # greedy actions from (1, 1) toward each cell (ties to the lower index, stay -0.1):
    # (0,0) left|up -> left; (0,1) up; (0,2) right|up -> right; (1,0) left; (1,1) stay;
    # (1,2) right; (2,0) left|down -> left; (2,1) down; (2,2) down|right -> down
    greedy = np.array([LEFT, UP, RIGHT, LEFT, STAY, RIGHT, LEFT, DOWN, DOWN])
    env.noise = 0.2
    post.update(env, np.array([RIGHT]), np.array([True]))
    expected = np.where(greedy == RIGHT, np.log(0.8 + 0.04), np.log(0.04))
    np.testing.assert_allclose(post.log_post[0], expected, rtol=1e-12)
    env.step(np.array([env.noop_robot_action]), np.array([RIGHT]))
    assert tuple(env.human[0]) == (1, 2)
    # from (1, 2) ((2, 2) holds a box, (1, 3) is off the grid): (0,0) left; (0,1) left|up ->
    # left; (0,2) up; (1,0) left; (1,1) left; (1,2) stay; (2,0) left; (2,1) left (1 against
    # stay's sqrt 2 - 0.1); (2,2) stay (blocked down/right reach 1, stay 1 - 0.1)
    greedy = np.array([LEFT, LEFT, UP, LEFT, LEFT, STAY, LEFT, LEFT, STAY])
    post.update(env, np.array([STAY]), np.array([True]))
    expected += np.where(greedy == STAY, np.log(0.84), np.log(0.04))
    np.testing.assert_allclose(post.log_post[0], expected, rtol=1e-12)
    assert tuple(post.map_goal()[0]) == (1, 2)  # the only cell consistent with both


def test_goal_posterior_finds_the_goal_of_a_greedy_walker():
    goal = (0, 4)
    env = grid([(4, 0)], [((4, 4), (0, 0))], [goal])
    env.noise = 0.2
    post = GoalPosterior.uniform(1, 5)
    steps = 0
    while not env.at_goal()[0]:
        a = env.greedy_human_action()
        post.update(env, a, ~env.frozen())
        env.step(np.array([env.noop_robot_action]), a)
        steps += 1
        assert steps < 20
    assert steps >= 6
    assert tuple(post.map_goal()[0]) == goal
    lp = post.log_post[0]
    true = np.flatnonzero((post.goals == goal).all(1))[0]
    assert lp[true] == pytest.approx(steps * np.log(0.84))  # every action was its greedy one
    assert np.sum(lp >= lp[true] - 1e-9) == 1  # and the MAP is unique


def test_goal_posterior_skips_frozen_envs():
    # env 0: the human stands on its goal (frozen); env 1: a free human
    env = grid([(1, 1), (3, 3)], [((0, 0), (4, 4))] * 2, [(1, 1), (0, 0)])
    env.noise = 0.2
    assert env.frozen().tolist() == [True, False]
    post = GoalPosterior.uniform(2, 5)
    post.log_post[:] = np.random.default_rng(0).normal(size=post.log_post.shape)
    before = post.log_post.copy()
    post.update(env, np.array([RIGHT, UP]), ~env.frozen())
    np.testing.assert_array_equal(post.log_post[0], before[0])
    assert not np.allclose(post.log_post[1], before[1])
    after = post.log_post.copy()
    post.update(env, np.array([LEFT, LEFT]), np.array([False, False]))
    np.testing.assert_array_equal(post.log_post, after)


# ---- 6. the goal-inference robot's planner -------------------------------------------------


def robot(cell, direction, n=5):
    return 5 * (cell[0] * n + cell[1]) + direction


def greedy_walk(env, steps=20):
    """Step a noise-free human greedily (robot idle) until it reaches its goal or `steps`."""
    for _ in range(steps):
        if env.frozen().all():
            break
        env.step(np.full(env.num_envs, env.noop_robot_action), env.greedy_human_action())
    return env


def copy_env(env):
    out = VecGridWorld(env.num_envs, env.size, env.num_boxes, 0.0, 50)
    out.set_state(env.get_state())
    return out


def test_plan_frees_a_trapped_human_without_crushing_it():
    env = grid([(0, 0)], [((0, 1), (1, 0))], [(0, 4)])
    a = plan_for_goal(env, np.array([[0, 4]]))
    sim = copy_env(env)
    sim.step(a, np.array([STAY]))
    assert not sim.dead[0]
    assert tuple(sim.boxes[0, 0]) != (0, 1) or tuple(sim.boxes[0, 1]) != (1, 0)
    assert greedy_walk(sim).at_goal()[0]
    # worked by hand: only pushing (0, 1) down clears row 0 (pushing it right leaves it in the
    # way at (0, 2), freeing (1, 0) does not tempt a human heading right, and pushing (0, 1)
    # left crushes the human)
    assert a[0] == robot((0, 1), DOWN)
    for bad in (env.noop_robot_action, robot((0, 1), RIGHT), robot((1, 0), DOWN)):
        other = copy_env(env)
        other.step(np.array([bad]), np.array([STAY]))
        assert not greedy_walk(other).at_goal()[0]
    crushed = copy_env(env)
    crushed.step(np.array([robot((0, 1), LEFT)]), np.array([STAY]))
    assert crushed.dead[0]


def test_plan_idles_when_the_human_is_at_its_goal_and_batches_envs():
    env = grid([(2, 2), (0, 0)], [((2, 3), (4, 4)), ((0, 1), (1, 0))], [(2, 2), (0, 4)])
    a = plan_for_goal(env, np.array([[2, 2], [0, 4]]))
    assert a.shape == (2,)
    assert a[0] == env.noop_robot_action
    assert a[1] == robot((0, 1), DOWN)  # the same answer as when planned alone


# ---- 7. training: determinism, metric lines, checkpoints --------------------------------


def tiny_make(n):
    return VecGridWorld(n, 5, 2, 0.2, 8)


def tiny_agent():
    return AgentConfig(repr_dim=4, hidden=(16,), batch_size=16, ave_rollouts=3, ave_length=2)


def tiny_loop(**kw):
    return LoopConfig(**{**dict(epochs=3, num_envs=4, warmup_epochs=1, repr_updates=2,
                                q_updates=2, dual_updates=1, log_every=1, buffer_epochs=2), **kw})  # fmt: skip


def weights(out):
    sd = {f"q.{k}": v.clone() for k, v in out["learner"].state_dict().items()}
    if out["representation"] is not None:
        sd.update({f"rep.{k}": v.clone() for k, v in out["representation"].state_dict().items()})
    return sd


def metric_lines(folder):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


@pytest.mark.parametrize("method", ["esr", "ave"])
def test_train_assistant_is_deterministic_per_seed(method):
    runs = [
        train_assistant(method, tiny_make, tiny_agent(), tiny_loop(), seed=s)
        for s in ([0, 1], [0, 1], [0, 2])
    ]
    a, b, c = runs
    assert a["curve"] == b["curve"] and len(a["curve"]) == 3
    assert [e for e, _ in a["curve"]] == [1, 2, 3]
    assert a["mi_curve"] == b["mi_curve"]
    assert len(a["mi_curve"]) == (3 if method == "esr" else 0)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert wa.keys() == wb.keys() == wc.keys()
    assert "q.precision" in wa and any(k.startswith("q.q_target.") for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (a["representation"] is None) == (method == "ave")


def test_train_assistant_logs_every_epoch(tmp_path):
    ctx = RunContext.standalone(tmp_path, "esr", None, quiet=True)
    train_assistant("esr", tiny_make, tiny_agent(), tiny_loop(), seed=0, ctx=ctx)
    lines = metric_lines(tmp_path)
    assert [r["step"] for r in lines] == [1, 2, 3]
    for m in lines:
        assert {"train_return", "repr_loss", "mutual_info", "q_loss", "precision"} <= m.keys()


@pytest.mark.parametrize("method", ["esr", "ave"])
def test_a_killed_training_continues_from_its_checkpoint_exactly(tmp_path, method):
    """Killed right after its first checkpoint (epoch 2 of 5), a training restarted on the same
    folder loads it and ends with the weights, precision, curves and metric lines of an
    uninterrupted one: the networks, optimisers, replay buffer, generator and logging windows
    all come back (log_every 3 leaves a window half-filled at the checkpoint)."""
    loop = tiny_loop(epochs=5, log_every=3, checkpoint_every=2)

    epochs = []

    def train(folder, resume=False):
        ctx = RunContext.standalone(tmp_path / folder, "esr", None, resume=resume, quiet=True)
        ctx.advance = epochs.append  # a unit's progress: called once per epoch trained
        return train_assistant(method, tiny_make, tiny_agent(), loop, seed=(0, 7), ctx=ctx)

    whole = train("whole")
    with crash_after_checkpoint(1), pytest.raises(SimulatedCrash):
        train("killed")
    assert Checkpointer(tmp_path / "killed").last_step() == 2
    epochs.clear()
    resumed = train("killed", resume=True)
    assert len(epochs) == 3  # epochs 3 to 5 only
    assert resumed["curve"] == whole["curve"] and resumed["mi_curve"] == whole["mi_curve"]
    wa, wb = weights(whole), weights(resumed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metric_lines(tmp_path / "killed") == metric_lines(tmp_path / "whole")
    assert [r["step"] for r in metric_lines(tmp_path / "whole")] == [3, 5]


def test_replay_buffer_arrays_restore_it_exactly():
    env, rng = tiny_make(3), np.random.default_rng(0)
    buffer = ReplayBuffer(capacity=3 * 9 * 2)  # two rollouts of 3 episodes of 9 states
    for _ in range(3):  # the first rollout is dropped
        buffer.add_rollout(rollout(env, RandomRobot(), rng))
    copy_ = ReplayBuffer(capacity=buffer.capacity)
    copy_.load_state_arrays({k: torch.as_tensor(v) for k, v in buffer.state_arrays().items()})
    assert list(np.unique(copy_.episode_id)) == [3, 4, 5, 6, 7, 8]
    ep = rollout(env, RandomRobot(), rng)
    buffer.add_rollout(ep)
    copy_.add_rollout(ep)
    a, b = (
        buffer.sample(8, np.random.default_rng(1), 0.9),
        copy_.sample(8, np.random.default_rng(1), 0.9),
    )
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(buffer.state_arrays().values(), copy_.state_arrays().values())
    )
    assert ReplayBuffer().state_arrays() == {}


@pytest.mark.parametrize("method", ["random", "goal_inference", "ESR", ""])
def test_train_assistant_rejects_other_methods(method):
    with pytest.raises(ValueError, match="esr"):
        train_assistant(method, tiny_make, tiny_agent(), tiny_loop(), seed=0)


# ---- 8. config validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("gamma", 1.0),
        ("gamma", 0.0),
        ("tau", 0.0),
        ("tau", 1.5),
        ("contrastive", "infonce"),
        ("logit_scale", "log"),
        ("hidden", ()),
        ("hidden", (8, 0)),
        ("repr_dim", 0),
        ("batch_size", 0),
        ("repr_lr", 0.0),
        ("target_entropy", -0.1),
        ("precision_init", 200.0),
        ("ave_rollouts", 0),
        ("ave_length", 0),
    ],
)
def test_agent_config_rejects_bad_values(field, value):
    cfglib.validate(AgentConfig())
    with pytest.raises(AlignlabError, match=rf"^Invalid config: {field} must be"):
        cfglib.validate(AgentConfig(**{field: value}))


def test_a_bad_agent_config_stops_training_before_it_starts():
    with pytest.raises(AlignlabError, match=r"^Invalid config: gamma must be"):
        train_assistant("esr", tiny_make, AgentConfig(gamma=1.0), tiny_loop(), seed=0)


def test_bad_logit_scale_fails_when_the_representation_is_built():
    with pytest.raises(ValueError, match="logit_scale"):
        ESRRepresentation(5, 4, 3, AgentConfig(hidden=(8,), logit_scale="log"))


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("num_envs", 0),
        ("buffer_epochs", 0),
        ("eval_episodes", 0),
        ("log_every", 0),
        ("checkpoint_every", 0),
        ("warmup_epochs", -1),
        ("repr_updates", -1),
        ("q_updates", -1),
        ("dual_updates", -1),
    ],
)
def test_loop_config_rejects_bad_values(field, value):
    cfglib.validate(LoopConfig())
    cfglib.validate(LoopConfig(warmup_epochs=0, repr_updates=0, q_updates=0, dual_updates=0))
    with pytest.raises(AlignlabError, match=rf"^Invalid config: {field} must be"):
        cfglib.validate(LoopConfig(**{field: value}))


def test_loop_config_needs_epochs_after_the_warmup():
    cfglib.validate(LoopConfig(epochs=11, warmup_epochs=10))
    with pytest.raises(
        AlignlabError, match=r"^Invalid config: warmup_epochs must be < epochs \(10\)"
    ):
        cfglib.validate(LoopConfig(epochs=10, warmup_epochs=10))


def test_a_target_entropy_at_or_above_uniform_is_refused():
    with pytest.raises(ValueError, match="target_entropy"):
        QLearner(3, 4, AgentConfig(hidden=(8,), target_entropy=math.log(4)))
