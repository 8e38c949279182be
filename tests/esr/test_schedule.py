"""The training loop's update schedules and ESR's free/trapped diagnostics
(`alignlab.esr.train`, `alignlab.esr.gridworld.free_human_mask`):

- the "paper" schedule (the authors' agents/base.py, `Base.update`): per epoch every
  contrastive step, then every critic step on a fresh batch whose reward is `reward()` of the
  updated representation, then the dual steps (100 when configured), seen by spies;
- the free / trapped-or-frozen classification of hand-built states, and against a loop
  over the states of random rollouts;
- `free_share` and `mi_free_minus_trapped` of `_diagnostics` on a hand-built buffer, and the
  diagnostics in a tiny run's metric lines and curves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from esr_tiny import tiny_agent, tiny_loop, tiny_make

from alignlab.core.context import RunContext
from alignlab.esr import train as train_mod
from alignlab.esr.agent import AgentConfig, ESRRepresentation, QLearner
from alignlab.esr.gridworld import VecGridWorld, free_human_mask
from alignlab.esr.train import (
    DIAGNOSTIC_BATCH,
    DIAGNOSTICS,
    LoopConfig,
    RandomRobot,
    ReplayBuffer,
    _diagnostics,
    rollout,
    train_assistant,
)

N = 5  # grid size of the hand-built states


# ---- 1. the paper schedule ------------------------------------------------------------------


def spy_training(monkeypatch, loop: LoopConfig):
    """Train ESR with spies on the representation's steps, its reward, the critic's and dual
    steps and every batch; returns the events per epoch (split at each rollout)."""
    events: list = []
    batches: list = []
    seen: dict = {}
    orig = {
        "update": ESRRepresentation.update,
        "reward": ESRRepresentation.reward,
        "q": QLearner.q_update,
        "dual": QLearner.dual_update,
        "to_torch": train_mod.to_torch,
        "rollout": train_mod.rollout,
    }

    def update(self, obs, a_r, a_h, goal):
        seen["rep"] = self
        events.append(("repr", obs))
        return orig["update"](self, obs, a_r, a_h, goal)

    def q_update(self, obs, action, reward, next_obs):
        b = batches[-1]
        assert obs is b["obs"]  # the batch drawn for this step
        rep = seen["rep"]
        expected = rep.reward(b["obs"], b["action"][:, 0], b["action"][:, 1], b["goal"])
        events.append(("q", obs, torch.equal(reward, expected)))
        return orig["q"](self, obs, action, reward, next_obs)

    def dual_update(self, obs):
        events.append(("dual",))
        return orig["dual"](self, obs)

    def to_torch(batch, *a, **kw):
        out = orig["to_torch"](batch, *a, **kw)
        batches.append(out)
        return out

    def rollout_(*a, **kw):
        events.append(("rollout",))
        return orig["rollout"](*a, **kw)

    monkeypatch.setattr(ESRRepresentation, "update", update)
    monkeypatch.setattr(QLearner, "q_update", q_update)
    monkeypatch.setattr(QLearner, "dual_update", dual_update)
    monkeypatch.setattr(train_mod, "to_torch", to_torch)
    monkeypatch.setattr(train_mod, "rollout", rollout_)
    out = train_assistant("esr", tiny_make, tiny_agent(), loop, seed=(0, "schedule"))
    epochs, cur = [], None
    for e in events:
        if e[0] == "rollout":
            cur = []
            epochs.append(cur)
        else:
            cur.append(e)
    return epochs, out


def test_paper_schedule_runs_repr_then_q_on_updated_reward_then_dual(monkeypatch):
    loop = tiny_loop(schedule="paper", repr_updates=3, q_updates=4, dual_updates=100)
    epochs, _ = spy_training(monkeypatch, loop)
    assert len(epochs) == loop.epochs
    for ev in epochs:
        kinds = [e[0] for e in ev]
        assert kinds == ["repr"] * 3 + ["q"] * 4 + ["dual"] * 100
        # every critic step: its reward is `reward()` of the representation after all 3 steps
        # (no contrastive step happens between them), on a fresh batch of its own
        assert all(e[2] for e in ev if e[0] == "q")
        obs = [e[1] for e in ev if e[0] in ("repr", "q")]
        assert len({id(o) for o in obs}) == len(obs)


def test_interleaved_schedule_alternates_on_shared_batches_with_pre_step_rewards(monkeypatch):
    loop = tiny_loop(repr_updates=3, q_updates=2, dual_updates=2)
    assert loop.schedule == "interleaved"  # the default
    epochs, _ = spy_training(monkeypatch, loop)
    for ev in epochs:
        kinds = [e[0] for e in ev]
        assert kinds == ["repr", "q", "repr", "q", "repr", "dual", "dual"]
        # contrastive step i and critic step i share a batch; the critic's reward is the one
        # from before the step, so it is not `reward()` of the stepped representation
        for i in (0, 2):
            assert ev[i + 1][1] is ev[i][1]
            assert not ev[i + 1][2]


def test_schedules_differ_and_ave_ignores_the_schedule():
    a = train_assistant("esr", tiny_make, tiny_agent(), tiny_loop(), seed=0)
    b = train_assistant("esr", tiny_make, tiny_agent(), tiny_loop(schedule="paper"), seed=0)
    assert a["curve"][0] == b["curve"][0]  # the warm-up epoch's rollout is the same
    wa, wb = a["learner"].state_dict(), b["learner"].state_dict()
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train_assistant("ave", tiny_make, tiny_agent(), tiny_loop(), seed=0)
    d = train_assistant("ave", tiny_make, tiny_agent(), tiny_loop(schedule="paper"), seed=0)
    wc, wd = c["learner"].state_dict(), d["learner"].state_dict()
    assert all(torch.equal(wc[k], wd[k]) for k in wc) and c["curve"] == d["curve"]


def test_schedule_is_checked():
    from alignlab.core import config as cfglib
    from alignlab.core.errors import AlignlabError

    with pytest.raises(AlignlabError, match=r"^Invalid config: schedule must be"):
        cfglib.validate(LoopConfig(schedule="alternating"))


def test_gridworld_paper_preset_uses_the_authors_schedule_and_rates():
    from alignlab.core.experiment import get

    exp = get("esr.gridworld")
    paper, quick = exp.presets["paper"], exp.presets["quick"]
    assert paper.loop.schedule == "paper" and quick.loop.schedule == "interleaved"
    assert paper.loop.dual_updates == 100 and paper.loop.warmup_epochs == 0
    assert paper.loop.repr_updates == paper.loop.q_updates == 100
    assert paper.agent.repr_lr == 1e-4


# ---- 2. free / trapped ------------------------------------------------------------------------


def obs_of(human, boxes) -> np.ndarray:
    o = np.zeros(2 * N * N, np.float32)
    o[human[0] * N + human[1]] = 1
    for r, c in boxes:
        o[N * N + r * N + c] = 1
    return o


def episodes(*eps) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Flat obs and episode_end of episodes given as lists of (human, boxes)."""
    obs = np.stack([obs_of(h, b) for ep in eps for h, b in ep])
    lengths = [len(ep) for ep in eps]
    ends = np.repeat(np.cumsum(lengths) - 1, lengths)
    return obs, ends, lengths


