"""The ESR obstacle gridworld: hand-made cases run on both the single-env reference
(`gridworld_env.GridWorldEnv`) and the vectorised `gridworld.VecGridWorld`, step-for-step
equivalence of the two on random episodes, the eps-greedy human, rendering and config errors.
Semantics: ESR notes, "Obstacle gridworld" (see the gridworld_env module docstring)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.gridworld_env import GridWorldEnv, ansi, frame, strip

LEFT, DOWN, RIGHT, UP, STAY = range(5)


def robot(cell, direction, size=5):
    """The robot action pushing the box on (row, col) `cell` in `direction`."""
    return 5 * (cell[0] * size + cell[1]) + direction


# ---- one interface over both implementations ---------------------------------------------------


class Single:
    def __init__(self, **kw):
        self.env = GridWorldEnv(**kw)
        self.env.reset(seed=0)

    def set(self, human, boxes, goal):
        self.env.reset(options={"state": {"human": human, "boxes": boxes, "goal": goal}})

    def step(self, robot_action, human_action):
        obs, reward, terminated, truncated, info = self.env.joint_step(robot_action, human_action)
        assert not terminated
        assert info["dead"] == self.dead and info["at_goal"] == self.at_goal
        assert info["human_action"] == human_action
        np.testing.assert_array_equal(obs, self.obs)
        return reward

    @property
    def human(self):
        return self.env.human

    @property
    def boxes(self):
        return list(self.env.boxes)

    @property
    def dead(self):
        return self.env.dead

    @property
    def at_goal(self):
        return self.env.at_goal()

    @property
    def obs(self):
        return self.env.observe()

    def greedy(self):
        return self.env.greedy_human_action()


class Vec:
    def __init__(self, **kw):
        self.env = VecGridWorld(1, **kw)
        self.env.reset(np.random.default_rng(0))

    def set(self, human, boxes, goal):
        self.env.set_state(
            {
                "human": np.array([human]),
                "boxes": np.array([boxes], dtype=np.int64).reshape(1, -1, 2),
                "goal": np.array([goal]),
                "dead": np.array([any(tuple(b) == tuple(human) for b in boxes)]),
                "t": 0,
            }
        )

    def step(self, robot_action, human_action):
        reward = self.env.step(np.array([robot_action]), np.array([human_action]))
        assert reward.shape == (1,) and reward.dtype == np.float32
        return float(reward[0])

    @property
    def human(self):
        return tuple(int(v) for v in self.env.human[0])

    @property
    def boxes(self):
        return [tuple(int(v) for v in b) for b in self.env.boxes[0]]

    @property
    def dead(self):
        return bool(self.env.dead[0])

    @property
    def at_goal(self):
        return bool(self.env.at_goal()[0])

    @property
    def obs(self):
        obs = self.env.observe()
        assert obs.dtype == np.float32 and obs.shape == (1, self.env.obs_dim)
        return obs[0]

    def greedy(self):
        return int(self.env.greedy_human_action()[0])


IMPLS = ["single", "vec"]


@pytest.fixture(params=IMPLS)
def make(request):
    cls = Single if request.param == "single" else Vec

    def build(human, boxes, goal, **kw):
        kw.setdefault("num_boxes", len(boxes))
        kw.setdefault("start", "random")
        env = cls(**kw)
        env.set(human, boxes, goal)
        return env

    return build


# ---- hand-made dynamics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "direction, target", [(LEFT, (2, 1)), (DOWN, (3, 2)), (RIGHT, (2, 3)), (UP, (1, 2))]
)
def test_push_in_each_direction(make, direction, target):
    env = make((0, 0), [(2, 2), (4, 4)], (4, 0))
    assert env.step(robot((2, 2), direction), STAY) == 0.0
    assert env.boxes == [target, (4, 4)]
    assert env.human == (0, 0) and not env.dead
    obs = np.zeros(50, dtype=np.float32)
    obs[0] = 1.0
    obs[25 + target[0] * 5 + target[1]] = obs[25 + 24] = 1.0
    np.testing.assert_array_equal(env.obs, obs)


@pytest.mark.parametrize(
    "box, direction",
    [((0, 2), UP), ((2, 4), RIGHT), ((4, 1), DOWN), ((3, 0), LEFT)],  # walls
)
def test_push_into_wall_is_noop(make, box, direction):
    env = make((2, 2), [box, (1, 1)], (4, 4))
    env.step(robot(box, direction), STAY)
    assert env.boxes == [box, (1, 1)]


def test_push_into_box_is_noop(make):
    env = make((0, 0), [(2, 2), (2, 3), (1, 2)], (4, 4))
    env.step(robot((2, 2), RIGHT), STAY)
    env.step(robot((2, 2), UP), STAY)
    env.step(robot((1, 2), DOWN), STAY)
    assert env.boxes == [(2, 2), (2, 3), (1, 2)]
    env.step(robot((2, 3), RIGHT), STAY)  # the blocker moves away: now (2, 2) can follow
    env.step(robot((2, 2), RIGHT), STAY)
    assert env.boxes == [(2, 3), (2, 4), (1, 2)]


def test_empty_cell_and_stay_direction_are_noops(make):
    env = make((0, 0), [(2, 2), (3, 3)], (4, 4))
    before = env.obs.copy()
    for d in range(5):
        env.step(robot((1, 1), d), STAY)  # no box on (1, 1)
    env.step(robot((2, 2), STAY), STAY)  # direction 4 on a box
    env.step(robot((0, 0), RIGHT), STAY)  # the human's cell holds no box
    env.step(4, STAY)  # the documented no-op robot action
    assert env.boxes == [(2, 2), (3, 3)] and env.human == (0, 0)
    np.testing.assert_array_equal(env.obs, before)


@pytest.mark.parametrize(
    "human, action, after",
    [
        ((0, 0), LEFT, (0, 0)),  # walls
        ((0, 0), UP, (0, 0)),
        ((4, 4), DOWN, (4, 4)),
        ((4, 4), RIGHT, (4, 4)),
        ((2, 2), RIGHT, (2, 2)),  # box at (2, 3)
        ((1, 3), DOWN, (1, 3)),
        ((2, 2), LEFT, (2, 1)),  # free moves
        ((2, 2), DOWN, (3, 2)),
        ((2, 2), UP, (1, 2)),
        ((2, 2), STAY, (2, 2)),
    ],
)
def test_human_blocked_by_walls_and_boxes(make, human, action, after):
    env = make(human, [(2, 3), (3, 4)] if human != (1, 3) else [(2, 3), (0, 0)], (3, 0))
    env.step(4, action)
    assert env.human == after and not env.dead


def test_corner_start_traps_the_human(make):
    env = make((0, 0), [(0, 1), (1, 0)], (4, 4), start="corner")
    for action in range(5):
        env.step(4, action)
        assert env.human == (0, 0)


def test_crushing_freezes_everything(make):
    env = make((2, 2), [(2, 3), (0, 0)], (4, 4))
    assert env.step(robot((2, 3), LEFT), STAY) == 0.0
    assert env.dead and env.boxes == [(2, 2), (0, 0)] and env.human == (2, 2)
    frozen = env.obs.copy()
    assert frozen[12] == 1.0 and frozen[25 + 12] == 1.0  # human and box on the same cell
    for robot_action, human_action in [
        (robot((2, 2), UP), UP),
        (robot((2, 2), DOWN), LEFT),
        (robot((0, 0), RIGHT), DOWN),
        (4, RIGHT),
    ]:
        assert env.step(robot_action, human_action) == 0.0
        assert env.dead and env.boxes == [(2, 2), (0, 0)] and env.human == (2, 2)
        np.testing.assert_array_equal(env.obs, frozen)


def test_human_moves_before_the_push(make):
    # the human steps onto (2, 2) first; the box pushed there in the same step crushes it
    env = make((2, 1), [(2, 3), (0, 0)], (4, 4))
    env.step(robot((2, 3), LEFT), RIGHT)
    assert env.dead and env.human == (2, 2)
    # the human leaves (2, 2) first; the same push then misses it
    env = make((2, 2), [(2, 3), (0, 0)], (4, 4))
    env.step(robot((2, 3), LEFT), UP)
    assert not env.dead and env.human == (1, 2) and env.boxes == [(2, 2), (0, 0)]
    # the human's move is blocked by the box's old cell, not its new one
    env = make((2, 1), [(2, 2), (0, 0)], (4, 4))
    env.step(robot((2, 2), DOWN), RIGHT)
    assert env.human == (2, 1) and env.boxes == [(3, 2), (0, 0)]


def test_goal_reward_skips_the_push_and_freezes(make):
    env = make((2, 1), [(3, 2), (0, 4)], (2, 2))
    assert env.step(robot((3, 2), UP), STAY) == 0.0  # not at goal: the push applies
    assert env.boxes == [(2, 2), (0, 4)]
    env.step(robot((2, 2), DOWN), STAY)
    assert env.boxes == [(3, 2), (0, 4)] and env.human == (2, 1)
    # the human reaches the goal: reward 1, and this step's push (onto the human) is skipped
    assert env.step(robot((3, 2), UP), RIGHT) == 1.0
    assert env.at_goal and not env.dead
    assert env.human == (2, 2) and env.boxes == [(3, 2), (0, 4)]
    frozen = env.obs.copy()
    for robot_action, human_action in [(robot((3, 2), UP), LEFT), (robot((0, 4), LEFT), UP)]:
        assert env.step(robot_action, human_action) == 1.0
        assert env.human == (2, 2) and env.boxes == [(3, 2), (0, 4)] and not env.dead
        np.testing.assert_array_equal(env.obs, frozen)


def test_start_at_goal_pays_from_the_first_step(make):
    env = make((1, 1), [(3, 3), (4, 4)], (1, 1))
    for _ in range(3):
        assert env.step(robot((3, 3), UP), DOWN) == 1.0
    assert env.human == (1, 1) and env.boxes == [(3, 3), (4, 4)]


# ---- the greedy human -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "human, boxes, goal, stay_bonus, greedy",
    [
        ((2, 2), [(4, 4), (0, 0)], (2, 3), 0.1, RIGHT),
        ((2, 2), [(4, 4), (4, 3)], (0, 2), 0.1, UP),
        # a blocked move (right, into the box) only ties staying; the bonus makes stay win
        ((0, 0), [(0, 1), (4, 4)], (0, 2), 0.1, STAY),
        # without the bonus the tie (left, right, up and stay all stay put) goes to left
        ((0, 0), [(0, 1), (4, 4)], (0, 2), 0.0, LEFT),
        # trapped in the corner: stay
        ((0, 0), [(0, 1), (1, 0)], (3, 3), 0.1, STAY),
        # ties between two improving moves go to the lowest index
        ((2, 2), [(4, 4), (0, 4)], (0, 0), 0.1, LEFT),  # left and up
        ((2, 2), [(0, 0), (0, 4)], (4, 4), 0.1, DOWN),  # down and right
        ((2, 2), [(4, 4), (0, 0)], (4, 0), 0.1, LEFT),  # left and down
        # at the goal the human stays
        ((2, 2), [(4, 4), (0, 0)], (2, 2), 0.1, STAY),
        # the direct move is blocked, staying scores sqrt(5) - 0.1: a sideways move to
        # distance 2 wins, and a blocked move with only sideways moves of sqrt(5) loses to stay
        ((2, 2), [(2, 3), (0, 0)], (1, 4), 0.1, UP),
        ((2, 2), [(2, 3), (0, 0)], (1, 4), 1.0, STAY),
        ((2, 2), [(2, 3), (0, 0)], (2, 4), 0.1, STAY),
    ],
)
def test_greedy_human(make, human, boxes, goal, stay_bonus, greedy):
    assert make(human, boxes, goal, stay_bonus=stay_bonus).greedy() == greedy


def test_human_action_probs():
    env = GridWorldEnv(noise=0.3, start="random")
    env.reset(options={"state": {"human": (2, 2), "boxes": [(2, 3), (0, 0)], "goal": (3, 4)}})
    np.testing.assert_allclose(env.human_action_probs(), [0.06, 0.76, 0.06, 0.06, 0.06])


@pytest.mark.parametrize("noise", [0.2, 0.6])
def test_single_env_human_is_eps_greedy(noise):
    env = GridWorldEnv(noise=noise, start="random")
    state = {"human": (2, 2), "boxes": [(2, 3), (0, 0)], "goal": (3, 4)}  # greedy: down
    env.reset(seed=123, options={"state": state})
    draws = 10_000
    counts = np.zeros(5)
    for _ in range(draws):
        env.reset(options={"state": state})  # keeps the seeded np_random
        counts[env.step(0)[4]["human_action"]] += 1
    expected = (1 - noise) * np.eye(5)[DOWN] + noise / 5
    np.testing.assert_allclose(counts / draws, expected, atol=0.02)
    np.testing.assert_allclose(env.human_action_probs(), expected)


@pytest.mark.parametrize("noise", [0.2, 0.6])
def test_vec_human_act_is_eps_greedy(noise):
    env = VecGridWorld(500, noise=noise, start="random")
    env.set_state(
        {
            "human": np.tile([[2, 2]], (500, 1)),
            "boxes": np.tile([[[2, 3], [0, 0]]], (500, 1, 1)),
            "goal": np.tile([[3, 4]], (500, 1)),  # greedy: down
            "dead": np.zeros(500, dtype=bool),
            "t": 0,
        }
    )
    rng = np.random.default_rng(7)
    actions = np.concatenate([env.human_act(rng) for _ in range(20)])
    assert actions.dtype == np.int64 and actions.shape == (10_000,)
    expected = (1 - noise) * np.eye(5)[DOWN] + noise / 5
    np.testing.assert_allclose(
        np.bincount(actions, minlength=5) / len(actions), expected, atol=0.02
    )


# ---- resets -----------------------------------------------------------------------------------


def _neighbours(cell, n):
    r, c = cell
    return {(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))} & {
        (i, j) for i in range(n) for j in range(n)
    }


def _check_reset_state(human, boxes, goal, n, k, start):
    assert len(boxes) == k
    assert len(set(boxes)) == k, "box cells must be distinct"
    assert human not in boxes
    assert goal != human and goal not in boxes
    for cell in (human, goal, *boxes):
        assert 0 <= cell[0] < n and 0 <= cell[1] < n
    if start == "corner":
        r, c = human
        assert r in (0, n - 1) and c in (0, n - 1)
        same_row = (r, 1 if c == 0 else n - 2)
        same_col = (1 if r == 0 else n - 2, c)
        assert boxes[:2] == [same_row, same_col]
        assert _neighbours(human, n) <= set(boxes), "the corner start traps the human"


RESET_CONFIGS = [(5, k, "corner") for k in (2, 5, 7, 10)] + [
    (5, 0, "random"),
    (5, 10, "random"),
    (6, 5, "corner"),
    (5, 23, "corner"),
]


@pytest.mark.parametrize("size, k, start", RESET_CONFIGS)
def test_single_reset(size, k, start):
    env = GridWorldEnv(size=size, num_boxes=k, start=start)
    corners = set()
    for seed in range(200):
        obs, info = env.reset(seed=seed)
        _check_reset_state(env.human, env.boxes, env.goal, size, k, start)
        assert obs in env.observation_space
        assert obs.sum() == 1 + k and not info["dead"] and not info["at_goal"]
        assert env.t == 0 and not env.dead
        corners.add(env.human)
    if start == "corner":
        assert len(corners) == 4
    obs0, _ = env.reset(seed=5)
    state0 = env.get_state()
    obs1, _ = env.reset(seed=5)
    assert env.get_state() == state0
    np.testing.assert_array_equal(obs0, obs1)


@pytest.mark.parametrize("size, k, start", RESET_CONFIGS)
def test_vec_reset(size, k, start):
    env = VecGridWorld(200, size=size, num_boxes=k, start=start)
    env.reset(np.random.default_rng(0))
    assert env.human.shape == (200, 2) and env.boxes.shape == (200, k, 2)
    assert env.t == 0 and not env.dead.any()
    for i in range(200):
        human = tuple(int(v) for v in env.human[i])
        boxes = [tuple(int(v) for v in b) for b in env.boxes[i]]
        goal = tuple(int(v) for v in env.goal[i])
        _check_reset_state(human, boxes, goal, size, k, start)
    if start == "corner":
        assert len({tuple(h) for h in env.human.tolist()}) == 4
    obs = env.observe()
    assert obs.shape == (200, 2 * size * size) and obs.dtype == np.float32
    assert (obs.sum(axis=1) == 1 + k).all()


def test_reset_goal_is_uniform_over_free_cells():
    env = GridWorldEnv(num_boxes=2)
    counts = {}
    for seed in range(4000):
        env.reset(seed=seed)
        if env.human == (0, 0):
            counts[env.goal] = counts.get(env.goal, 0) + 1
    assert len(counts) == 22  # 25 cells minus the human and its two boxes
    freq = np.array(list(counts.values())) / sum(counts.values())
    assert np.abs(freq - 1 / 22).max() < 0.03


# ---- equivalence: single envs vs the vectorised env -------------------------------------------

EQUIV_CONFIGS = [
    (5, 2, "corner", "single->vec"),
    (5, 5, "corner", "vec->single"),
    (5, 10, "corner", "single->vec"),
    (5, 2, "random", "vec->single"),
    (5, 10, "random", "single->vec"),
    (6, 2, "corner", "vec->single"),
    (6, 5, "random", "single->vec"),
    (6, 10, "corner", "vec->single"),
    (5, 0, "random", "single->vec"),  # no boxes at all
    (17, 12, "random", "vec->single"),  # 289 cells: the greedy human without its lookup table
]


def _single_state_arrays(singles):
    return {
        "human": np.array([e.human for e in singles], dtype=np.int64),
        "boxes": np.array([e.boxes for e in singles], dtype=np.int64).reshape(len(singles), -1, 2),
        "goal": np.array([e.goal for e in singles], dtype=np.int64),
        "dead": np.array([e.dead for e in singles]),
        "t": singles[0].t,
    }


def _robot_actions(rng, vec_boxes, size):
    """Mostly pushes of existing boxes (so that boxes move, block and crush), some uniform."""
    n_env, k = vec_boxes.shape[:2]
    actions = rng.integers(5 * size * size, size=n_env)
    if k:
        b = vec_boxes[np.arange(n_env), rng.integers(k, size=n_env)]
        push = 5 * (b[:, 0] * size + b[:, 1]) + rng.integers(5, size=n_env)
        actions = np.where(rng.random(n_env) < 0.7, push, actions)
    return actions.astype(np.int64)


@pytest.mark.parametrize("size, k, start, direction", EQUIV_CONFIGS)
def test_vec_matches_single(size, k, start, direction):
    n_env, steps = 8, 60
    rng = np.random.default_rng(size * 100 + k)
    kw = {"size": size, "num_boxes": k, "start": start}
    singles = [GridWorldEnv(**kw) for _ in range(n_env)]
    vec = VecGridWorld(n_env, **kw)
    if direction == "single->vec":
        for i, e in enumerate(singles):
            e.reset(seed=1000 * size + 10 * k + i)
        vec.set_state(_single_state_arrays(singles))
    else:
        vec.reset(rng)
        state = vec.get_state()
        for i, e in enumerate(singles):
            e.reset(
                options={
                    "state": {
                        "human": state["human"][i],
                        "boxes": state["boxes"][i],
                        "goal": state["goal"][i],
                    }
                }
            )
    returns = np.zeros(n_env)
    ever_dead = np.zeros(n_env, dtype=bool)
    for t in range(steps):
        # identical states, observations and greedy choices before every step
        assert vec.t == t and all(e.t == t for e in singles)
        np.testing.assert_array_equal(vec.human, [e.human for e in singles])
        np.testing.assert_array_equal(
            vec.boxes, np.array([e.boxes for e in singles]).reshape(n_env, k, 2)
        )
        np.testing.assert_array_equal(vec.goal, [e.goal for e in singles])
        np.testing.assert_array_equal(vec.dead, [e.dead for e in singles])
        np.testing.assert_array_equal(vec.at_goal(), [e.at_goal() for e in singles])
        np.testing.assert_array_equal(vec.frozen(), [e.frozen() for e in singles])
        np.testing.assert_array_equal(vec.observe(), np.stack([e.observe() for e in singles]))
        greedy = vec.greedy_human_action()
        np.testing.assert_array_equal(greedy, [e.greedy_human_action() for e in singles])
        # human actions: half greedy (so humans reach goals), half uniform
        human = np.where(rng.random(n_env) < 0.5, greedy, rng.integers(5, size=n_env))
        robot_actions = _robot_actions(rng, vec.boxes, size)
        reward = vec.step(robot_actions, human)
        single_reward = []
        for e, a_r, a_h in zip(singles, robot_actions, human):
            obs, r, terminated, truncated, info = e.joint_step(a_r, a_h)
            assert not terminated and truncated == (t + 1 >= e.horizon)
            single_reward.append(r)
        np.testing.assert_array_equal(reward, np.array(single_reward, dtype=np.float32))
        returns += reward
        ever_dead |= vec.dead
    np.testing.assert_array_equal(vec.human, [e.human for e in singles])
    np.testing.assert_array_equal(vec.dead, [e.dead for e in singles])
    np.testing.assert_array_equal(vec.observe(), np.stack([e.observe() for e in singles]))
    # the episodes were not trivial: someone scored or somebody got crushed
    assert returns.sum() > 0 or ever_dead.any()


def test_vec_set_state_from_singles_any_batch():
    """A state copied from one single env into a vectorised batch of any size, and back."""
    single = GridWorldEnv(num_boxes=5)
    single.reset(seed=3)
    vec = VecGridWorld(1, num_boxes=5)
    vec.set_state(_single_state_arrays([single] * 3))
    assert vec.observe().shape == (3, 50)
    np.testing.assert_array_equal(vec.observe(), np.stack([single.observe()] * 3))
    state = vec.get_state()
    other = GridWorldEnv(num_boxes=5)
    other.reset(options={"state": {key: state[key][2] for key in ("human", "boxes", "goal")}})
    assert other.get_state() == single.get_state()


# ---- gymnasium API, rendering, errors ---------------------------------------------------------


@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
def test_check_env(render_mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec, cannot test other render modes"
        check_env(GridWorldEnv(render_mode=render_mode), skip_render_check=False)
        check_env(GridWorldEnv(size=6, num_boxes=7, start="random", render_mode=render_mode))


def test_spaces_and_step_api():
    env = GridWorldEnv(size=6, num_boxes=3, horizon=4)
    assert env.action_space.n == 180 and env.observation_space.shape == (72,)
    assert env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and set(info) == {"at_goal", "dead"}
    for t in range(1, 7):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space and isinstance(reward, float)
        assert terminated is False and truncated == (t >= 4)
        assert set(info) == {"at_goal", "dead", "human_action"}
        assert 0 <= info["human_action"] < 5
    with pytest.raises(ValueError, match="robot action"):
        env.joint_step(180, 0)
    with pytest.raises(ValueError, match="human action"):
        env.joint_step(0, 5)


def test_reset_options_state_is_checked():
    env = GridWorldEnv(num_boxes=2)
    ok = {"human": (0, 0), "boxes": [(0, 1), (1, 0)], "goal": (4, 4)}
    env.reset(options={"state": ok})
    assert env.get_state() == {**ok, "dead": False, "t": 0}
    env.reset(options={"state": {**ok, "boxes": [(0, 0), (1, 0)]}})
    assert env.dead  # a box on the human
    for bad in (
        {**ok, "boxes": [(0, 1)]},
        {**ok, "boxes": [(0, 1), (0, 1)]},
        {**ok, "goal": (5, 0)},
        {**ok, "dead": True},
    ):
        with pytest.raises(ValueError):
            env.reset(options={"state": bad})


def test_render_ansi_and_rgb():
    state = {"human": (0, 0), "boxes": [(0, 1), (1, 0)], "goal": (2, 3)}
    env = GridWorldEnv(render_mode="ansi")
    env.reset(options={"state": state})
    assert env.render() == "HB...\nB....\n...G.\n.....\n.....\n"
    env.reset(options={"state": {"human": (1, 1), "boxes": [(1, 1), (4, 4)], "goal": (0, 0)}})
    assert env.render() == "G....\n.X...\n.....\n.....\n....B\n"
    env = GridWorldEnv(render_mode="rgb_array")
    env.reset(options={"state": state})
    img = env.render()
    assert img.shape == (120, 120, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[2 * 24 + 12, 3 * 24 + 12], [60, 170, 80])  # goal green
    np.testing.assert_array_equal(img[12, 24 + 12], [130, 70, 170])  # box purple
    np.testing.assert_array_equal(img[12, 12], [245, 140, 30])  # human orange
    np.testing.assert_array_equal(img[3 * 24 + 12, 12], [255, 255, 255])  # empty white
    assert GridWorldEnv().render() is None
    assert ansi(3, (1, 1), [(0, 0)], (2, 2)) == "B..\n.H.\n..G\n"


def test_frame_and_strip():
    a = frame(5, (2, 2), [(2, 2), (0, 0)], (4, 4), dead=True)
    b = frame(5, (2, 2), [(2, 3), (0, 0)], (4, 4), cell=24)
    assert a.shape == b.shape == (120, 120, 3) and a.dtype == np.uint8
    crushed = a[48:72, 48:72].reshape(-1, 3)
    assert ((crushed == [220, 30, 30]).all(axis=1)).any(), "a crushed human is marked red"
    assert not ((b.reshape(-1, 3) == [220, 30, 30]).all(axis=1)).any()
    small = frame(6, (0, 0), [], (5, 5), cell=10)
    assert small.shape == (60, 60, 3)
    s = strip([a, b, a], pad=4)
    assert s.shape == (120, 3 * 120 + 2 * 4, 3) and s.dtype == np.uint8
    np.testing.assert_array_equal(s[:, :120], a)
    np.testing.assert_array_equal(s[:, 124:244], b)
    assert (s[:, 120:124] == 255).all()


CONFIG_ERRORS = [
    ({"size": 2}, "size"),
    ({"num_boxes": 1}, "num_boxes"),  # corner needs the two trapping boxes
    ({"num_boxes": 24}, "num_boxes"),  # 25 cells: at most 23 boxes
    ({"num_boxes": -1, "start": "random"}, "num_boxes"),
    ({"start": "middle"}, "start"),
    ({"noise": -0.1}, "noise"),
    ({"noise": 1.5}, "noise"),
    ({"horizon": 0}, "horizon"),
]


@pytest.mark.parametrize("kw, word", CONFIG_ERRORS)
def test_single_config_errors(kw, word):
    with pytest.raises(ValueError, match=word):
        GridWorldEnv(**kw)


def test_single_config_edges_are_valid():
    GridWorldEnv(size=3, num_boxes=7)
    GridWorldEnv(num_boxes=0, start="random")
    GridWorldEnv(noise=0.0)
    GridWorldEnv(noise=1.0)
    with pytest.raises(ValueError, match="render_mode"):
        GridWorldEnv(render_mode="human")


@pytest.mark.parametrize("kw, word", CONFIG_ERRORS)
def test_vec_config_errors(kw, word):
    with pytest.raises(ValueError, match=word):
        VecGridWorld(2, **kw)


def test_set_state_rejects_states_that_reset_and_step_never_reach():
    env = VecGridWorld(2, num_boxes=2)
    env.reset(np.random.default_rng(0))
    good = env.get_state()
    for change, match in [
        ({"boxes": np.array([[[1, 1], [1, 1]], [[0, 1], [1, 0]]])}, "distinct cells"),
        ({"human": np.array([[0, 5], [0, 0]])}, "on the 5x5 grid"),
        ({"boxes": np.array([[[-1, 1], [1, 1]], [[0, 1], [1, 0]]])}, "on the 5x5 grid"),
        ({"goal": np.zeros((3, 2), np.int64)}, "goal \\(2, 2\\)"),
        ({"dead": np.zeros(3, bool)}, "dead \\(2,\\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.set_state({**good, **change})
    after = env.get_state()  # a rejected state leaves the env as it was
    assert all(np.array_equal(after[k], good[k]) for k in good)


def test_positions_are_snapshots_and_assigning_one_loads_it():
    env = VecGridWorld(2, num_boxes=2)
    env.reset(np.random.default_rng(1))
    boxes = env.boxes
    boxes[0, 0] = (4, 4)  # a snapshot: the env is unchanged
    assert not np.array_equal(env.boxes, boxes)
    human = env.human
    env.human = np.array([[2, 2], [2, 2]])  # assignment loads the state, observation included
    assert env.human.tolist() == [[2, 2], [2, 2]] and env.observe()[:, 12].tolist() == [1, 1]
    assert env.observe()[np.arange(2), human[:, 0] * 5 + human[:, 1]].tolist() == [0, 0]


def test_the_stay_bonus_setter_changes_the_greedy_human():
    env = VecGridWorld(1, num_boxes=2, start="random")
    env.set_state({"human": np.array([[2, 2]]), "boxes": np.array([[[0, 0], [4, 4]]]),
                   "goal": np.array([[2, 3]]), "dead": np.array([False])})  # fmt: skip
    # goal one step right: moving (distance 0) beats staying (1 - bonus) for any bonus < 1
    assert env.greedy_human_action().tolist() == [2]
    env.stay_bonus = 1.5  # staying now scores 1 - 1.5 < 0: stay wins
    assert env.greedy_human_action().tolist() == [4]
