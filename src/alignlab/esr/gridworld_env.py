"""The ESR obstacle gridworld as one plain-Python gymnasium environment: the reference that the
vectorised `gridworld.VecGridWorld` is tested against, so it is written independently of it
(tuples and loops over boxes; the only shared code is the configuration check).

Myers et al. 2024 (ESR, arXiv 2411.02623) evaluate on the AvE gridworld of Du et al. 2020,
scaled up. The ESR notes ("Environments/Data: Obstacle gridworld") describe the original
`envs/gridworld.py`; this module follows those notes exactly:

- Grid n x n (`size`, default 5), coordinates (row, col) with row 0 at the top, cell index
  row * n + col. Human actions: 0 left (0, -1), 1 down (+1, 0), 2 right (0, +1), 3 up (-1, 0),
  4 stay.
- Robot actions (5 n^2): a -> direction a % 5 (the human's encoding) applied to the box on cell
  a // 5. The box moves one step unless the target is off the grid or holds another box. The
  human does not block boxes. No box on the cell, or direction 4: no-op.
- The human moves unless the target is off the grid or holds a box.
- Frozen: the human is dead (a box was pushed onto it) or at the goal. Nothing moves in a frozen
  state.
- One step, human first: (1) frozen: reward [human at goal], nothing moves; (2) else the human
  moves, and if it is now at the goal the reward is 1 and the robot's push is skipped; (3) else
  reward 0 and the push applies, and a box landing on the human sets `dead`. So the return over
  the horizon (50) is the number of steps at the goal.
- Human policy: eps-greedy with eps = `noise` (0.2). The greedy action minimises the Euclidean
  distance from its resulting position (walls and the current boxes block) to the goal, minus
  `stay_bonus` (0.1) for stay; ties go to the lowest index. With probability eps the action is
  uniform over all 5 (possibly the greedy one).
- Reset "corner" (default): a uniform corner, boxes on its two neighbours (the same-row one
  first), the other boxes uniform on free distinct cells, the goal uniform over cells holding
  neither the human nor a box. "random": the human on a uniform cell, then boxes and goal as
  above.
- Observation: float32 [one-hot of the human's cell (n^2), box occupancy (n^2)]. The goal is
  never observed. `terminated` is always False; `truncated` once t reaches the horizon.

Choices of the original code kept here (ESR notes, "Obstacle gridworld"): the stay bonus (a
blocked move scores the same distance as staying, so the human waits rather than bumping); a
box pushed onto the human kills it and freezes the episode with reward 0 ever after; the human at
its goal freezes the episode with reward 1 every later step.

`frame` and `strip` draw states as RGB pictures (the report's episode strip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .gridworld import check_config

Cell = tuple[int, int]

#: (d_row, d_col) of actions 0 left, 1 down, 2 right, 3 up, 4 stay
MOVES: tuple[Cell, ...] = ((0, -1), (1, 0), (0, 1), (-1, 0), (0, 0))
STAY = 4

# colours of `frame`
WHITE = (255, 255, 255)
GRID = (190, 190, 190)
GOAL = (60, 170, 80)
BOX = (130, 70, 170)
HUMAN = (245, 140, 30)
CRUSHED = (220, 30, 30)


class GridWorldEnv(gym.Env):
    """The obstacle gridworld (module docstring). The env's own step draws the human's
    eps-greedy action from `np_random`; `joint_step` takes both actions and is deterministic.

    State attributes: `human` (row, col), `boxes` (list of (row, col), in a fixed order),
    `goal` (row, col), `dead`, `t`.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: int = 5,
        num_boxes: int = 2,
        noise: float = 0.2,
        horizon: int = 50,
        start: str = "corner",
        stay_bonus: float = 0.1,
        render_mode: str | None = None,
    ):
        # the configuration check is shared; the dynamics below are written independently
        check_config(size, num_boxes, noise, horizon, start)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        self.size, self.num_boxes, self.noise = int(size), int(num_boxes), float(noise)
        self.horizon, self.start, self.stay_bonus = int(horizon), start, float(stay_bonus)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(5 * self.size * self.size)
        self.observation_space = spaces.Box(
            0.0, 1.0, shape=(2 * self.size * self.size,), dtype=np.float32
        )
        # a valid placeholder state until reset
        self.human: Cell = (0, 0)
        self.boxes: list[Cell] = [divmod(i + 1, self.size) for i in range(self.num_boxes)]
        self.goal: Cell = (self.size - 1, self.size - 1)
        self.dead = False
        self.t = 0

    # ---- state ------------------------------------------------------------------------------

    def _inside(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.size and 0 <= cell[1] < self.size

    def _random_free(self, taken: list[Cell]) -> Cell:
        free = [(r, c) for r in range(self.size) for c in range(self.size) if (r, c) not in taken]
        return free[int(self.np_random.integers(len(free)))]

    def _sample_state(self) -> None:
        n = self.size
        if self.start == "corner":
            corner = ((0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1))[
                int(self.np_random.integers(4))
            ]
            r, c = corner
            same_row = (r, 1 if c == 0 else n - 2)
            same_col = (1 if r == 0 else n - 2, c)
            self.human, self.boxes = corner, [same_row, same_col]
        else:
            self.human, self.boxes = self._random_free([]), []
        while len(self.boxes) < self.num_boxes:
            self.boxes.append(self._random_free([self.human, *self.boxes]))
        self.goal = self._random_free([self.human, *self.boxes])
        self.dead = False

    def set_state(self, state: dict) -> None:
        """Load {"human": (r, c), "boxes": [(r, c), ...], "goal": (r, c)}, optionally "dead"
        (must agree with whether a box is on the human) and "t" (default 0)."""
        human = _cell(state["human"])
        boxes = [_cell(b) for b in np.asarray(state["boxes"]).reshape(-1, 2)]
        goal = _cell(state["goal"])
        if len(boxes) != self.num_boxes:
            raise ValueError(f"state has {len(boxes)} boxes, the env has {self.num_boxes}")
        for cell in (human, goal, *boxes):
            if not self._inside(cell):
                raise ValueError(f"cell {cell} is off the {self.size}x{self.size} grid")
        if len(set(boxes)) != len(boxes):
            raise ValueError(f"two boxes share a cell: {boxes}")
        dead = human in boxes
        if "dead" in state and bool(state["dead"]) != dead:
            raise ValueError(
                f"dead={bool(state['dead'])} but a box is {'' if dead else 'not '}on the human"
            )
        self.human, self.boxes, self.goal, self.dead = human, boxes, goal, dead
        self.t = int(state.get("t", 0))

    def get_state(self) -> dict:
        """The state as plain tuples (see `set_state`)."""
        return {
            "human": self.human,
            "boxes": list(self.boxes),
            "goal": self.goal,
            "dead": self.dead,
            "t": self.t,
        }

    def at_goal(self) -> bool:
        return self.human == self.goal

    def frozen(self) -> bool:
        return self.dead or self.at_goal()

    def observe(self) -> np.ndarray:
        """float32 (2 n^2,): one-hot of the human's cell, then box occupancy."""
        n = self.size
        obs = np.zeros(2 * n * n, dtype=np.float32)
        obs[self.human[0] * n + self.human[1]] = 1.0
        for r, c in self.boxes:
            obs[n * n + r * n + c] = 1.0
        return obs

    # ---- the human --------------------------------------------------------------------------

    def human_target(self, action: int) -> Cell:
        """Where the human ends up after `action` (walls and boxes block)."""
        dr, dc = MOVES[action]
        target = (self.human[0] + dr, self.human[1] + dc)
        if not self._inside(target) or target in self.boxes:
            return self.human
        return target

    def greedy_human_action(self) -> int:
        """argmin over actions of distance(resulting position, goal) - stay_bonus [stay]; ties
        to the lowest index."""
        best, best_score = 0, math.inf
        for action in range(5):
            r, c = self.human_target(action)
            dr, dc = r - self.goal[0], c - self.goal[1]
            score = math.sqrt(dr * dr + dc * dc)
            if action == STAY:
                score -= self.stay_bonus
            if score < best_score:
                best, best_score = action, score
        return best

    def human_action_probs(self) -> np.ndarray:
        """(5,) the eps-greedy distribution: (1 - noise) one-hot(greedy) + noise / 5."""
        probs = np.full(5, self.noise / 5)
        probs[self.greedy_human_action()] += 1.0 - self.noise
        return probs

    def sample_human_action(self) -> int:
        """One eps-greedy draw from `np_random`."""
        if self.np_random.random() < self.noise:
            return int(self.np_random.integers(5))
        return self.greedy_human_action()

    # ---- gymnasium API ----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode (module docstring, "Reset"), or options["state"] (see `set_state`)."""
        super().reset(seed=seed)
        if options and "state" in options:
            self.set_state({"t": 0, **options["state"]})
        else:
            self._sample_state()
            self.t = 0
        return self.observe(), {"at_goal": self.at_goal(), "dead": self.dead}

    def step(self, action):
        """The human draws its eps-greedy action from `np_random`, then `joint_step`."""
        return self.joint_step(action, self.sample_human_action())

    def joint_step(self, robot_action, human_action):
        """One deterministic step, human first then robot (module docstring)."""
        robot_action, human_action = int(robot_action), int(human_action)
        if not 0 <= robot_action < self.action_space.n:
            raise ValueError(
                f"robot action must lie in [0, {self.action_space.n}), got {robot_action}"
            )
        if not 0 <= human_action < 5:
            raise ValueError(f"human action must lie in [0, 5), got {human_action}")
        if self.frozen():
            reward = 1.0 if self.at_goal() else 0.0
        else:
            self.human = self.human_target(human_action)
            if self.at_goal():
                reward = 1.0  # the robot's push is skipped
            else:
                reward = 0.0
                self._push(robot_action)
        self.t += 1
        info = {"at_goal": self.at_goal(), "dead": self.dead, "human_action": human_action}
        return self.observe(), reward, False, self.t >= self.horizon, info

    def _push(self, robot_action: int) -> None:
        direction, cell = robot_action % 5, robot_action // 5
        if direction == STAY:
            return
        here = divmod(cell, self.size)
        for i, box in enumerate(self.boxes):
            if box != here:
                continue
            dr, dc = MOVES[direction]
            target = (box[0] + dr, box[1] + dc)
            if self._inside(target) and target not in self.boxes:
                self.boxes[i] = target
                if target == self.human:
                    self.dead = True
            return

    def render(self):
        if self.render_mode == "ansi":
            return ansi(self.size, self.human, self.boxes, self.goal, self.dead)
        if self.render_mode == "rgb_array":
            return frame(self.size, self.human, self.boxes, self.goal, self.dead)
        return None


def _cell(x) -> Cell:
    r, c = (int(v) for v in np.asarray(x).reshape(2))
    return (r, c)


# ---- pictures ---------------------------------------------------------------------------------


def ansi(size: int, human: Cell, boxes: Sequence[Cell], goal: Cell, dead: bool = False) -> str:
    """Text grid, one row per line: H human, B box, G goal, X crushed human, . empty."""
    human, goal = _cell(human), _cell(goal)
    boxes = {_cell(b) for b in boxes}
    rows = []
    for r in range(size):
        row = []
        for c in range(size):
            if (r, c) == human:
                row.append("X" if dead or (r, c) in boxes else "H")
            elif (r, c) in boxes:
                row.append("B")
            elif (r, c) == goal:
                row.append("G")
            else:
                row.append(".")
        rows.append("".join(row))
    return "\n".join(rows) + "\n"


def frame(
    size: int,
    human: Cell,
    boxes: Sequence[Cell],
    goal: Cell,
    dead: bool = False,
    cell: int = 24,
) -> np.ndarray:
    """(size * cell, size * cell, 3) uint8 picture of a state: grey grid lines, the goal a
    green square, boxes purple squares, the human an orange circle; a crushed human (dead, or a
    box on it) is a red cross over its box."""
    human, goal = _cell(human), _cell(goal)
    img = np.empty((size * cell, size * cell, 3), dtype=np.uint8)
    img[:] = WHITE
    m = max(cell // 8, 1)

    def square(rc: Cell, colour, margin: int) -> None:
        r0, c0 = rc[0] * cell, rc[1] * cell
        img[r0 + margin : r0 + cell - margin, c0 + margin : c0 + cell - margin] = colour

    square(goal, GOAL, m)
    yy, xx = np.mgrid[0:cell, 0:cell] + 0.5
    centre, radius = cell / 2, cell / 2 - 1.5 * m
    disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2
    r0, c0 = human[0] * cell, human[1] * cell
    img[r0 : r0 + cell, c0 : c0 + cell][disc] = HUMAN
    crushed = False
    for b in boxes:
        b = _cell(b)
        square(b, BOX, m)
        crushed |= b == human
    if dead or crushed:
        thick = np.abs(yy - xx) <= max(cell / 12, 1.0)
        anti = np.abs(yy + xx - cell) <= max(cell / 12, 1.0)
        inner = (yy >= m) & (yy <= cell - m) & (xx >= m) & (xx <= cell - m)
        img[r0 : r0 + cell, c0 : c0 + cell][(thick | anti) & inner] = CRUSHED
    for k in range(size + 1):  # grid lines
        p = min(k * cell, size * cell - 1)
        img[p, :] = GRID
        img[:, p] = GRID
    return img


def strip(frames: Sequence[np.ndarray], pad: int = 4) -> np.ndarray:
    """Frames side by side, separated by `pad` white columns (shorter frames padded below)."""
    if not frames:
        raise ValueError("strip needs at least one frame")
    height = max(f.shape[0] for f in frames)
    width = sum(f.shape[1] for f in frames) + pad * (len(frames) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for f in frames:
        out[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1] + pad
    return out
