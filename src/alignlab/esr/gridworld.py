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

Implementation: at the N of training (16) a step is a few dozen numpy calls on tiny arrays, so
their fixed cost is what counts. Cells are flat indices; each env's box grid (which box is on
each cell) and its observation are kept and updated in place by pushes instead of being rebuilt;
the human's moves, the robot's pushes and the greedy human's action (per human cell, set of
box-blocked neighbours and goal cell) are lookup tables built once per grid size and stay bonus,
the greedy one with the same float64 distance expression (`np.linalg.norm`, bonus subtracted,
`np.argmin`), so its values and tie-breaks are those of computing it every step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

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


class _Tables(NamedTuple):
    """Lookup tables of one grid size and stay bonus (module docstring, "Implementation")."""

    coords: np.ndarray  # (cells, 2) int64: (row, col) of each cell
    coords_f: np.ndarray  # the same as float64
    move: np.ndarray  # (cells, 5): the cell each human action leads to, boxes aside (own cell
    # when it leaves the grid, and for stay)
    move_flat: np.ndarray  # the same, flat: [cell * 5 + action]
    nb: np.ndarray  # (cells, 4): the cell in each direction (own cell off the grid)
    src: np.ndarray  # (5 cells,): per robot action, the cell whose box it pushes
    dst: np.ndarray  # (5 cells,): where that box goes; its own cell when the push would leave
    # the grid or is "stay", so that the box blocks its own push
    greedy: np.ndarray | None  # int8 (cells * 16 * cells,): [cell * 16 cells + mask * cells +
    # goal cell] the greedy human action, bit d of mask set when a box blocks direction d (10 kB
    # at 5x5, 1 MB at 16x16); None above GREEDY_TABLE_CELLS cells, where it would grow as cells²
    mask_weights: np.ndarray  # (4,): cells * 2^d, the mask term of that index
    corner: np.ndarray  # (4,) the corner start's human cells, then its same-row and
    row_nb: np.ndarray  # same-column boxes (module docstring, "Reset")
    col_nb: np.ndarray


#: grids of more cells compute the greedy human's action per step instead of looking it up
GREEDY_TABLE_CELLS = 256


