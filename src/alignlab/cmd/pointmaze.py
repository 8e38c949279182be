"""The notes' controlled 2D "pointmaze", scaled for CPU: one-way paths, snapped dynamics, noise.

The notebook's pointmaze ("Environments/Data") moves a point along hand-drawn paths: the action
is snapped to one of the pre-computed forward successors of the current point, so motion
follows path directions (asymmetric, one-way), with Gaussian step noise. Here:

- support: one-way curved streets (`PATHS`: a ring and four crossing streets) resampled every
  SPACING; a support point's forward successor is SHIFT points ahead on its street (the ring
  wraps; a street's last points lead to its end, which lies on the ring).
- dynamics: snap the position x to its nearest support point i; the candidates are the forward
  successors of every support point within JUNCTION_RADIUS of i, so streets can be switched only
  where they meet (a street's end point is a candidate only from its own street, so nothing
  steps backward); the action picks the candidate whose direction from x has the largest cosine
  with it (a zero action picks i's own forward successor); then
  x' = candidate + N(0, STEP_NOISE^2 I), clipped to [-BOUND, BOUND]^2.
- map: a vortex. The ring (|x| or |y| = 18) runs counter-clockwise, and so does the inner
  square of crossing streets: row y = 6 runs west, y = -6 east, column x = -6 south, x = 6
  north, each from ring to ring. `core_points` (all but the first few points of each street,
  which only noise can reach) is strongly connected, but going clockwise means going around.
- task: start at a uniform core point; goal = the farthest (Euclidean) of N_GOAL_CANDIDATES
  uniform core points; success (reward 1, termination) when |x - goal| <= SUCCESS_RADIUS.
- data: random walks (uniform unit-vector actions) of Geometric(1 / MEAN_LENGTH) length, at most
  MAX_LENGTH, from uniform core points (the notebook: mean 24, max 200).

Scale vs the notebook: map [-18, 18]^2 (notebook ~[-40, 45]^2), ~590 support points (20k),
steps of ~1 unit (shift 8), step noise 0.2 (1.0), success radius 1.0 (2.0), 100 evaluation
steps (2000). Tasks need 40 steps (median; the support graph's diameter is 73), so data of mean
length 24 must be stitched. With 100 steps the shortest-path oracle succeeds 100%, uniformly
random actions 37% and heading straight for the goal 39% (500 tasks, seed 0).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.spatial import cKDTree

SPACING = 0.5  # distance between consecutive support points of a street
SHIFT = 2  # forward successor = SHIFT points ahead: a step of ~1 unit
JUNCTION_RADIUS = 0.75  # streets this close can be switched (at crossings and street ends)
STEP_NOISE = 0.2  # std of the Gaussian noise added to each step
OBS_NOISE = 0.0  # std of observation noise (notebook: 0.1-0.2); the true state is not noisy
SUCCESS_RADIUS = 1.0
N_GOAL_CANDIDATES = 10
BOUND = 20.0  # positions and observations live in [-BOUND, BOUND]^2
MAX_EPISODE_STEPS = 100
MEAN_LENGTH, MAX_LENGTH = 24, 100  # dataset trajectory lengths

# name -> (waypoints, closed): the one-way streets, each traversed in waypoint order
PATHS = {
    "ring": (((18, 18), (-18, 18), (-18, -18), (18, -18)), True),
    "row_6": (((18, 6), (-18, 6)), False),
    "row_-6": (((-18, -6), (18, -6)), False),
    "col_-6": (((-6, 18), (-6, -18)), False),
    "col_6": (((6, -18), (6, 18)), False),
}
WIGGLE, WIGGLE_WAVES = 1.0, 3  # each 36-unit segment bulges by WIGGLE sin(3 pi u): zero at
# u = 0, 1/3, 2/3, 1, i.e. at the corners and at the crossings (+-6), so streets stay curved
# yet cross where straight ones would

PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (obs (B, 2), goal (B, 2)) -> (B, 2)

# The notebook's input features (`featurize_state`): tanh((x + o) / width) for N_FEATURES offsets
# o per axis, evenly spaced over the map. The notebook spaces 20 offsets over [-60, 60] with
# width 5 on its ~85-unit map; here they span [-BOUND, BOUND], width scaled to the spacing.
N_FEATURES, FEATURE_WIDTH = 20, 2.5


def featurize(x: np.ndarray) -> np.ndarray:
    """Soft one-hot position features (..., 2) -> (..., 2 * N_FEATURES) float32 in (-1, 1).

    Each feature is a smooth step at one offset, so a linear layer on top can carve out any
    region of the map; raw coordinates (scale ~18) make the ReLU networks learn slowly.
    """
    offsets = np.linspace(-BOUND, BOUND, N_FEATURES)
    x = np.asarray(x, dtype=np.float64)
    z = np.concatenate([x[..., :1] + offsets, x[..., 1:2] + offsets], axis=-1)
    return np.tanh(z / FEATURE_WIDTH).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Support:
    """The support points and their one-way successor structure."""

    points: np.ndarray  # (N, 2)
    path: np.ndarray  # (N,) index into PATHS
    forward: np.ndarray  # (N,) the point SHIFT ahead on the same path
    candidates: np.ndarray  # (N, K) successor candidates, -1 padded; [:, 0] = own forward
    tree: cKDTree


def _resample(waypoints: np.ndarray, closed: bool) -> np.ndarray:
    """Points every SPACING along a polyline whose segments bulge by WIGGLE sin(3 pi u)."""
    if closed:
        waypoints = np.vstack([waypoints, waypoints[:1]])
    dense = []
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        u = np.linspace(0, 1, 300, endpoint=False)[:, None]
        normal = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a)
        dense.append(a + u * (b - a) + WIGGLE * np.sin(WIGGLE_WAVES * np.pi * u) * normal)
    dense = np.vstack(dense + [waypoints[-1:]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    n = int(round(arc[-1] / SPACING)) + (0 if closed else 1)
    s = np.linspace(0, arc[-1], n, endpoint=not closed)
    return np.stack([np.interp(s, arc, dense[:, k]) for k in range(2)], axis=1)


@functools.lru_cache(maxsize=1)
def build_support() -> Support:
    """Resample PATHS and precompute every point's forward successor and candidates."""
    points, path, forward = [], [], []
    offset = 0
    for p, (waypoints, closed) in enumerate(PATHS.values()):
        pts = _resample(np.asarray(waypoints, dtype=np.float64), closed)
        n = len(pts)
        ahead = (np.arange(n) + SHIFT) % n if closed else np.minimum(np.arange(n) + SHIFT, n - 1)
        points.append(pts)
        path.append(np.full(n, p))
        forward.append(ahead + offset)
        offset += n
    points, path, forward = np.vstack(points), np.concatenate(path), np.concatenate(forward)
    tree = cKDTree(points)
    terminal = forward == np.arange(len(points))  # the last point of a street
    cand_lists = []
    for i, near in enumerate(tree.query_ball_point(points, JUNCTION_RADIUS)):
        near = np.asarray(near)
        near = near[np.lexsort((np.linalg.norm(points[near] - points[i], axis=1), near != i))]
        # a street's end is a candidate only from that street: nothing steps back on the ring
        ok = near[(path[near] == path[i]) | ~terminal[forward[near]]]
        cand_lists.append(list(dict.fromkeys(int(forward[j]) for j in ok if forward[j] != i)))
    K = max(len(c) for c in cand_lists)
    candidates = np.full((len(points), K), -1, dtype=np.int64)
    for i, c in enumerate(cand_lists):
        candidates[i, : len(c)] = c
    return Support(points, path, forward, candidates, tree)


