"""The obstacle gridworld of ESR (Myers et al. 2024, Sec. 5.1; the AvE gridworld of Du et al.
2020 scaled up), vectorised: N environments stepped in lockstep with numpy.

A human is trapped in a corner by two boxes and walks, eps-greedily, toward a goal the robot
never sees. The robot's 5 n^2 actions (cell, direction) push the box on that cell one step. A box
pushed onto the human crushes it and freezes the episode; a human at its goal freezes it too and
earns 1 per step, so the return is the number of steps at the goal (out of 50).

Semantics (ESR notes, "Obstacle gridworld"; the original `envs/gridworld.py`):
- Human actions 0 left, 1 down, 2 right, 3 up, 4 stay. Robot action a: direction a % 5 (same
  code) applied to the box on cell a // 5 (cell = row * n + col); no box there or direction 4:
  no-op. Boxes are blocked by walls and other boxes, not by the human.
- The human is blocked by walls and boxes. A state is frozen when dead or the human is at the
  goal; a frozen state never changes.
- One step, human first: if not frozen the human moves; if it is now at the goal the reward is
  1 and the robot's push is skipped; otherwise the push applies (possibly crushing the human).
  So r_t = [human at goal after its move].
- Human policy: with probability 1 - noise the action minimising the Euclidean distance of its
  resulting position to the goal, with `stay_bonus` (0.1) subtracted for stay (so a blocked move
  loses to staying), ties to the lowest index; otherwise uniform over the 5 actions.
- Reset "corner": the human in a uniform corner, boxes on its two neighbours (same row first),
  the other boxes uniform on free cells, the goal uniform over cells with neither the human nor a
  box. "random": the human anywhere.

`gridworld_env.GridWorldEnv` is the single-environment gymnasium version, written independently;
the tests check that both agree step for step.
"""

from __future__ import annotations

import numpy as np

#: (d_row, d_col) of the 5 actions shared by the human and the robot's pushes
DELTAS = np.array([[0, -1], [1, 0], [0, 1], [-1, 0], [0, 0]], dtype=np.int64)
STAY = 4
STARTS = ("corner", "random")