CORNER = [(0, 1), (1, 0)]
BOXED_IN = [((0, 0), CORNER)] * 3  # trapped in the corner the whole episode
WALKS = [((2, 2), CORNER), ((2, 2), CORNER), ((2, 3), CORNER)]  # waits, then moves right
STAYS = [((3, 3), CORNER)] * 3  # open neighbours, never moves (e.g. frozen at its goal)
CRUSHED = [((0, 0), [(0, 0), (1, 0)])] * 3  # a box on the human: dead, frozen
WALLED = [((4, 4), [(4, 3), (3, 4)]), ((4, 4), [(4, 2), (3, 4)]), ((4, 3), [(4, 2), (3, 4)])]


def test_free_human_on_hand_built_states():
    obs, ends, _ = episodes(BOXED_IN, WALKS, STAYS, CRUSHED, WALLED)
    free = free_human_mask(obs, ends, N)
    assert free.tolist() == [
        *(False, False, False),  # boxed in: no open neighbour
        *(True, True, False),  # an open neighbour and moves later (or now); last state never
        *(False, False, False),  # open neighbours, but never moves again
        *(False, False, False),  # crushed
        *(False, True, False),  # boxed in until the robot pushes a box away, then it walks
    ]
    assert np.array_equal(VecGridWorld(1, N).free_human(obs, ends), free)


def test_free_human_needs_it_alive_and_ignores_the_next_episode():
    # a box on the human's cell means dead, whatever the next state shows
    dead_then_moved = [((2, 2), [(2, 2), (0, 0)]), ((2, 3), [(4, 4), (0, 0)])]
    obs, ends, _ = episodes(dead_then_moved, STAYS, WALKS)
    free = free_human_mask(obs, ends, N)
    # the STAYS episode's human is at (3, 3) and the next episode starts at (2, 2): not a move
    assert free.tolist() == [False, False, False, False, False, True, True, False]


def loop_reference(obs, ends) -> np.ndarray:
    """free_human_mask written as plain loops over the states."""
    out = []
    for i in range(len(obs)):
        cell = [int(np.argmax(obs[j, : N * N])) for j in range(i, ends[i] + 1)]
        box = obs[i, N * N :].reshape(N, N) > 0.5
        r, c = divmod(cell[0], N)
        alive = not box[r, c]
        opened = any(
            0 <= r + dr < N and 0 <= c + dc < N and not box[r + dr, c + dc]
            for dr, dc in ((0, -1), (1, 0), (0, 1), (-1, 0))
        )
        moves = any(x != cell[0] for x in cell[1:])
        out.append(alive and opened and moves)
    return np.array(out)


