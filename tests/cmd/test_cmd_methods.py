"""The six methods: updates learn, the CMD-2 target is the change of variables, heads are exact."""

import dataclasses

import numpy as np
import pytest
import torch

from alignlab.cmd import check_quasimetric, random_mdp, sample_episodes
from alignlab.cmd.experiments.stitching import epsilon_greedy
from alignlab.cmd.methods import METHODS, ActionSpec, MethodConfig
from alignlab.cmd.methods.cmd2 import (
    MaxResidualReLU,
    max_residual,
    mrn_pairwise,
    off_diagonal,
    successor_target,
)
from alignlab.cmd.train import make_method
from alignlab.core.checkpoint import Checkpointer
from alignlab.nn import MRN, ContrastiveCritic
from alignlab.rl import EpisodeDataset, to_torch

TINY = MethodConfig(batch_size=16, hidden=(32,), repr_dim=16, lr=3e-3)
FIRST_LOSS = {
    "cmd2": "critic_loss",
    "cmd1": "critic_loss",
    "crl": "critic_loss",
    "gcbc": "bc_loss",
    "td": "td_loss",
    "qrl": "qrl_loss",
}


def tabular_data(seed=0, S=6, A=2, n=30, length=20):
    mdp = random_mdp(np.random.default_rng(seed), S, A, 2)
    spec = ActionSpec.discrete_actions(A)
    eps = sample_episodes(mdp, np.random.default_rng(seed + 1), n, length)
    data = EpisodeDataset.from_episodes(
        [{"obs": e["obs"], "action": spec.encode(e["actions"])} for e in eps]
    )
    return mdp, spec, data


@pytest.mark.parametrize("name", list(METHODS))
def test_update_reduces_its_loss_on_a_fixed_batch(name):
    _, spec, data = tabular_data()
    method = make_method(name, data.obs.shape[1], spec, TINY, 0)
    batch = to_torch(data.sample(16, np.random.default_rng(0), 0.8))
    losses = [method.update(batch)[FIRST_LOSS[name]] for _ in range(60)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < losses[0]
    actions = method.act(data.obs[:4], data.obs[4:8])
    assert actions.shape == (4,) and set(actions) <= set(range(spec.candidates.shape[0]))


def test_continuous_candidate_actions_are_unit_directions():
    spec = ActionSpec.directions(8)
    method = make_method("cmd2", 2, spec, TINY, 0)
    a = method.act(np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32))
    assert a.shape == (3, 2) and np.allclose(np.linalg.norm(a, axis=1), 1.0)


def test_cmd2_target_is_the_change_of_variables_by_hand():
    torch.manual_seed(0)
    critic = ContrastiveCritic(5, 3, repr_dim=4, hidden=(8,))
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    goal, goal_act = torch.randn(4, 3), torch.randn(4, 2)
    sa, ga = torch.cat([obs, act], 1), torch.cat([goal, goal_act], 1)
    target = successor_target(critic, ga, goal, critic.logits(sa, goal))
    f = lambda s, a, g: float(critic.forward(torch.cat([s, a])[None], g[None]).detach())  # noqa: E731
    for i in range(4):
        for j in range(4):
            by_hand = f(goal[j], goal_act[j], goal[j]) - f(obs[i], act[i], goal[j])
            assert target[i, j].item() == pytest.approx(by_hand, abs=1e-5)