def support_graph() -> csr_matrix:
    """The one-way step graph on support points: i -> every candidate successor of i."""
    sup = build_support()
    src, k = np.nonzero(sup.candidates >= 0)
    n = len(sup.points)
    return csr_matrix((np.ones(len(src)), (src, sup.candidates[src, k])), shape=(n, n))


@functools.lru_cache(maxsize=1)
def support_distances() -> np.ndarray:
    """Fewest steps between support points along candidate edges, (N, N), asymmetric."""
    return shortest_path(support_graph(), directed=True, unweighted=True)


@functools.lru_cache(maxsize=1)
def core_points() -> np.ndarray:
    """Indices of the largest strongly connected set of support points (tasks and data use it).

    Left out: the first points of each street, whose predecessors are on the ring but which
    no candidate edge enters (only step noise can snap to them); they lead into the core.
    """
    _, label = connected_components(support_graph(), directed=True, connection="strong")
    return np.flatnonzero(label == np.bincount(label).argmax())


def step_batch(
    x: np.ndarray, actions: np.ndarray, rng: np.random.Generator, step_noise: float = STEP_NOISE
) -> np.ndarray:
    """The snapped one-way dynamics (module docstring) for a batch: x (B, 2), actions (B, 2)."""
    sup = build_support()
    x = np.asarray(x, dtype=np.float64)
    cand = sup.candidates[sup.tree.query(x)[1]]  # (B, K)
    disp = sup.points[np.maximum(cand, 0)] - x[:, None, :]
    a = np.asarray(actions, dtype=np.float64)
    cos = np.einsum("bkd,bd->bk", disp, a) / (
        np.linalg.norm(disp, axis=-1) * np.linalg.norm(a, axis=-1, keepdims=True) + 1e-12
    )
    cos[cand < 0] = -np.inf
    chosen = cand[np.arange(len(x)), cos.argmax(axis=1)]  # ties (zero action) -> own forward
    noise = step_noise * rng.standard_normal(x.shape)
    return np.clip(sup.points[chosen] + noise, -BOUND, BOUND)


