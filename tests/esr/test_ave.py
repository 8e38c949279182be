"""The paper's AvE (`agents/ave.py::AVEPolicy.compute_reward`, `smart_features=False`) and ours,
"AvE (human mobility)", kept as `ave_variant="mobility"` (esr.agent, module docstring).

Hand-worked cases drive the simulated human with a scripted generator, so every coordinate
after the simulated steps is known; the clamped action law is checked by counting the
actions the simulator receives; the mobility variant is pinned to the values the code gave
before the paper's form existed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignlab.esr.agent import METHODS, AgentConfig, ave_form, ave_reward
from alignlab.esr.experiments import gridworld as grid_exp
from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.train import RandomRobot, rollout


def state(human, boxes, goal=None, dead=None) -> dict:
    human = np.asarray(human)
    n = len(human)
    return {
        "human": human,
        "boxes": np.asarray(boxes),
        "goal": np.asarray(goal if goal is not None else [[4, 4]] * n),
        "dead": np.asarray(dead if dead is not None else [False] * n),
        "t": np.array(0),
    }


class Scripted:
    """A stand-in for np.random.Generator: `integers` returns the next scripted action array
    (and records the upper bound it was asked for)."""

    def __init__(self, *actions):
        self.actions = [np.asarray(a, dtype=np.int64) for a in actions]
        self.highs = []

    def integers(self, high, size):
        self.highs.append(high)
        a = self.actions.pop(0)
        assert a.shape == (size,)
        return a


class Recording(VecGridWorld):
    """The gridworld, keeping every human action its `step` receives."""

    seen: list

    def step(self, robot_action, human_action):
        self.seen.append(np.array(human_action))
        return super().step(robot_action, human_action)


def make5(k=2):
    return lambda m: VecGridWorld(m, 5, k, 0.2, 50)


def cfg(**kw) -> AgentConfig:
    return AgentConfig(**kw)


# ---- the pooled variance, by hand ---------------------------------------------------------

TRAPPED = state([[0, 0]], [[[0, 1], [1, 0]]])  # boxed into its corner: every action stays
OPEN = state([[2, 2]], [[[4, 0], [4, 4]]])


def test_object_coordinates_are_the_original_state_vector():
    env = make5(3)(2)
    env.set_state(state([[0, 0], [2, 3]], [[[0, 1], [1, 0], [4, 4]], [[1, 1], [3, 2], [0, 4]]]))
    np.testing.assert_array_equal(
        env.object_coordinates(), [[0, 0, 0, 1, 1, 0, 4, 4], [2, 3, 1, 1, 3, 2, 0, 4]]
    )
    assert env.object_coordinates().dtype == np.float64


def test_paper_trapped_human_pools_the_fixed_coordinates():
    # whatever the draws, every continuation ends at [0, 0, 0, 1, 1, 0]: 20 copies of it
    # pooled have mean 1/3 and E[x^2] = 1/3, so the variance is 1/3 - 1/9 = 2/9
    out = ave_reward(make5(), TRAPPED, np.random.default_rng(0), cfg())
    assert out.shape == (1,)
    assert out[0] == pytest.approx(math.log(2 / 9), abs=1e-12)
    assert out[0] == pytest.approx(np.log(np.var(np.tile([0, 0, 0, 1, 1, 0], 20))), abs=1e-12)


def test_paper_one_step_each_direction_by_hand():
    # 4 continuations of 1 step: left, down, right, up from (2, 2); boxes fixed at (4,0), (4,4)
    rng = Scripted([0, 1, 2, 3])
    out = ave_reward(make5(), OPEN, rng, cfg(ave_rollouts=4, ave_length=1, ave_quirk=False))
    pool = [2, 1, 4, 0, 4, 4] + [3, 2, 4, 0, 4, 4] + [2, 3, 4, 0, 4, 4] + [1, 2, 4, 0, 4, 4]
    # 24 numbers, sum 64, sum of squares 228: var = 228/24 - (64/24)^2 = 43/18
    assert np.var(pool) == pytest.approx(43 / 18)
    assert out[0] == pytest.approx(math.log(43 / 18), abs=1e-12)
    assert rng.highs == [5]  # uniform draws over the human's 5 actions when the quirk is off


def test_paper_clamps_draws_to_stay_by_hand():
    # draws from the robot's 125 actions: 0 left, 1 down, 4 and 124 both "stay"
    rng = Scripted([0, 1, 4, 124])
    out = ave_reward(make5(), OPEN, rng, cfg(ave_rollouts=4, ave_length=1))
    pool = [2, 1, 4, 0, 4, 4] + [3, 2, 4, 0, 4, 4] + [2, 2, 4, 0, 4, 4] * 2
    assert rng.highs == [125]  # the default paper form draws from the robot's action count
    assert out[0] == pytest.approx(np.log(np.var(pool)), abs=1e-12)


def test_paper_two_steps_rows_stay_separate():
    # two states, 2 continuations each, 2 steps; actions are per row of the repeated batch:
    # rows 0-1 belong to TRAPPED (nothing moves), rows 2-3 to OPEN
    both = state([[0, 0], [2, 2]], [[[0, 1], [1, 0]], [[4, 0], [4, 4]]])
    rng = Scripted([2, 1, 3, 0], [1, 1, 3, 0])
    out = ave_reward(make5(), both, rng, cfg(ave_rollouts=2, ave_length=2, ave_quirk=False))
    trapped = [0, 0, 0, 1, 1, 0] * 2
    # OPEN, row 2: up then up -> (0, 2); row 3: left then left -> (2, 0)
    open_ = [0, 2, 4, 0, 4, 4] + [2, 0, 4, 0, 4, 4]
    np.testing.assert_allclose(out, np.log([np.var(trapped), np.var(open_)]), atol=1e-12)


def test_paper_crushed_human_walks_off_its_box_and_ignores_the_goal():
    # the authors' simulated step (`step_human_action`) never freezes: a human under a box
    # (dead) or on its goal still moves; ours keeps the frozen state frozen
    crushed = state([[2, 2]], [[[2, 2], [4, 4]]], goal=[[2, 2]], dead=[True])
    out = ave_reward(make5(), crushed, Scripted([3, 3]), cfg(ave_rollouts=2, ave_length=1))
    assert out[0] == pytest.approx(math.log(np.var([1, 2, 2, 2, 4, 4] * 2)), abs=1e-12)
    assert out[0] == pytest.approx(math.log(1.25), abs=1e-12)
    ours = cfg(ave_rollouts=2, ave_length=1, ave_variant="mobility")
    assert ave_reward(make5(), crushed, Scripted([3, 3]), ours)[0] == math.log(1e-3)


def test_mobility_by_hand():
    # the human's rows [2, 3, 2, 1] and columns [1, 2, 3, 2] each have variance 1/2
    rng = Scripted([0, 1, 2, 3])
    out = ave_reward(make5(), OPEN, rng, cfg(ave_rollouts=4, ave_length=1, ave_variant="mobility"))
    assert out[0] == pytest.approx(math.log(0.5 + 1e-3), abs=1e-12)
    assert rng.highs == [5]  # uniform over the human's actions unless ave_quirk


def test_the_floor_only_guards_equal_coordinates():
    # one box, on the (crushed) human at (3, 3), who stays: all pooled numbers are 3, variance
    # 0, which the code's log(var) turns into -inf; ours floors it at 1e-3. Two boxes differ
    # in some coordinate, so with >= 2 boxes the floor never applies.
    env = lambda m: VecGridWorld(m, 5, 1, 0.2, 50, start="random")  # noqa: E731
    crushed = state([[3, 3]], [[[3, 3]]], dead=[True])
    out = ave_reward(env, crushed, Scripted([4, 4]), cfg(ave_rollouts=2, ave_length=1))
    assert out[0] == math.log(1e-3)


# ---- the clamped action distribution ------------------------------------------------------


def test_clamped_draws_are_stay_with_121_in_125():
    """randint(0, 125) clamped to stay (index 4): P(stay) = 121/125, 1/125 per move. With
    n = 100,000 draws the binomial std of a count is sqrt(n p (1 - p)): 55.7 for stay (mean
    96,800), 28.2 for each move (mean 800); each count must lie within 5 std."""
    sim = Recording(1, 5, 2, 0.2, 50)
    sim.seen = []
    reps, length = 20_000, 5
    ave_reward(sim, OPEN, np.random.default_rng(2024), cfg(ave_rollouts=reps, ave_length=length))
    draws = np.concatenate(sim.seen)
    n = reps * length
    assert len(draws) == n
    counts = np.bincount(draws, minlength=5)
    assert len(counts) == 5  # nothing above "stay"
    for action, p in enumerate([1 / 125] * 4 + [121 / 125]):
        std = math.sqrt(n * p * (1 - p))
        assert abs(counts[action] - n * p) < 5 * std, (action, counts[action], n * p)
    # and a chi-square over the 5 cells (4 degrees of freedom; P(chi2 > 18.47) = 0.001)
    expected = n * np.array([1 / 125] * 4 + [121 / 125])
    assert ((counts - expected) ** 2 / expected).sum() < 18.47


def test_uniform_draws_without_the_quirk():
    sim = Recording(1, 5, 2, 0.2, 50)
    sim.seen = []
    ave_reward(sim, OPEN, np.random.default_rng(5), cfg(ave_rollouts=10_000, ave_quirk=False))
    counts = np.bincount(np.concatenate(sim.seen), minlength=5)
    n, p = 50_000, 0.2
    assert np.all(np.abs(counts - n * p) < 5 * math.sqrt(n * p * (1 - p)))


# ---- our variant, unchanged ---------------------------------------------------------------

#: a random state (6 envs, 3 boxes, 3 steps into episodes of VecGridWorld(start="random")
#: from seed 123) and the proxies the code gave for it, with np.random.default_rng(7), before
#: the paper's form was added (then the only form; `ave_quirk` False and True)
REF_STATE = state(
    [[0, 3], [2, 1], [2, 3], [0, 4], [2, 2], [2, 1]],
    [
        [[1, 0], [4, 2], [3, 0]],
        [[0, 4], [2, 2], [4, 3]],
        [[4, 0], [1, 0], [1, 2]],
        [[4, 3], [3, 4], [3, 3]],
        [[1, 1], [2, 4], [2, 3]],
        [[4, 0], [3, 3], [1, 1]],
    ],
    goal=[[0, 4], [2, 1], [3, 0], [0, 4], [0, 0], [2, 1]],
)
REF = {
    False: [
        0.4768551041948372,
        0.29620812217121484,
        0.06625579577706527,
        -0.23762287257904385,
        -0.0891044750828208,
        0.1297116065216573,
    ],
    True: [
        -2.5936060667113416,
        -3.0261914810386994,
        -3.698929789967438,
        -3.0261914810387003,
        -6.907755278982137,
        -3.079113882493042,
    ],
}


@pytest.mark.parametrize("quirk", [False, True])
def test_mobility_equals_the_previous_implementation(quirk):
    make = lambda m: VecGridWorld(m, 5, 3, 0.2, 50, start="random")  # noqa: E731
    c = cfg(ave_variant="mobility", ave_quirk=quirk)
    out = ave_reward(make, REF_STATE, np.random.default_rng(7), c)
    np.testing.assert_allclose(out, REF[quirk], rtol=0, atol=1e-12)
    if not quirk:  # unset means off for the mobility form, as the old default
        unset = ave_reward(make, REF_STATE, np.random.default_rng(7), cfg(ave_variant="mobility"))
        np.testing.assert_array_equal(unset, out)


# ---- which form, and which state it rewards -----------------------------------------------


def test_defaults_and_forms():
    c = AgentConfig()
    assert (c.ave_variant, c.ave_quirk, c.ave_rollouts, c.ave_length) == ("paper", None, 20, 5)
    assert ave_form(make5()(1), c) == "paper"
    assert ave_form(make5()(1), cfg(ave_variant="mobility")) == "mobility"

    class NoCoordinates:  # e.g. Overcooked: its AvE stays the mobility form
        set_state = None

    assert ave_form(NoCoordinates(), c) == "mobility"
    assert {"ave", "ave_mobility"} <= set(METHODS)


def test_overcooked_keeps_its_ave_whatever_the_variant():
    from alignlab.esr.overcooked_human import AssistedOvercooked

    env = AssistedOvercooked("cramped_room", 2, 20, 0.1)
    rng = np.random.default_rng(0)
    env.reset(rng)
    for _ in range(3):
        env.step(rng.integers(env.robot_actions, size=2), env.human_act(rng))
    make = lambda m: AssistedOvercooked("cramped_room", m, 20, 0.1)  # noqa: E731
    assert not hasattr(env, "object_coordinates") and ave_form(env, AgentConfig()) == "mobility"
    paper = ave_reward(make, env.get_state(), np.random.default_rng(1), cfg(ave_rollouts=4))
    ours = ave_reward(
        make, env.get_state(), np.random.default_rng(1), cfg(ave_rollouts=4, ave_variant="mobility")
    )
    np.testing.assert_array_equal(paper, ours)


@pytest.mark.parametrize("of_s_t", [True, False])
def test_rollout_attaches_the_proxy_to_s_t_or_s_next(of_s_t):
    env = VecGridWorld(3, 5, 2, 0.2, 12)

    def cell(state, rng):  # a stand-in proxy: the human's cell index of the state it is given
        return (state["human"] @ np.array([5, 1])).astype(np.float32)

    ep = rollout(env, RandomRobot(), np.random.default_rng(0), cell, of_s_t)
    cells = ep["obs"][:, :, :25].argmax(-1)  # (N, T + 1): the human's cell at s_0 .. s_T
    expected = cells[:, :-1] if of_s_t else cells[:, 1:]
    np.testing.assert_array_equal(ep["proxy"], expected)


# ---- the experiment reports both ----------------------------------------------------------


def test_claims_use_the_paper_ave_and_report_ours_beside_it():
    ks = [2, 10]
    values = {
        "esr": {2: [30, 31, 29], 10: [20, 21, 19]},
        "ave": {2: [25, 26, 24], 10: [5, 6, 4]},
        "ave_mobility": {2: [35, 36, 34], 10: [30, 31, 29]},  # would fail both claims
        "random": {2: [15, 16, 14], 10: [5, 6, 5]},
    }
    per = {m: {str(k): {"return": {"values": v[k]}} for k in ks} for m, v in values.items()}
    r = {"obstacles": ks, "methods": list(values), "per": per}
    text, holds = grid_exp.claim_margin_grows(r)
    assert holds and "AvE (paper code)" in text and "AvE (human mobility)" in text
    text, holds = grid_exp.claim_ave_no_better(r)
    assert holds and "AvE (human mobility)" in text
    assert grid_exp.LABELS["ave"] == "AvE (paper code)"
    assert grid_exp.LABELS["ave_mobility"] == "AvE (human mobility)"
    assert grid_exp.GridworldConfig().methods == METHODS  # both AvE run by default