def test_fast_mrn_pairwise_matches_the_head_and_its_gradient():
    torch.manual_seed(1)
    x = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 10, dtype=torch.float64, requires_grad=True)
    fast, slow = mrn_pairwise(x, y), MRN(10).pairwise(x, y)
    assert torch.allclose(fast, slow, atol=1e-6)
    w = torch.randn(7, 5, dtype=torch.float64)
    gx, gy = torch.autograd.grad((fast * w).sum(), (x, y))
    hx, hy = torch.autograd.grad((slow * w).sum(), (x, y))
    assert torch.allclose(gx, hx, atol=1e-6) and torch.allclose(gy, hy, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, m", [(70, 45), (32, 64), (1, 3)])
def test_blocked_max_residual_is_max_over_the_last_axis_exactly(n, m, dtype):
    g = torch.Generator().manual_seed(n * 100 + m)
    xa = torch.randn(n, 16, generator=g, dtype=dtype)
    ya = torch.randn(m, 16, generator=g, dtype=dtype)
    xa[:, 3] = xa[:, 7]  # integer-valued ties between coordinates: the first one wins
    ya[:, 3] = ya[:, 7]
    xa[: n // 2] = xa[: n // 2].round()
    ya[: m // 2] = ya[: m // 2].round()
    ref = torch.max(xa[:, None] - ya[None], dim=-1)
    top, k = max_residual(xa, ya)  # more than one block of 32 rows, and a partial one
    assert torch.equal(top, ref.values) and torch.equal(k, ref.indices)
    assert torch.equal(k, (xa[:, None] - ya[None]).argmax(-1))
    for bad in (float("nan"), float("inf")):  # the fallback: torch.max's index, as argmax
        x2 = xa.clone()
        x2[0, 5] = bad
        ref = torch.max(x2[:, None] - ya[None], dim=-1)
        top, k = max_residual(x2, ya)
        assert torch.equal(k, ref.indices) and torch.equal(top.isnan(), ref.values.isnan())


def test_max_residual_relu_matches_the_gather_form_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    xa = torch.randn(40, 8, generator=g, requires_grad=True)
    ya = torch.randn(37, 8, generator=g, requires_grad=True)
    w = torch.randn(40, 37, generator=g)
    fast = MaxResidualReLU.apply(xa, ya)
    k = (xa[:, None] - ya[None]).argmax(-1).detach()
    slow = (xa.gather(1, k) - ya.gather(1, k.T).T).relu()
    assert torch.equal(fast, slow)
    gx, gy = torch.autograd.grad((fast * w).sum(), (xa, ya))
    hx, hy = torch.autograd.grad((slow * w).sum(), (xa, ya))
    assert torch.equal(gx, hx) and torch.equal(gy, hy)


def test_off_diagonal_is_the_boolean_mask_in_order():
    m = torch.arange(49.0).reshape(7, 7).requires_grad_()
    off = off_diagonal(m)
    assert torch.equal(off.reshape(-1), m[~torch.eye(7, dtype=torch.bool)])
    (grad,) = torch.autograd.grad(off.contiguous().mean(), m)
    assert torch.equal(grad, (~torch.eye(7, dtype=torch.bool)).float() / 42)


def test_learned_quasimetric_head_has_no_triangle_violations():
    mdp, spec, data = tabular_data(S=6, A=2)
    cfg = MethodConfig(batch_size=32, hidden=(32,), repr_dim=16, lr=3e-3, goal_current=True)
    method = make_method("cmd2", data.obs.shape[1], spec, cfg, 0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        method.update(to_torch(data.sample(32, rng, 0.8, min_offset=0)))
    S, A = mdp.n_states, mdp.n_actions
    sa = np.concatenate([np.repeat(np.eye(S), A, 0), np.tile(np.eye(A), (S, 1))], 1)
    with torch.no_grad():
        z = method.qd.sa_encoder(torch.as_tensor(sa, dtype=torch.float32)).double()
        D = method.qd.head.double().pairwise(z, z).numpy()
    check = check_quasimetric(D)
    assert check.ok and check.n_triples == (S * A) ** 3
    assert D[~np.eye(S * A, dtype=bool)].max() > 0  # not trivially zero


def restored_copy(a, tmp_path, name, spec, cfg, obs_dim):
    """A method built from another seed, then loaded from a checkpoint of `a` (weights,
    optimiser state) in the core's training-state scheme, as a unit resumes."""
    ck = Checkpointer(tmp_path)
    ck.save(3, modules={"method": a}, optimizers={"method": a.optimizer})
    b = make_method(name, obs_dim, spec, cfg, 5)
    ck.load().restore(modules={"method": b}, optimizers={"method": b.optimizer})
    return b


@pytest.mark.parametrize("name", list(METHODS))
def test_checkpoint_round_trip_continues_identically(name, tmp_path):
    _, spec, data = tabular_data()
    cfg = dataclasses.replace(TINY, bc_coef=0.3)  # the behaviour prior is saved too
    a = make_method(name, data.obs.shape[1], spec, cfg, 0)
    batch = to_torch(data.sample(16, np.random.default_rng(0), 0.8))
    for _ in range(3):
        a.update(batch)
    b = restored_copy(a, tmp_path, name, spec, cfg, data.obs.shape[1])
    assert [a.update(batch) for _ in range(2)] == [b.update(batch) for _ in range(2)]


@pytest.mark.parametrize("name", list(METHODS))
def test_behaviour_prior_trains_and_steers_acting(name):
    """bc_coef > 0: every method fits pi_beta(a | s) with its own optimiser, and a huge
    coefficient makes acting follow the prior's argmax (Method.act)."""
    _, spec, data = tabular_data()
    cfg = dataclasses.replace(TINY, bc_coef=1e6)
    method = make_method(name, data.obs.shape[1], spec, cfg, 0)
    batch = to_torch(data.sample(16, np.random.default_rng(0), 0.8))
    before = method.behaviour_loss(batch).item()
    for _ in range(40):
        method.update(batch)
    assert method.behaviour_loss(batch).item() < before
    obs = torch.as_tensor(data.obs[:8])
    with torch.no_grad():
        prior = method.behaviour(obs).argmax(1).numpy()
    assert (method.act(data.obs[:8], data.obs[8:16]) == prior).all()
    assert make_method(name, data.obs.shape[1], spec, TINY, 0).behaviour is None


def test_epsilon_greedy_evaluation_policy():
    greedy = lambda obs, goal: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    assert epsilon_greedy(greedy, 5, 0.0, np.random.default_rng(0)) is greedy
    policy = epsilon_greedy(greedy, 5, 1.0, np.random.default_rng(0))
    actions = policy(np.zeros((5000, 2)), np.zeros((5000, 2)))
    assert set(actions) == set(range(5)) and abs((actions == 0).mean() - 0.2) < 0.03
    some = epsilon_greedy(greedy, 5, 0.1, np.random.default_rng(0))(np.zeros((5000, 2)), None)
    assert abs((some != 0).mean() - 0.08) < 0.02  # 0.1 explore x 4/5 non-greedy


def continuous_batch(n=64, seed=0):
    """Random 2D states, unit actions, goals: a batch in the layout EpisodeDataset.sample gives."""
    rng = np.random.default_rng(seed)
    unit = rng.normal(size=(2, n, 2))
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    obs, goal = rng.normal(size=(2, n, 2))
    batch = {"obs": obs, "next_obs": obs + 0.1 * unit[0], "goal": goal}
    batch.update(action=unit[0], next_action=unit[1], goal_action=unit[1])
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.items()}


@pytest.mark.parametrize("name", [m for m in METHODS if m != "gcbc"])
def test_actor_learns_the_argmax_of_the_value_and_leaves_the_value_alone(name):
    """cfg.actor: the actor's loss moves the actor's weights only (the value networks see only
    their own loss), and the actor ends up taking the action the value ranks best."""
    spec = ActionSpec.directions(16)
    cfg = dataclasses.replace(TINY, actor=True, actor_bc=0.0, lr=1e-2)
    method = make_method(name, 2, spec, cfg, 0)
    batch = continuous_batch()
    loss = method.actor_loss(batch)
    loss.backward(inputs=list(method.actor.parameters()))
    others = [p for n, p in method.named_parameters() if not n.startswith("actor.")]
    assert all(p.grad is None for p in others)
    assert all(p.grad is not None for p in method.actor.parameters())
    # with the value networks frozen, actor steps alone climb the value of its own actions
    for p in others:
        p.requires_grad_(False)
    opt = torch.optim.Adam(method.actor.parameters(), lr=1e-2)
    obs, goal = batch["obs"][:16], batch["goal"][:16]
    goal_action = batch["goal_action"][:16]

    def value_of(actions):
        with torch.no_grad():
            return method.value(obs, actions, goal, goal_action)

    start = value_of(method.actor_action(obs, goal)).mean()
    for _ in range(300):
        opt.zero_grad()
        (-method.value(obs, method.actor_action(obs, goal), goal, goal_action).mean()).backward()
        opt.step()
    with torch.no_grad():
        best = torch.stack([value_of(c.expand(16, -1)) for c in method.candidates], 1).amax(1)
    end = value_of(method.actor_action(obs, goal))
    assert (
        end.mean() > start and (end >= best - 0.05 * best.abs().clamp(min=1)).float().mean() > 0.8
    )
    acts = method.act(obs.numpy(), goal.numpy())
    assert acts.shape == (16, 2) and np.allclose(np.linalg.norm(acts, axis=1), 1.0, atol=1e-5)


def test_actor_trains_inside_update_and_is_checkpointed(tmp_path):
    spec = ActionSpec.directions(16)
    cfg = dataclasses.replace(TINY, actor=True)
    a = make_method("cmd2", 2, spec, cfg, 0)
    batch = continuous_batch()
    before = [p.detach().clone() for p in a.actor.parameters()]
    a.update(batch)
    assert any(not torch.equal(x, p) for x, p in zip(before, a.actor.parameters()))
    b = restored_copy(a, tmp_path, "cmd2", spec, cfg, 2)
    assert a.update(batch) == b.update(batch)
    assert make_method("gcbc", 2, spec, cfg, 0).actor is None  # GCBC is a policy already