@functools.cache
def _tables(size: int, stay_bonus: float) -> _Tables:
    n, cells = size, size * size
    own = np.arange(cells)
    coords = np.stack([own // n, own % n], 1).astype(np.int64)
    target = coords[:, None, :] + DELTAS[None]  # (cells, 5, 2)
    inside = np.all((target >= 0) & (target < n), axis=2)
    flat = target[..., 0] * n + target[..., 1]
    move = np.where(inside, flat, own[:, None])
    dst = np.where(inside & (np.arange(5) != STAY), flat, own[:, None])
    # greedy[h, mask, g]: the human's positions after each action (a box-blocked or off-grid
    # move stays, as `_human_moves`), scored as `greedy_human_action` scores them
    box_blocked = np.zeros((16, 5), dtype=bool)
    box_blocked[:, :STAY] = (np.arange(16)[:, None] >> np.arange(4)) & 1
    greedy = np.empty((cells if cells <= GREEDY_TABLE_CELLS else 0, 16, cells), dtype=np.int8)
    for h in range(len(greedy)):
        moves = coords[np.where(box_blocked, h, move[h])].astype(np.float64)  # (16, 5, 2)
        dist = np.linalg.norm(moves[:, None] - coords[None, :, None, :], axis=-1)  # (16, G, 5)
        dist[..., STAY] -= stay_bonus
        greedy[h] = np.argmin(dist, axis=-1)
    corners = np.array([[0, 0], [0, n - 1], [n - 1, 0], [n - 1, n - 1]])
    # neighbours: the same-row one first, then the same-column one
    row_nb = np.array([[0, 1], [0, n - 2], [n - 1, 1], [n - 1, n - 2]])
    col_nb = np.array([[1, 0], [1, n - 1], [n - 2, 0], [n - 2, n - 1]])
    tables = _Tables(
        coords=coords,
        coords_f=coords.astype(np.float64),
        move=move,
        move_flat=move.reshape(-1),
        nb=move[:, :STAY].copy(),
        src=np.repeat(own, 5),
        dst=dst.reshape(-1),
        greedy=greedy.reshape(-1) if cells <= GREEDY_TABLE_CELLS else None,
        mask_weights=cells * (1 << np.arange(4, dtype=np.int64)),
        corner=corners @ np.array([n, 1]),
        row_nb=row_nb @ np.array([n, 1]),
        col_nb=col_nb @ np.array([n, 1]),
    )
    for table in tables:  # shared by every env of this size: read-only
        if table is not None:
            table.flags.writeable = False
    return tables


class VecGridWorld:
    """N obstacle gridworlds in lockstep (module docstring). State: `human` (N, 2), `boxes`
    (N, K, 2), `goal` (N, 2) as (row, col), `dead` (N,), step counter `t`.

    Inside, positions are flat cells (module docstring, "Implementation"): `human`, `boxes` and
    `goal` return new int64 (row, col) arrays at each access, and assigning one loads it as
    `set_state` does. An env's boxes are on distinct cells of the grid, as in every state that
    reset and step reach; `set_state` rejects other states.
    """

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
        self._cells = size * size
        self._rows = np.empty(0, dtype=np.int64)
        # a placeholder until reset: everything on cell 0, the human at its goal (frozen)
        zeros = np.zeros(num_envs, dtype=np.int64)
        self._load(
            zeros,
            np.zeros((num_envs, num_boxes), dtype=np.int64),
            np.zeros((num_envs, 2), np.int64),
            np.zeros(num_envs, dtype=bool),
            0,
            check=False,
        )

    # ---- state ------------------------------------------------------------------------------

    @property
    def stay_bonus(self) -> float:
        return self._stay_bonus

    @stay_bonus.setter
    def stay_bonus(self, value: float) -> None:
        self._stay_bonus = value
        self._tab = _tables(self.size, value)

    @property
    def human(self) -> np.ndarray:
        return self._tab.coords[self._h]

    @human.setter
    def human(self, value) -> None:
        self.set_state({**self.get_state(), "human": value})

    @property
    def boxes(self) -> np.ndarray:
        return self._tab.coords[self._b]

    @boxes.setter
    def boxes(self, value) -> None:
        self.set_state({**self.get_state(), "boxes": value})

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    @goal.setter
    def goal(self, value) -> None:
        self.set_state({**self.get_state(), "goal": value})

    def _load(self, h, b, goal, dead, t, check: bool = True) -> None:
        """Take a state of flat cells (goal as (row, col)); rebuild the box grid and the
        observation."""
        N, n, cells, k = len(h), self.size, self._cells, self.num_boxes
        if len(self._rows) != N:
            self._rows = np.arange(N)
            self._grid_off = self._rows * cells  # row offsets into the flat box grid
            self._obs_off = self._rows * (2 * cells)  # and into the flat observations
        rows = self._rows
        grid = np.full((N, cells), -1, dtype=np.int64)  # the box on each cell, -1 for none
        grid[rows[:, None], b] = np.arange(k)
        if check and k and not (grid[rows[:, None], b] == np.arange(k)).all():
            raise ValueError("state: the boxes of an env must be on distinct cells")
        obs = np.zeros((N, 2 * cells), dtype=np.float32)
        obs[rows, h] = 1.0
        obs[:, cells:] = grid >= 0
        on_grid = np.all((goal >= 0) & (goal < n), axis=1)
        self.num_envs, self.t = N, t
        self._h, self._b, self._goal, self.dead = h, b, goal, dead
        # a goal off the grid (`blind_state`'s) is cell -1: never reached
        self._g = np.where(on_grid, goal[:, 0] * n + goal[:, 1], -1)
        self._goals_on_grid = bool(on_grid.all())
        self._grid, self._grid_flat = grid, grid.reshape(-1)
        self._obs, self._obs_flat = obs, obs.reshape(-1)

    def reset(self, rng: np.random.Generator) -> None:
        """New episodes in every env (module docstring, "Reset")."""
        k, cells, tab = self.num_boxes, self._cells, self._tab
        N = self.num_envs
        occupied = np.zeros((N, cells), dtype=bool)
        rows = np.arange(N)
        b = np.zeros((N, k), dtype=np.int64)
        if self.start == "corner":
            c = rng.integers(4, size=N)
            h = tab.corner[c]
            b[:, 0], b[:, 1] = tab.row_nb[c], tab.col_nb[c]
            fixed = 2
        else:
            h = rng.integers(cells, size=N)
            fixed = 0
        occupied[rows, h] = True
        for i in range(fixed):
            occupied[rows, b[:, i]] = True
        for i in range(fixed, k):
            cell = _uniform_free(occupied, rng)
            occupied[rows, cell] = True
            b[:, i] = cell
        goal = tab.coords[_uniform_free(occupied, rng)]
        self._load(h.astype(np.int64), b, goal, np.zeros(N, dtype=bool), 0, check=False)

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "human": self.human,
            "boxes": self.boxes,
            "goal": self._goal.copy(),
            "dead": self.dead.copy(),
            "t": np.array(self.t),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load a state of any batch size M (e.g. one repeated for simulated rollouts)."""
        human = np.asarray(state["human"], dtype=np.int64)
        boxes = np.asarray(state["boxes"], dtype=np.int64)
        if human.ndim != 2 or human.shape[1] != 2 or boxes.shape != (len(human), self.num_boxes, 2):
            raise ValueError(
                f"state needs human (M, 2) and boxes (M, {self.num_boxes}, 2); got "
                f"{human.shape} and {boxes.shape}"
            )
        m, n = len(human), self.size
        goal = np.array(state["goal"], dtype=np.int64)
        dead = np.array(state["dead"], dtype=bool)
        if goal.shape != (m, 2) or dead.shape != (m,):
            raise ValueError(
                f"state needs goal ({m}, 2) and dead ({m},); got {goal.shape} and {dead.shape}"
            )
        if ((human < 0) | (human >= n)).any() or ((boxes < 0) | (boxes >= n)).any():
            raise ValueError(f"state: the human and the boxes must lie on the {n}x{n} grid")
        h = human[:, 0] * n + human[:, 1]
        b = boxes[..., 0] * n + boxes[..., 1]
        self._load(h, b, goal, dead, int(state.get("t", 0)))

    @staticmethod
    def blind_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The state without its hidden goal (moved off the grid, so never reached): what a
        simulator the robot may use knows (AvE's rollouts)."""
        return {**state, "goal": np.full_like(state["goal"], -1)}

    def occupancy(self) -> np.ndarray:
        """(N, n*n) bool: which cells hold a box."""
        return self._grid >= 0

    def observe(self) -> np.ndarray:
        """(N, 2 n^2) float32: one-hot of the human's cell, then box occupancy; no goal."""
        return self._obs.copy()

    def at_goal(self) -> np.ndarray:
        return self._h == self._g

    def frozen(self) -> np.ndarray:
        return self.dead | (self._h == self._g)

    def empowerment_features(self) -> np.ndarray:
        """(N, 2) float: the human's position, whose spread AvE measures (Du et al. 2020)."""
        return self._tab.coords_f[self._h]

    def object_coordinates(self) -> np.ndarray:
        """(N, 2 + 2K) float: [human row, human col, box 1 row, box 1 col, ...], the state
        vector of the original code (`envs/gridworld.py`, `GridWorldEnv.reset`), all of whose
        entries the paper's AvE pools into one variance (`agent.ave_reward`)."""
        cells = np.concatenate([self._h[:, None], self._b], 1)
        return self._tab.coords_f[cells].reshape(self.num_envs, -1)

    def free_human(self, obs: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """`free_human_mask` on this grid: the training's diagnostics (`train._diagnostics`)."""
        return free_human_mask(obs, episode_end, self.size)

    # ---- the human --------------------------------------------------------------------------

    def _human_moves(self) -> np.ndarray:
        """(N, 5, 2): the human's position after each action (walls and boxes block)."""
        to = self._tab.move[self._h]  # (N, 5)
        blocked = self._grid_flat[self._grid_off[:, None] + to] >= 0
        return self._tab.coords[np.where(blocked, self._h[:, None], to)]

    def _greedy_index(self) -> np.ndarray:
        """(N,) the greedy table's index of each env's human cell and blocked directions; the
        goal cell is added to it."""
        tab, h = self._tab, self._h
        blocked = self._grid_flat[self._grid_off[:, None] + tab.nb[h]] >= 0  # (N, 4)
        return h * (16 * self._cells) + blocked @ tab.mask_weights

    def _goal_cells(self, goal: np.ndarray) -> np.ndarray | None:
        """Flat cells of integer (N, 2) or (N, G, 2) goals on the grid, else None."""
        if goal.dtype.kind not in "iu" or goal.ndim not in (2, 3) or goal.shape[-1] != 2:
            return None
        goal = goal.astype(np.int64, copy=False)
        if goal.size == 0 or goal.min() < 0 or goal.max() >= self.size:
            return None
        return goal[..., 0] * self.size + goal[..., 1]

    def greedy_human_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """(N,) the human's greedy action toward `goal` (default: its own goal); (N, G, 2)
        goals give (N, G), the greedy action toward each candidate goal."""
        if goal is None:
            if self._goals_on_grid and self._tab.greedy is not None:
                return self._tab.greedy[self._greedy_index() + self._g].astype(np.int64)
            goal = self._goal
        else:
            goal = np.asarray(goal)
            cells = None if self._tab.greedy is None else self._goal_cells(goal)
            if cells is not None:
                index = self._greedy_index()
                at = index + cells if goal.ndim == 2 else index[:, None] + cells
                return self._tab.greedy[at].astype(np.int64)
        # goals off the grid (a blind state's), not integer cells, or a grid too large for the
        # table: the table's expression
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
        tab, grid, obs = self._tab, self._grid_flat, self._obs_flat
        grid_off, obs_off = self._grid_off, self._obs_off
        h, g = self._h, self._g
        frozen = self.dead | (h == g)
        to = tab.move_flat[h * 5 + human_action]
        moved = np.where(frozen | (grid[grid_off + to] >= 0), h, to)  # boxes block the human
        obs[obs_off + h] = 0.0
        obs[obs_off + moved] = 1.0
        self._h = moved
        reward = moved == g
        # the robot's push (skipped when frozen or the human just reached its goal): the box
        # on cell a // 5, one step in direction a % 5, unless another box (or the wall: the
        # box itself, in `dst`) is in the way
        src = grid_off + tab.src[robot_action]
        dst_cell = tab.dst[robot_action]
        dst = grid_off + dst_cell
        box = grid[src]
        go = ~(frozen | reward) & (box >= 0) & (grid[dst] < 0)
        if go.any():
            i = np.flatnonzero(go)
            box, src, dst, dst_cell = box[i], src[i], dst[i], dst_cell[i]
            grid[src] = -1
            grid[dst] = box
            self._b[i, box] = dst_cell
            # flat grid index to flat observation index: row * 2 cells + cells + cell
            obs[src + grid_off[i] + self._cells] = 0.0
            obs[dst + grid_off[i] + self._cells] = 1.0
            self.dead[i] |= dst_cell == moved[i]
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
    """The actions as an int64 array (not copied when they are one), or one clear error."""
    a = np.asarray(actions)
    if a.shape != (num_envs,) or a.dtype.kind not in "iu":
        raise ValueError(
            f"{who} actions must be an integer array of shape ({num_envs},), got "
            f"{a.dtype} {a.shape}"
        )
    checked = a if a.dtype == np.int64 else a.astype(np.int64)
    # one comparison for both ends: as unsigned, negative actions are huge
    if np.maximum.reduce(checked.view(np.uint64), initial=0) >= n_actions:
        raise ValueError(f"{who} actions must lie in [0, {n_actions}), got {a.min()}..{a.max()}")
    return checked