def sample_tasks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts at uniform core points; goals the farthest of N_GOAL_CANDIDATES uniform ones."""
    pts = build_support().points[core_points()]
    starts = pts[rng.integers(len(pts), size=n)]
    cands = pts[rng.integers(len(pts), size=(n, N_GOAL_CANDIDATES))]
    far = np.linalg.norm(cands - starts[:, None], axis=-1).argmax(axis=1)
    return starts, cands[np.arange(n), far]


class PointMaze(gym.Env):
    """The one-way pointmaze as a goal-conditioned gymnasium env (module docstring)."""

    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(
        self,
        *,
        step_noise: float = STEP_NOISE,
        obs_noise: float = OBS_NOISE,
        success_radius: float = SUCCESS_RADIUS,
        max_episode_steps: int = MAX_EPISODE_STEPS,
    ):
        self.support = build_support()
        self.step_noise, self.obs_noise = step_noise, obs_noise
        self.success_radius, self.max_episode_steps = success_radius, max_episode_steps
        box = spaces.Box(-BOUND, BOUND, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": box, "desired_goal": box})
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.x = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def observe(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Observed positions: x plus OBS_NOISE Gaussian noise, as float32 in the box."""
        if self.obs_noise > 0:
            x = x + self.obs_noise * rng.standard_normal(np.shape(x))
        return np.clip(x, -BOUND, BOUND).astype(np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.observe(self.x, self.np_random),
            "desired_goal": self.goal.astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A `sample_tasks` task unless options gives "start" / "goal" (2D positions)."""
        super().reset(seed=seed)
        options = options or {}
        starts, goals = sample_tasks(self.np_random, 1)
        self.x = np.asarray(options.get("start", starts[0]), dtype=np.float64)
        self.goal = np.asarray(options.get("goal", goals[0]), dtype=np.float64)
        self.t = 0
        return self._obs(), {"distance": float(np.linalg.norm(self.x - self.goal))}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(1, 2)
        self.x = step_batch(self.x[None], action, self.np_random, self.step_noise)[0]
        self.t += 1
        distance = float(np.linalg.norm(self.x - self.goal))
        terminated = distance <= self.success_radius
        truncated = not terminated and self.t >= self.max_episode_steps
        return self._obs(), float(terminated), terminated, truncated, {"distance": distance}

    def evaluate(
        self,
        policy_fn: PolicyFn,
        n_episodes: int,
        rng: np.random.Generator,
        max_steps: int = MAX_EPISODE_STEPS,
    ) -> float:
        """Success rate of a batched policy on `n_episodes` `sample_tasks` tasks, all at once.

        policy_fn gets observations and goals of the episodes still running, (B, 2) each, and
        returns (B, 2) actions; success = within success_radius of the goal after some step.
        """
        x, goal = sample_tasks(rng, n_episodes)
        done = np.zeros(n_episodes, dtype=bool)
        for _ in range(max_steps):
            run = np.flatnonzero(~done)
            if run.size == 0:
                break
            obs = self.observe(x[run], rng)
            actions = np.asarray(policy_fn(obs, goal[run].astype(np.float32)))
            x[run] = step_batch(x[run], actions.reshape(-1, 2), rng, self.step_noise)
            done[run] = np.linalg.norm(x[run] - goal[run], axis=1) <= self.success_radius
        return float(done.mean())

    def random_walk_dataset(
        self,
        rng: np.random.Generator,
        n_trajectories: int = 1000,
        mean_length: int = MEAN_LENGTH,
        max_length: int = MAX_LENGTH,
    ) -> list[dict[str, np.ndarray]]:
        """Random walks of Geometric(1 / mean_length) length (capped), simulated in one batch.

        Each episode: "obs" (T+1, 2) float32 observations, "actions" (T, 2) float32 uniform unit
        vectors, "states" (T+1,) the nearest support point of each true position.
        """
        sup = self.support
        lengths = np.minimum(rng.geometric(1.0 / mean_length, size=n_trajectories), max_length)
        T = int(lengths.max())
        x = np.empty((n_trajectories, T + 1, 2))
        core = core_points()
        x[:, 0] = sup.points[core[rng.integers(len(core), size=n_trajectories)]]
        angle = rng.uniform(0, 2 * np.pi, size=(n_trajectories, T))
        actions = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        for t in range(T):
            x[:, t + 1] = step_batch(x[:, t], actions[:, t], rng, self.step_noise)
        obs = self.observe(x, rng)
        nearest = sup.tree.query(x.reshape(-1, 2))[1].reshape(n_trajectories, T + 1)
        return [
            {
                "obs": obs[i, : n + 1],
                "actions": actions[i, :n].astype(np.float32),
                "states": nearest[i, : n + 1],
            }
            for i, n in enumerate(lengths)
        ]

    def oracle_policy(self) -> PolicyFn:
        """A batched shortest-path policy on the support graph: heads for the candidate
        with the fewest remaining steps to the goal's nearest support point."""
        sup, dist = self.support, support_distances()

        def policy(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
            cand = sup.candidates[sup.tree.query(obs)[1]]
            g = sup.tree.query(goal)[1]
            togo = np.where(cand >= 0, dist[np.maximum(cand, 0), g[:, None]], np.inf)
            best = cand[np.arange(len(obs)), togo.argmin(axis=1)]
            direction = sup.points[best] - obs
            return direction / (np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12)

        return policy