@pytest.mark.parametrize("boxes", [2, 7])
def test_free_human_matches_a_loop_on_rollouts(boxes):
    env, rng = VecGridWorld(6, N, boxes, 0.2, 15), np.random.default_rng(boxes)
    buffer = ReplayBuffer()
    for _ in range(3):
        buffer.add_rollout(rollout(env, RandomRobot(), rng))
    free = env.free_human(buffer.obs, buffer.episode_end)
    assert np.array_equal(free, loop_reference(buffer.obs, buffer.episode_end))
    assert 0 < free.sum() < len(free)


# ---- 3. the diagnostics -----------------------------------------------------------------------


def hand_buffer() -> ReplayBuffer:
    obs, _, lengths = episodes(BOXED_IN, WALKS, STAYS, WALLED)
    buffer = ReplayBuffer()
    buffer.add_arrays(obs, np.zeros((len(obs), 2), np.int64), lengths)
    return buffer


def test_free_share_of_a_hand_built_buffer():
    buffer = hand_buffer()
    # anchors (states with a successor): 2 per episode, free: WALKS' two and WALLED's second
    out = _diagnostics(VecGridWorld(1, N), buffer, None, 0.9, np.random.default_rng(0))
    assert out == {"free_share": pytest.approx(3 / 8)}
    # an environment without `free_human` (Overcooked) and no representation: nothing
    assert _diagnostics(object(), buffer, None, 0.9, np.random.default_rng(0)) == {}


def test_mi_free_minus_trapped_and_reward_std_by_hand():
    torch.manual_seed(0)
    buffer = hand_buffer()
    rng = np.random.default_rng(3)
    buffer.action = rng.integers(0, 5, size=(len(buffer), 2))
    rep = ESRRepresentation(2 * N * N, 5 * N * N, 5, AgentConfig(repr_dim=4, hidden=(8,)))
    out = _diagnostics(VecGridWorld(1, N), buffer, rep, 0.9, np.random.default_rng(1))
    b = buffer.sample(DIAGNOSTIC_BATCH, np.random.default_rng(1), 0.9)
    with torch.no_grad():
        phi_sa, phi_s = rep.phis(*(torch.as_tensor(x) for x in (b["obs"], *b["action"].T)))
        r = ((phi_sa - phi_s) * rep.psi(torch.as_tensor(b["goal"]))).sum(-1).double().numpy()
    free = free_human_mask(buffer.obs, buffer.episode_end, N)[b["index"]]
    assert 0 < free.sum() < len(free)
    assert out["reward_std"] == pytest.approx(r.std(), rel=1e-5)
    est = r / 4  # the logit divisor: repr_dim, so the units of `mutual_info`
    assert out["mi_free_minus_trapped"] == pytest.approx(
        est[free].mean() - est[~free].mean(), rel=1e-4, abs=1e-7
    )
    assert out["free_share"] == pytest.approx(3 / 8)


def test_diagnostics_in_a_tiny_runs_metrics_and_curves(tmp_path, monkeypatch):
    def make(n):
        return VecGridWorld(n, 5, 2, 0.2, 12, start="random")

    ctx = RunContext.standalone(tmp_path, "esr", None, quiet=True)
    out = train_assistant("esr", make, tiny_agent(), tiny_loop(), seed=0, ctx=ctx)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    for line in lines:
        assert {"mutual_info", *DIAGNOSTICS} <= line.keys()
        assert 0 < line["free_share"] < 1 and line["reward_std"] > 0
    assert [row[0] for row in out["diag_curve"]] == [1, 2, 3]
    assert all(len(row) == 1 + len(DIAGNOSTICS) for row in out["diag_curve"])
    assert out["diag_curve"][-1][1:] == [lines[-1][k] for k in DIAGNOSTICS]
    # the diagnostics draw from their own stream: without them the training is the same
    again = train_assistant("esr", make, tiny_agent(), tiny_loop(), seed=0)
    assert again["curve"] == out["curve"] and again["diag_curve"] == out["diag_curve"]
    ave = train_assistant("ave", make, tiny_agent(), tiny_loop(), seed=0)
    assert all(row[1] is None and row[2] is None and row[3] > 0 for row in ave["diag_curve"])
    monkeypatch.setattr(train_mod, "_diagnostics", lambda *a, **k: {})
    bare = train_assistant("esr", make, tiny_agent(), tiny_loop(), seed=0)
    assert bare["curve"] == out["curve"] and bare["mi_curve"] == out["mi_curve"]
    for name in ("learner", "representation"):
        mine, theirs = out[name].state_dict(), bare[name].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