def check_config(size: int, num_boxes: int, noise: float, horizon: int, start: str) -> None:
    """One clear error for a bad gridworld configuration."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; valid starts: {', '.join(STARTS)}")
    if not isinstance(size, (int, np.integer)) or size < 3:
        raise ValueError(f"size must be an integer >= 3, got {size!r}")
    low = 2 if start == "corner" else 0
    if not isinstance(num_boxes, (int, np.integer)) or not low <= num_boxes <= size * size - 2:
        raise ValueError(
            f"num_boxes must be an integer in [{low}, {size * size - 2}] for a {size}x{size} "
            f"grid with start={start!r}, got {num_boxes!r}"
        )
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise!r}")
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")


class VecGridWorld:
    """N obstacle gridworlds in lockstep (module docstring). State: `human` (N, 2), `boxes`
    (N, K, 2), `goal` (N, 2), `dead` (N,), step counter `t`."""

    human_actions = 5
    noop_robot_action = STAY  # direction "stay" on cell 0

    def __init__(
        self,
        num_envs: int,
        size: int = 5,
        num_boxes: int = 2,
        noise: float = 0.2,
        horizon: int = 50,
        start: str = "corner",
        stay_bonus: float = 0.1,
    ):
        check_config(size, num_boxes, noise, horizon, start)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs, self.size, self.num_boxes = num_envs, size, num_boxes
        self.noise, self.horizon, self.start, self.stay_bonus = noise, horizon, start, stay_bonus
        self.robot_actions = 5 * size * size
        self.obs_dim = 2 * size * size
        self.human = np.zeros((num_envs, 2), dtype=np.int64)
        self.boxes = np.zeros((num_envs, num_boxes, 2), dtype=np.int64)
        self.goal = np.zeros((num_envs, 2), dtype=np.int64)
        self.dead = np.zeros(num_envs, dtype=bool)
        self.t = 0
        self._moves = None  # (state key, _human_moves()) cache

    # ---- state ------------------------------------------------------------------------------

    def reset(self, rng: np.random.Generator) -> None:
        """New episodes in every env (module docstring, "Reset")."""
        n, k, cells = self.size, self.num_boxes, self.size * self.size
        N = self.num_envs
        occupied = np.zeros((N, cells), dtype=bool)
        rows = np.arange(N)
        if self.start == "corner":
            corners = np.array([[0, 0], [0, n - 1], [n - 1, 0], [n - 1, n - 1]])
            # neighbours: the same-row one first, then the same-column one
            row_nb = np.array([[0, 1], [0, n - 2], [n - 1, 1], [n - 1, n - 2]])
            col_nb = np.array([[1, 0], [1, n - 1], [n - 2, 0], [n - 2, n - 1]])
            c = rng.integers(4, size=N)
            self.human = corners[c].astype(np.int64)
            self.boxes[:, 0], self.boxes[:, 1] = row_nb[c], col_nb[c]
            fixed = 2
        else:
            cell = rng.integers(cells, size=N)
            self.human = np.stack([cell // n, cell % n], 1).astype(np.int64)
            fixed = 0
        occupied[rows, self.human[:, 0] * n + self.human[:, 1]] = True
        for b in range(fixed):
            occupied[rows, self.boxes[:, b, 0] * n + self.boxes[:, b, 1]] = True
        for b in range(fixed, k):
            cell = _uniform_free(occupied, rng)
            occupied[rows, cell] = True
            self.boxes[:, b] = np.stack([cell // n, cell % n], 1)
        cell = _uniform_free(occupied, rng)
        self.goal = np.stack([cell // n, cell % n], 1).astype(np.int64)
        self.dead = np.zeros(N, dtype=bool)
        self.t = 0

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "human": self.human.copy(),
            "boxes": self.boxes.copy(),
            "goal": self.goal.copy(),
            "dead": self.dead.copy(),
            "t": np.array(self.t),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load a state of any batch size M (e.g. one repeated for simulated rollouts)."""
        human = np.asarray(state["human"], dtype=np.int64)
        boxes = np.asarray(state["boxes"], dtype=np.int64)
        if human.ndim != 2 or boxes.shape != (len(human), self.num_boxes, 2):
            raise ValueError(
                f"state needs human (M, 2) and boxes (M, {self.num_boxes}, 2); got "
                f"{human.shape} and {boxes.shape}"
            )
        self.num_envs = len(human)
        self.human, self.boxes = human.copy(), boxes.copy()
        self.goal = np.asarray(state["goal"], dtype=np.int64).copy()
        self.dead = np.asarray(state["dead"], dtype=bool).copy()
        self.t = int(state.get("t", 0))

    @staticmethod
    def blind_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The state without its hidden goal (moved off the grid, so never reached): what a
        simulator the robot may use knows (AvE's rollouts)."""
        return {**state, "goal": np.full_like(state["goal"], -1)}

    def occupancy(self) -> np.ndarray:
        """(N, n*n) bool: which cells hold a box."""
        n = self.size
        occ = np.zeros((self.num_envs, n * n), dtype=bool)
        occ[np.arange(self.num_envs)[:, None], self.boxes[..., 0] * n + self.boxes[..., 1]] = True
        return occ

    def observe(self) -> np.ndarray:
        """(N, 2 n^2) float32: one-hot of the human's cell, then box occupancy; no goal."""
        n = self.size
        obs = np.zeros((self.num_envs, self.obs_dim), dtype=np.float32)
        obs[np.arange(self.num_envs), self.human[:, 0] * n + self.human[:, 1]] = 1.0
        obs[:, n * n :] = self.occupancy()
        return obs

    def at_goal(self) -> np.ndarray:
        return np.all(self.human == self.goal, axis=1)

    def frozen(self) -> np.ndarray:
        return self.dead | self.at_goal()

    def empowerment_features(self) -> np.ndarray:
        """(N, 2) float: the human's position, whose spread AvE measures (Du et al. 2020)."""
        return self.human.astype(np.float64)

    def object_coordinates(self) -> np.ndarray:
        """(N, 2 + 2K) float: [human row, human col, box 1 row, box 1 col, ...], the state
        vector of the original code (`envs/gridworld.py`, `GridWorldEnv.reset`), all of whose
        entries the paper's AvE pools into one variance (`agent.ave_reward`)."""
        return np.concatenate([self.human, self.boxes.reshape(self.num_envs, -1)], 1).astype(
            np.float64
        )

    def free_human(self, obs: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """`free_human_mask` on this grid: the training's diagnostics (`train._diagnostics`)."""
        return free_human_mask(obs, episode_end, self.size)

    # ---- the human --------------------------------------------------------------------------

    def _human_moves(self) -> np.ndarray:
        """(N, 5, 2): the human's position after each action (walls and boxes block); cached
        until the state next changes (`human_act` and `step` both need it)."""
        key = (self.human.tobytes(), self.boxes.tobytes())
        if self._moves is not None and self._moves[0] == key:
            return self._moves[1]
        target = self.human[:, None, :] + DELTAS[None]
        off = np.any((target < 0) | (target >= self.size), axis=2)
        clipped = np.minimum(np.maximum(target, 0), self.size - 1)
        flat = clipped[..., 0] * self.size + clipped[..., 1]
        blocked = off | self.occupancy()[np.arange(self.num_envs)[:, None], flat]
        moves = np.where(blocked[..., None], self.human[:, None, :], target)
        self._moves = (key, moves)
        return moves

    def greedy_human_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """(N,) the human's greedy action toward `goal` (default: its own goal); (N, G, 2)
        goals give (N, G), the greedy action toward each candidate goal."""
        goal = self.goal if goal is None else np.asarray(goal)
        moves = self._human_moves().astype(np.float64)  # (N, 5, 2)
        if goal.ndim == 2:
            dist = np.linalg.norm(moves - goal[:, None, :], axis=-1)  # (N, 5)
        else:
            dist = np.linalg.norm(moves[:, None] - goal[:, :, None, :], axis=-1)  # (N, G, 5)
        dist[..., STAY] -= self.stay_bonus
        return np.argmin(dist, axis=-1)

    def human_act(self, rng: np.random.Generator) -> np.ndarray:
        """(N,) eps-greedy actions: uniform with probability `noise`, else greedy."""
        u = rng.random(self.num_envs)
        random = rng.integers(5, size=self.num_envs)
        return np.where(u < self.noise, random, self.greedy_human_action())

    # ---- dynamics ---------------------------------------------------------------------------

    def step(self, robot_action: np.ndarray, human_action: np.ndarray) -> np.ndarray:
        """Human first, then robot (module docstring); returns the (N,) float32 reward."""
        robot_action = _check_actions(robot_action, self.robot_actions, self.num_envs, "robot")
        human_action = _check_actions(human_action, 5, self.num_envs, "human")
        N, n = self.num_envs, self.size
        rows = np.arange(N)
        live = ~self.frozen()
        moved = self._human_moves()[rows, human_action]
        self.human = np.where(live[:, None], moved, self.human)
        reward = self.at_goal()
        push = live & ~reward
        # the robot's push: the box on cell a // 5, moved by direction a % 5
        direction, cell = robot_action % 5, robot_action // 5
        flat = self.boxes[..., 0] * n + self.boxes[..., 1]  # (N, K)
        hit = flat == cell[:, None]
        has_box = hit.any(axis=1) & (direction != STAY) & push
        b = hit.argmax(axis=1)
        target = self.boxes[rows, b] + DELTAS[direction]
        inside = np.all((target >= 0) & (target < n), axis=1)
        target_flat = np.minimum(np.maximum(target, 0), n - 1) @ np.array([n, 1])
        blocked = np.any(flat == target_flat[:, None], axis=1)
        go = has_box & inside & ~blocked
        self.boxes[rows[go], b[go]] = target[go]
        self.dead |= go & np.all(target == self.human, axis=1)
        self.t += 1
        return reward.astype(np.float32)


def free_human_mask(obs: np.ndarray, episode_end: np.ndarray, size: int) -> np.ndarray:
    """(M,) bool: whether the human of each stored state is free.

    `obs` (M, 2 size^2) are `observe` rows of whole episodes in order and `episode_end` (M,) the
    flat index of each state's episode's last state (an `EpisodeDataset`'s arrays). Free: the
    human is alive (no box on its cell), has an open neighbouring cell (inside the grid, no
    box), and moves at this step or a later one of its episode (its cell at some later state
    differs). Trapped or frozen otherwise: boxed in, crushed, frozen at its goal (it never
    moves again; the goal itself is not observed), or staying put for the rest of the
    episode; an episode's last state is never free.
    """
    obs = np.asarray(obs)
    end = np.asarray(episode_end, dtype=np.int64)
    m, cells = len(obs), size * size
    rows = np.arange(m)
    cell = obs[:, :cells].argmax(axis=1)
    box = obs[:, cells : 2 * cells] > 0.5
    alive = ~box[rows, cell]
    nb = np.stack([cell // size, cell % size], 1)[:, None] + DELTAS[None, :STAY]  # (M, 4, 2)
    inside = np.all((nb >= 0) & (nb < size), axis=2)
    nb_cell = np.minimum(np.maximum(nb, 0), size - 1) @ np.array([size, 1])
    open_nb = (inside & ~box[rows[:, None], nb_cell]).any(axis=1)
    step_moves = np.zeros(m, dtype=bool)  # the human's cell changes from state i to i + 1
    step_moves[:-1] = cell[1:] != cell[:-1]
    step_moves &= rows < end
    moves = np.flatnonzero(step_moves)
    first = np.append(moves, m)[np.searchsorted(moves, rows)]  # first move at or after i
    return alive & open_nb & (first < end)


def _uniform_free(occupied: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) a uniform free cell per row of the (N, cells) occupancy."""
    free = ~occupied
    u = rng.random(len(occupied)) * free.sum(axis=1)
    return np.minimum((np.cumsum(free, axis=1) <= u[:, None]).sum(axis=1), occupied.shape[1] - 1)


def _check_actions(actions, n_actions: int, num_envs: int, who: str) -> np.ndarray:
    a = np.asarray(actions)
    if a.shape != (num_envs,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"{who} actions must be an integer array of shape ({num_envs},), got "
            f"{a.dtype} {a.shape}"
        )
    if a.min(initial=0) < 0 or a.max(initial=0) >= n_actions:
        raise ValueError(f"{who} actions must lie in [0, {n_actions}), got {a.min()}..{a.max()}")
    return a.astype(np.int64)
