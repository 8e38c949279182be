"""The CMD environments: gymnasium API, seeding, exact dynamics, stitching data and oracles."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from alignlab.cmd import pointmaze as pm
from alignlab.cmd.distances import check_quasimetric, successor_distance
from alignlab.cmd.maze import (
    N_ACTIONS,
    GridMaze,
    stitching_dataset,
    stitching_maze,
    stitching_tasks,
)
from alignlab.cmd.tabular import discounted_occupancy

ENVS = {
    "maze-xy": lambda: GridMaze(),
    "maze-slip": lambda: GridMaze(slip=0.2),
    "maze-onehot": lambda: GridMaze(obs_mode="onehot", slip=0.1),
    "pointmaze": lambda: pm.PointMaze(),
    "pointmaze-obs-noise": lambda: pm.PointMaze(obs_noise=0.1),
}


@pytest.mark.filterwarnings("ignore:.*render modes")
@pytest.mark.parametrize("name", ENVS)
def test_env_checker(name):
    check_env(ENVS[name](), skip_render_check=True)


def rollout(env, seed, n_steps=30):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [obs["observation"]]
    for _ in range(n_steps):
        obs, *_ = env.step(env.action_space.sample())
        trace.append(obs["observation"])
    return np.stack(trace), obs["desired_goal"]


@pytest.mark.parametrize("name", ["maze-slip", "pointmaze-obs-noise"])
def test_same_seed_same_trajectory(name):
    a, goal_a = rollout(ENVS[name](), 7)
    b, goal_b = rollout(ENVS[name](), 7)
    c, _ = rollout(ENVS[name](), 8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(goal_a, goal_b)
    assert not np.array_equal(a, c)


# ---- GridMaze --------------------------------------------------------------------------------


def test_maze_transition_tensor_matches_sampled_steps():
    maze = GridMaze(slip=0.3)
    P = maze.transition_tensor()
    np.testing.assert_allclose(P.sum(-1), 1.0)
    states = np.repeat(np.arange(maze.n_states), N_ACTIONS)
    actions = np.tile(np.arange(N_ACTIONS), maze.n_states)
    rng = np.random.default_rng(0)
    counts = np.zeros_like(P)
    for _ in range(400):
        nxt = maze.step_cells(states, actions, rng)
        np.add.at(counts, (states, actions, nxt), 1)
    np.testing.assert_allclose(counts / 400, P, atol=0.1)
    # without slip the tensor is the deterministic move table
    np.testing.assert_array_equal(GridMaze().transition_tensor().argmax(-1), maze.next_cell)


@pytest.mark.parametrize("obs_mode", ["xy", "onehot"])
def test_maze_observations_round_trip(obs_mode):
    maze = GridMaze(obs_mode=obs_mode)
    cells = np.arange(maze.n_states)
    obs = maze.encode(cells)
    assert obs.dtype == np.float32 and obs.shape == (
        maze.n_states,
        2 if obs_mode == "xy" else maze.n_states,
    )
    np.testing.assert_array_equal(maze.decode(obs), cells)
    assert all(maze.observation_space["observation"].contains(o) for o in obs)


def test_maze_reward_and_termination_at_the_goal():
    maze = GridMaze(max_episode_steps=3)
    goal = maze.index[6, 1]
    _, info = maze.reset(seed=0, options={"start": maze.index[6, 2], "goal": goal})
    _, reward, terminated, truncated, info = maze.step(3)  # left
    assert (reward, terminated, truncated, info["state"]) == (1.0, True, False, goal)
    maze.reset(seed=0, options={"start": maze.index[1, 1], "goal": goal})
    outcomes = [maze.step(4)[2:4] for _ in range(3)]  # stay
    assert outcomes == [(False, False), (False, False), (False, True)]


def test_stitching_dataset_holds_only_A_to_B_and_B_to_C():
    maze = stitching_maze()
    A, B, C = (set(maze.regions[r].tolist()) for r in "ABC")
    data = stitching_dataset(maze, seed=0)
    assert len(data) == 400 and {e["leg"] for e in data} == {"AB", "BC"}
    P = maze.transition_tensor()
    for e in data:
        s, a = e["states"], e["actions"]
        first, second = (A, B) if e["leg"] == "AB" else (B, C)
        assert s[0] in first and s[-1] in second and set(s.tolist()) <= first | second
        assert not (set(s.tolist()) & A and set(s.tolist()) & C)
        assert (P[s[:-1], a, s[1:]] > 0).all()  # every step is a true transition
        np.testing.assert_array_equal(e["obs"], maze.encode(s))
        assert e["obs"].shape == (len(a) + 1, 2)


def test_stitching_data_leaves_A_by_both_doors_but_only_one_leads_to_C():
    maze = stitching_maze()
    left_door, right_door = maze.index[2, 5], maze.index[2, 11]
    data = stitching_dataset(maze, seed=0)
    ab = [set(e["states"].tolist()) for e in data if e["leg"] == "AB"]
    bc = [e["states"] for e in data if e["leg"] == "BC"]
    # the A -> B walkers leave by both doors, so the data alone does not single out the right one
    assert sum(left_door in v for v in ab) > 30 and sum(right_door in v for v in ab) > 30
    # B -> C walkers start only in B2 (right of A): from B1, C is reachable only through A
    assert all(maze.cells[e[0]][1] > 11 for e in bc)
    # every A -> C path leaves A by the right door
    tasks = stitching_tasks(maze, np.random.default_rng(0), 50)
    blocked = np.ones(maze.n_states, dtype=bool)
    blocked[right_door] = False
    assert np.isinf(maze.shortest_path_lengths(blocked)[tasks[:, 0], tasks[:, 1]]).all()


def test_stitching_dataset_is_deterministic_and_slip_safe():
    maze = stitching_maze()
    a, b = stitching_dataset(maze, seed=3), stitching_dataset(maze, seed=3)
    assert all(np.array_equal(x["states"], y["states"]) for x, y in zip(a, b))
    c = stitching_dataset(maze, seed=4)
    assert not all(np.array_equal(x["states"], y["states"]) for x, y in zip(a, c))
    slippery = stitching_maze(slip=0.3)
    A, C = set(slippery.regions["A"].tolist()), set(slippery.regions["C"].tolist())
    for e in stitching_dataset(slippery, seed=0, n_per_leg=100):
        visited = set(e["states"].tolist())
        assert not (visited & A and visited & C)


def test_oracle_solves_A_to_C_and_random_does_not():
    maze = stitching_maze()
    tasks = stitching_tasks(maze, np.random.default_rng(0), 200)
    assert np.isin(tasks[:, 0], maze.regions["A"]).all()
    assert np.isin(tasks[:, 1], maze.regions["C"]).all()
    # every A -> C path runs through B
    no_b = ~np.isin(np.arange(maze.n_states), maze.regions["B"])
    assert np.isinf(maze.shortest_path_lengths(no_b)[tasks[:, 0], tasks[:, 1]]).all()
    assert maze.evaluate(maze.oracle_policy(), tasks, np.random.default_rng(1)) == 1.0

    def random_policy(obs, goal):
        return np.random.default_rng(len(obs)).integers(N_ACTIONS, size=len(obs))

    assert maze.evaluate(random_policy, tasks, np.random.default_rng(1), max_steps=40) < 0.3


def test_maze_successor_distance_is_a_quasimetric_above_the_shortest_path():
    gamma = 0.95
    for slip in (0.0, 0.2):
        maze = GridMaze(slip=slip)
        D = successor_distance(discounted_occupancy(maze.to_mdp(), gamma))
        assert check_quasimetric(D, 1e-9).ok
        # T_g is at least the number of moves, whatever slips
        assert (D >= -np.log(gamma) * maze.shortest_path_lengths() - 1e-9).all()


# ---- PointMaze -------------------------------------------------------------------------------


def test_pointmaze_graph_is_one_way_and_connected():
    sup, D, core = pm.build_support(), pm.support_distances(), pm.core_points()
    assert len(core) >= 0.95 * len(sup.points)
    assert np.isfinite(D[:, core]).all()  # every point leads into the core
    assert np.isfinite(D[np.ix_(core, core)]).all()
    Dc = D[np.ix_(core, core)]
    assert np.abs(Dc - Dc.T).max() > 30  # going back means going around
    # at the top of the ring (heading west) even an eastward action moves west
    x = np.array([[0.0, 18.0]])
    nxt = pm.step_batch(x, np.array([[1.0, 0.0]]), np.random.default_rng(0), step_noise=0.0)
    assert nxt[0, 0] < -0.5 and abs(nxt[0, 1] - 18) < 1.1


def test_pointmaze_env_step_is_the_batch_step():
    env = pm.PointMaze()
    start, goal = np.array([0.0, 18.0]), np.array([0.0, -18.0])
    env.reset(seed=0, options={"start": start, "goal": goal})
    env.np_random = np.random.default_rng(5)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(10, 2)).astype(np.float32)
    x, rng = start[None], np.random.default_rng(5)
    for action in actions:
        env.step(action)
        x = pm.step_batch(x, action[None], rng)
        np.testing.assert_array_equal(env.x, x[0])


def test_pointmaze_dataset():
    env = pm.PointMaze()
    data = env.random_walk_dataset(np.random.default_rng(0), n_trajectories=800)
    lengths = np.array([len(e["actions"]) for e in data])
    assert lengths.min() >= 1 and lengths.max() <= pm.MAX_LENGTH
    assert 20 < lengths.mean() < 28  # Geometric(1 / 24)
    e = data[0]
    assert e["obs"].shape == (len(e["actions"]) + 1, 2) and e["actions"].shape[1] == 2
    assert e["obs"].dtype == np.float32 and np.abs(e["obs"]).max() <= pm.BOUND
    steps = np.concatenate([np.linalg.norm(np.diff(d["obs"], axis=0), axis=1) for d in data])
    assert 0.7 < steps.mean() < 1.5  # ~ SHIFT * SPACING per step
    again = env.random_walk_dataset(np.random.default_rng(0), n_trajectories=800)
    np.testing.assert_array_equal(again[5]["obs"], data[5]["obs"])


def test_pointmaze_oracle_succeeds_and_random_does_not():
    env = pm.PointMaze()
    oracle = env.evaluate(env.oracle_policy(), 200, np.random.default_rng(0))

    def random_policy(obs, goal):
        return np.random.default_rng(len(obs)).normal(size=obs.shape)

    rand = env.evaluate(random_policy, 200, np.random.default_rng(0))
    greedy = env.evaluate(lambda obs, goal: goal - obs, 200, np.random.default_rng(0))
    assert oracle >= 0.95 and rand < 0.6 and greedy < 0.6
