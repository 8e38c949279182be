"""A goal-conditioned grid maze, its exact transition tensor, and the A -> B, B -> C stitching data.

The notes' "Scaled-down settings": a small (optionally stochastic) maze in which d_SD is exact,
with a stitching dataset that holds only A -> B and B -> C trajectories and a test task A -> C
("CMD and QRL should succeed, CRL and GCBC should degrade").

Design (all constants below):
- cells: every non-'#' character of the layout; letters name regions (A, B, C); states are the
  free cells in row-major order.
- actions: 0 up, 1 right, 2 down, 3 left, 4 stay; moving into a wall stays put.
- slip: with probability `slip` the executed action is uniform over all 5 actions instead.
- observation: a dict with "observation" (the agent's cell) and "desired_goal" (the goal's
  cell), each encoded as obs_mode="xy": (column / (W - 1), row / (H - 1)) in [0, 1]^2 (row grows
  downward, as printed), or obs_mode="onehot": a one-hot over the free cells.
- reward 1 on reaching the goal, which terminates the episode; truncation after
  `max_episode_steps` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from .tabular import TabularMDP

# Two doors out of A, one that leads on and one that does not. A (the middle room) opens left
# into B1 and right into B2 (both region B); C (the bottom hall) is reached only through B2's
# door (row 5), so every A -> C path leaves A by its right door. The data cannot say which door:
# A -> B walkers use both (their targets are uniform over B1 and B2) and B -> C walkers start
# only in B2, so from A a goal in C was never a goal, and an imitator has no reason to prefer
# the right door. C spans the full width, so even coordinates (obs_mode "xy") do not tell.
# (An earlier U-maze whose A had a single exit let GCBC solve A -> C without stitching, since
# "leave A" is right for every goal outside A: GCBC 0.79 success vs CMD-2 0.91.)
STITCHING_LAYOUT = (
    "#################",
    "#BBBB#AAAAA#BBBB#",
    "#BBBBAAAAAAABBBB#",
    "#BBBB#AAAAA#BBBB#",
    "#BBBB#AAAAA#BBBB#",
    "#############B###",
    "#CCCCCCCCCCCCCCC#",
    "#CCCCCCCCCCCCCCC#",
    "#################",
)
MOVES = np.array(
    [(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)]
)  # (d_row, d_col): up right down left stay
ACTION_NAMES = ("up", "right", "down", "left", "stay")
N_ACTIONS = len(MOVES)
MAX_EPISODE_STEPS = 100

PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (obs (B, d), goal (B, d)) -> (B,)


class GridMaze(gym.Env):
    """A goal-conditioned grid maze (see the module docstring for the design)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        layout: tuple[str, ...] = STITCHING_LAYOUT,
        *,
        slip: float = 0.0,
        obs_mode: str = "xy",
        max_episode_steps: int = MAX_EPISODE_STEPS,
        render_mode: str | None = None,
    ):
        if obs_mode not in ("xy", "onehot"):
            raise ValueError(f"obs_mode must be 'xy' or 'onehot'; got {obs_mode!r}")
        if not 0.0 <= slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1]; got {slip}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi'; got {render_mode!r}")
        if len({len(row) for row in layout}) != 1:
            raise ValueError("every layout row must have the same length")
        self.layout = tuple(layout)
        self.slip, self.obs_mode, self.render_mode = slip, obs_mode, render_mode
        self.max_episode_steps = max_episode_steps
        self.height, self.width = len(layout), len(layout[0])
        self.cells = np.array(
            [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch != "#"]
        )
        self.n_states = len(self.cells)
        self.index = np.full((self.height, self.width), -1, dtype=np.int64)  # (row, col) -> state
        self.index[self.cells[:, 0], self.cells[:, 1]] = np.arange(self.n_states)
        self.next_cell = self._next_cells()
        self.regions = {
            ch: np.flatnonzero([layout[r][c] == ch for r, c in self.cells])
            for ch in sorted({ch for row in layout for ch in row if ch.isalpha()})
        }
        dim = 2 if obs_mode == "xy" else self.n_states
        box = spaces.Box(0.0, 1.0, shape=(dim,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": box, "desired_goal": box})
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.state, self.goal, self.t = 0, 0, 0

    def _next_cells(self) -> np.ndarray:
        """next_cell[s, a]: the deterministic move; walls (and the border) block."""
        target = self.cells[:, None, :] + MOVES[None, :, :]
        r = np.clip(target[..., 0], 0, self.height - 1)
        c = np.clip(target[..., 1], 0, self.width - 1)
        nxt = self.index[r, c]
        return np.where(nxt >= 0, nxt, np.arange(self.n_states)[:, None])

    # ---- observations ----------------------------------------------------------------------

    def encode(self, states: np.ndarray) -> np.ndarray:
        """Observations of cells, shape (..., d) float32 (the module docstring's obs_mode)."""
        states = np.asarray(states, dtype=np.int64)
        if self.obs_mode == "onehot":
            return np.eye(self.n_states, dtype=np.float32)[states]
        rc = self.cells[states]
        scale = np.array([max(self.width - 1, 1), max(self.height - 1, 1)], dtype=np.float64)
        return (rc[..., ::-1] / scale).astype(np.float32)

    def decode(self, obs: np.ndarray) -> np.ndarray:
        """Cells of observations (nearest cell for xy, argmax for one-hot)."""
        obs = np.asarray(obs)
        if self.obs_mode == "onehot":
            return obs.argmax(-1)
        col = np.rint(obs[..., 0] * max(self.width - 1, 1)).astype(np.int64)
        row = np.rint(obs[..., 1] * max(self.height - 1, 1)).astype(np.int64)
        return self.index[row.clip(0, self.height - 1), col.clip(0, self.width - 1)]

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.encode(self.state), "desired_goal": self.encode(self.goal)}

    # ---- dynamics --------------------------------------------------------------------------

    def step_cells(
        self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One step for a batch of cells; with probability slip the action is uniform."""
        actions = np.asarray(actions, dtype=np.int64).copy()
        if self.slip > 0:
            slipped = rng.random(actions.shape) < self.slip
            actions[slipped] = rng.integers(N_ACTIONS, size=int(slipped.sum()))
        return self.next_cell[np.asarray(states, dtype=np.int64), actions]

    def transition_tensor(self) -> np.ndarray:
        """P[s, a, s'] = (1 - slip) [s' = next(s, a)] + slip / 5 sum_b [s' = next(s, b)]."""
        S = self.n_states
        eye = np.eye(S)
        moved = eye[self.next_cell]  # (S, A, S) one-hot of the deterministic move
        return (1.0 - self.slip) * moved + self.slip * moved.mean(axis=1, keepdims=True)

    def to_mdp(self, pi: np.ndarray | None = None) -> TabularMDP:
        """The maze as a TabularMDP under behaviour policy pi (uniform over actions by default)."""
        if pi is None:
            pi = np.full((self.n_states, N_ACTIONS), 1.0 / N_ACTIONS)
        return TabularMDP(self.transition_tensor(), pi)

    def shortest_path_lengths(self, allowed: np.ndarray | None = None) -> np.ndarray:
        """Oracle: fewest moves from s to g, shape (S, S), inf if unreachable (ignores slip).

        With a boolean mask `allowed`, paths may only use allowed cells.
        """
        S = self.n_states
        src = np.repeat(np.arange(S), N_ACTIONS)
        dst = self.next_cell.ravel()
        keep = src != dst
        if allowed is not None:
            keep &= allowed[src] & allowed[dst]
        graph = csr_matrix((np.ones(keep.sum()), (src[keep], dst[keep])), shape=(S, S))
        return shortest_path(graph, directed=True, unweighted=True)

    # ---- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start and goal are uniform distinct cells unless options gives "start" / "goal"."""
        super().reset(seed=seed)
        options = options or {}
        self.goal = int(options.get("goal", self.np_random.integers(self.n_states)))
        if "start" in options:
            self.state = int(options["start"])
        else:  # uniform over the other cells
            self.state = int(self.np_random.integers(self.n_states - 1))
            self.state += self.state >= self.goal
        self.t = 0
        return self._obs(), {"state": self.state, "goal": self.goal}

    def step(self, action):
        self.state = int(
            self.step_cells(np.array([self.state]), np.array([action]), self.np_random)[0]
        )
        self.t += 1
        terminated = self.state == self.goal
        truncated = not terminated and self.t >= self.max_episode_steps
        info = {"state": self.state, "goal": self.goal}
        return self._obs(), float(terminated), terminated, truncated, info

    def render(self):
        if self.render_mode != "ansi":
            return None
        grid = [list(row) for row in self.layout]
        (gr, gc), (sr, sc) = self.cells[self.goal], self.cells[self.state]
        grid[gr][gc], grid[sr][sc] = "G", "@"
        return "\n".join("".join(row) for row in grid)

    # ---- oracle and evaluation -------------------------------------------------------------

    def oracle_policy(self) -> PolicyFn:
        """A batched shortest-path policy: (obs (B, d), goal (B, d)) -> actions (B,)."""
        dist = self.shortest_path_lengths()

        def policy(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
            s, g = self.decode(obs), self.decode(goal)
            return dist[self.next_cell[s], g[:, None]].argmin(axis=1)

        return policy

    def evaluate(
        self,
        policy_fn: PolicyFn,
        tasks: np.ndarray,
        rng: np.random.Generator,
        max_steps: int = MAX_EPISODE_STEPS,
    ) -> float:
        """Success rate of a batched goal-conditioned policy on (start, goal) cell pairs.

        All tasks run at once; policy_fn gets the encoded observations and goals of the tasks
        still running, shapes (B, d), and returns B actions. Success = reaching the goal within
        `max_steps` steps.
        """
        tasks = np.asarray(tasks, dtype=np.int64).reshape(-1, 2)
        state, goal = tasks[:, 0].copy(), tasks[:, 1]
        done = state == goal
        for _ in range(max_steps):
            run = np.flatnonzero(~done)
            if run.size == 0:
                break
            actions = np.asarray(policy_fn(self.encode(state[run]), self.encode(goal[run])))
            state[run] = self.step_cells(state[run], actions.reshape(-1), rng)
            done[run] = state[run] == goal[run]
        return float(done.mean())


# ---- the stitching dataset ----------------------------------------------------------------


def stitching_maze(
    *, slip: float = 0.0, obs_mode: str = "xy", max_episode_steps: int = MAX_EPISODE_STEPS
) -> GridMaze:
    """The two-door maze of STITCHING_LAYOUT: regions A, B, C; A -> C must pass through B2."""
    return GridMaze(
        STITCHING_LAYOUT, slip=slip, obs_mode=obs_mode, max_episode_steps=max_episode_steps
    )


LEGS = (("A", "B"), ("B", "C"))  # the only trajectories in the data; the test task is A -> C


def stitching_dataset(
    maze: GridMaze,
    seed: int | np.random.SeedSequence,
    *,
    n_per_leg: int = 200,
    epsilon: float = 0.2,
    max_len: int = 64,
) -> list[dict[str, np.ndarray]]:
    """Noisy shortest-path walkers A -> B and B -> C, `n_per_leg` each, deterministic in `seed`.

    A walker starts at a uniform cell of the first region among those that reach the second
    without leaving the two regions (for B -> C: B2, not B1) and heads for a uniform cell of the
    second that it can reach so: with probability 1 - epsilon a uniform shortest-path move inside the two regions,
    else a uniform action that stays inside them (stay included). It stops at its target or
    after max_len steps. If slip moves it out of its two regions, the trajectory is cut before
    that step, so every recorded transition is a true sample of the maze's dynamics and no
    trajectory ever visits both A and C. Each episode: "obs" (T+1, d) float32, "actions" (T,)
    int64, "states" (T+1,) int64 cell indices, "leg" e.g. "AB".
    """
    missing = {"A", "B", "C"} - set(maze.regions)
    if missing:
        raise ValueError(
            f"the maze's layout has no region(s) {sorted(missing)}; use stitching_maze()"
        )
    rng = np.random.default_rng(seed)
    episodes = []
    for first, second in LEGS:
        allowed = np.zeros(maze.n_states, dtype=bool)
        allowed[maze.regions[first]] = allowed[maze.regions[second]] = True
        dist = maze.shortest_path_lengths(allowed)
        inside = [np.flatnonzero(row) for row in allowed[maze.next_cell]]  # moves kept inside
        firsts, seconds = maze.regions[first], maze.regions[second]
        reach = np.isfinite(dist[np.ix_(firsts, seconds)])  # within the two regions
        starts = np.flatnonzero(reach.any(axis=1))
        if starts.size == 0:
            raise ValueError(f"no cell of {first} reaches {second} inside the two regions")
        for _ in range(n_per_leg):
            i = int(_pick(rng, starts))
            state = int(firsts[i])
            target = int(_pick(rng, seconds[reach[i]]))
            states, actions = [state], []
            while state != target and len(actions) < max_len:
                if rng.random() < epsilon:
                    action = int(_pick(rng, inside[state]))
                else:
                    closer = dist[maze.next_cell[state], target] == dist[state, target] - 1
                    action = int(_pick(rng, np.flatnonzero(closer)))
                executed = action
                if maze.slip > 0 and rng.random() < maze.slip:  # as in GridMaze.step_cells
                    executed = int(rng.integers(N_ACTIONS))
                nxt = int(maze.next_cell[state, executed])
                if not allowed[nxt]:
                    break
                states.append(nxt)
                actions.append(action)
                state = nxt
            if actions:
                s = np.array(states, dtype=np.int64)
                episodes.append(
                    {
                        "obs": maze.encode(s),
                        "actions": np.array(actions, dtype=np.int64),
                        "states": s,
                        "leg": first + second,
                    }
                )
    return episodes


def _pick(rng: np.random.Generator, options: np.ndarray):
    return options[rng.integers(len(options))]


def stitching_tasks(maze: GridMaze, rng: np.random.Generator, n_tasks: int) -> np.ndarray:
    """Held-out A -> C tasks: (n_tasks, 2) of (start in A, goal in C), uniform."""
    starts = rng.choice(maze.regions["A"], size=n_tasks)
    goals = rng.choice(maze.regions["C"], size=n_tasks)
    return np.stack([starts, goals], axis=1)
