"""A compact, vectorised Overcooked (JaxMARL "overcooked" v1 rules).

ESR evaluates on JaxMARL's Overcooked (Myers et al. 2024, Sec. 5.2; notes in
shared/papers/esr.md, "Overcooked"). Three modules re-implement the parts of that environment
the experiments need, in numpy, with no JaxMARL / overcooked-ai / pettingzoo dependency:

- here: the layouts, the rules and `VecOvercooked`, N environments stepped in lockstep (the
  training code's interface);
- `overcooked_human`: `ScriptedHuman`, a vectorised greedy subtask policy with epsilon noise
  standing in for the paper's behaviour-cloned human, and `AssistedOvercooked`, the env whose
  human is that policy;
- `overcooked_env`: `OvercookedEnv`, a single-environment gymnasium env written independently
  in plain Python, the reference the vectorised dynamics are tested against (the robot is the
  learner; the human acts inside with the scripted policy), and `OvercookedParallelEnv`, a
  PettingZoo-style parallel API over it.

Layouts
-------
JaxMARL's `layouts.py` (checked against overcooked-ai's `.layout` files). Characters: ``X``
counter, ``O`` onion pile, ``P`` pot, ``D`` dish pile, ``S`` serving location, space floor,
``1``/``2`` the start cells of agent 0 (the ROBOT) and agent 1 (the HUMAN)::

    cramped_room:   coord_ring:   asymm_advantages:
    XXPXX           XXXPX         XXXXXXXXX
    O1 2O           X 1 P         O XSXOX S
    X   X           D2X X         X   P   X
    XDXSX           O   X         X 1 P2  X
                    XOSXX         XXXDXDXXX

The start cells are JaxMARL's ``agent_idx`` (what the paper ran), which differ from
overcooked-ai's: cramped_room [6, 8] (row 1, columns 1 and 3; overcooked-ai puts agent 0 at
row 2, column 1) and asymm_advantages [29, 32] (row 3, columns 2 and 5, the human right next
to the lower pot). coord_ring's row 3 is ``O   X``, a ring of 8 floor cells around one
counter, in both JaxMARL (``wall_idx`` has no 17) and overcooked-ai.

Rules (JaxMARL v1 ``Overcooked.step_agents``)
---------------------------------------------
- Actions: 0 right, 1 down, 2 left, 3 up, 4 stay, 5 interact (the direction order of JaxMARL
  0.0.2 / minigrid; recent JaxMARL orders up, down, right, left). Each agent has a cell, a
  facing direction (same 0..3 code; both start facing up, where JaxMARL draws it at random)
  and a held item: 0 none, 1 onion, 2 dish (an empty plate), 3 soup (a plated soup).
- Movement. A move action always turns the agent to that direction. Its target is the adjacent
  cell if that cell is floor (start cells are floor; counters, piles, pots and serving tiles
  block), else the agent's own cell ("a move into a wall only turns"). Then, exactly as
  JaxMARL: if both targets are equal, nobody moves ("collision"; this includes moving into the
  cell of an agent that stays or whose own move is blocked); else if each target is the other's
  current cell, nobody moves ("swap"); otherwise both move. So following an agent that moves
  away successfully in the same step is allowed (the chain case).
- Interact acts on the faced tile, agent 0 first, then agent 1 on the result:
  onion pile + empty hands -> onion; dish pile + empty hands -> dish; pot with < 3 onions +
  onion -> the onion goes in (hands empty), and the 3rd onion starts cooking with timer
  ``cook_time``; ready pot + dish -> soup in hand, pot empty; serving tile + soup -> delivered,
  team reward ``delivery_reward``, hands empty; empty counter + any item -> item placed; counter
  with an item + empty hands -> picked up. Everything else (interacting with floor, a cooking
  pot, a pile with full hands, a serving tile without soup, ...) is a no-op.
- Cooking: after the interactions every pot with 3 onions and timer > 0 decrements its timer.
  The 3rd onion sets the timer to ``cook_time`` and the same step decrements it, so with the
  onion added in step k the pot is *ready* (timer 0) in the state after step k + cook_time - 1,
  i.e. after ``cook_time`` steps counting the adding step, and a dish interaction succeeds from
  step k + cook_time on (JaxMARL: pot status 20 -> 19 in the adding step, 0 = ready).
- The reward is the team's (both agents get it); ``delivered`` (N, 2) counts deliveries per
  agent, so the human's own reward is ``delivered[:, 1] * delivery_reward``. No reward shaping.
  The horizon (400) only marks truncation; `VecOvercooked.step` keeps stepping past it (for
  simulated rollouts from late states), `overcooked_env.OvercookedEnv` reports ``truncated`` at it.

Observation (`VecOvercooked.observe`, `OvercookedEnv`), float32 in [0, 1], F floor cells, P
pots, C counters (each in row-major order)::

    [0, F)              agent 0 cell, one-hot over the floor cells
    [F, F+4)            agent 0 facing, one-hot (right, down, left, up)
    [F+4, F+8)          agent 0 held item, one-hot (none, onion, dish, soup)
    [F+8, 2F+16)        the same three blocks for agent 1
    2F+16 + 4p + (0..3) pot p: onions / 3, cooking (3 onions, timer > 0), timer / cook_time,
                        ready (3 onions, timer 0)
    2F+16 + 4P + 3c + (0..2)  counter c: item one-hot (onion, dish, soup); all 0 when empty

The paper's robot sees JaxMARL's flattened 26-channel grid instead; this vector holds the same
state except JaxMARL's "urgency" layer (the last 40 steps); neither holds the time step.
``observe(agent=1)`` swaps the two agent blocks (the human's own view, used by the parallel
API). ``empowerment_features`` is the human's block, [F+8, 2F+16): its cell, facing and held
item (what AvE takes the variance of).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LAYOUTS = ("cramped_room", "coord_ring", "asymm_advantages")

_LAYOUT_GRIDS: dict[str, tuple[str, ...]] = {
    "cramped_room": (
        "XXPXX",
        "O1 2O",
        "X   X",
        "XDXSX",
    ),
    "coord_ring": (
        "XXXPX",
        "X 1 P",
        "D2X X",
        "O   X",
        "XOSXX",
    ),
    "asymm_advantages": (
        "XXXXXXXXX",
        "O XSXOX S",
        "X   P   X",
        "X 1 P2  X",
        "XXXDXDXXX",
    ),
}

# tile types
FLOOR, COUNTER, ONION_PILE, POT, DISH_PILE, SERVE = 0, 1, 2, 3, 4, 5
_CHAR_TO_TILE = {
    " ": FLOOR,
    "1": FLOOR,
    "2": FLOOR,
    "X": COUNTER,
    "O": ONION_PILE,
    "P": POT,
    "D": DISH_PILE,
    "S": SERVE,
}
# items
NONE, ONION, DISH, SOUP = 0, 1, 2, 3
ITEM_NAMES = ("none", "onion", "dish", "soup")
# actions
RIGHT, DOWN, LEFT, UP, STAY, INTERACT = 0, 1, 2, 3, 4, 5
NUM_ACTIONS = 6
ACTION_NAMES = ("right", "down", "left", "up", "stay", "interact")
#: (d_row, d_col) of the four directions / move actions
DIRS = ((0, 1), (1, 0), (0, -1), (-1, 0))
VALID_ACTIONS = "0 right, 1 down, 2 left, 3 up, 4 stay, 5 interact"


@dataclass(frozen=True)
class Layout:
    """Static description of a layout; cells are flat indices ``row * width + col``."""

    name: str
    grid: tuple[str, ...]
    height: int
    width: int
    tile: np.ndarray  # (H*W,) tile type
    floor_cells: np.ndarray  # (F,) row-major
    floor_id: np.ndarray  # (H*W,) index into floor_cells or -1
    pot_cells: np.ndarray  # (P,)
    pot_id: np.ndarray  # (H*W,) or -1
    counter_cells: np.ndarray  # (C,)
    counter_id: np.ndarray  # (H*W,) or -1
    onion_piles: np.ndarray
    dish_piles: np.ndarray
    serving: np.ndarray
    start: np.ndarray  # (2,) cells of agents 0 and 1
    neighbor: np.ndarray  # (H*W, 4) the adjacent cell per direction (itself off the grid)

    @property
    def num_cells(self) -> int:
        return self.height * self.width


def check_layout_name(name: str) -> None:
    if name not in _LAYOUT_GRIDS:
        raise ValueError(f"unknown layout {name!r}; valid layouts: {', '.join(LAYOUTS)}")


def get_layout(name: str) -> Layout:
    """Parse one of `LAYOUTS`; an unknown name raises ValueError naming the valid ones."""
    check_layout_name(name)
    grid = _LAYOUT_GRIDS[name]
    h, w = len(grid), len(grid[0])
    if any(len(row) != w for row in grid):
        raise ValueError(f"layout {name!r} is not rectangular")
    tile = np.array([_CHAR_TO_TILE[ch] for row in grid for ch in row], dtype=np.int64)
    cells = np.arange(h * w)
    rows, cols = cells // w, cells % w
    border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    if np.any(border & (tile == FLOOR)):
        raise ValueError(f"layout {name!r} has floor on its border")

    def ids(kind: int) -> tuple[np.ndarray, np.ndarray]:
        where = np.flatnonzero(tile == kind)
        index = np.full(h * w, -1, dtype=np.int64)
        index[where] = np.arange(len(where))
        return where, index

    floor_cells, floor_id = ids(FLOOR)
    pot_cells, pot_id = ids(POT)
    counter_cells, counter_id = ids(COUNTER)
    flat = "".join(grid)
    start = np.array([flat.index("1"), flat.index("2")], dtype=np.int64)
    neighbor = np.empty((h * w, 4), dtype=np.int64)
    for d, (dr, dc) in enumerate(DIRS):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        neighbor[:, d] = np.where(inside, r * w + c, cells)
    return Layout(
        name=name,
        grid=grid,
        height=h,
        width=w,
        tile=tile,
        floor_cells=floor_cells,
        floor_id=floor_id,
        pot_cells=pot_cells,
        pot_id=pot_id,
        counter_cells=counter_cells,
        counter_id=counter_id,
        onion_piles=np.flatnonzero(tile == ONION_PILE),
        dish_piles=np.flatnonzero(tile == DISH_PILE),
        serving=np.flatnonzero(tile == SERVE),
        start=start,
        neighbor=neighbor,
    )


def obs_dim_of(layout: Layout) -> int:
    """Length of an observation row (module docstring)."""
    f = len(layout.floor_cells)
    return 2 * (f + 8) + 4 * len(layout.pot_cells) + 3 * len(layout.counter_cells)


def check_config(horizon: int, cook_time: int) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if cook_time < 1:
        raise ValueError(f"cook_time must be >= 1, got {cook_time}")


def _check_actions(actions: Any, num_envs: int, who: str) -> np.ndarray:
    a = np.asarray(actions)
    if a.shape != (num_envs,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"{who} actions must be an integer array of shape ({num_envs},), got {a.dtype} "
            f"{a.shape}; valid actions: {VALID_ACTIONS}"
        )
    if a.size and (a.min() < 0 or a.max() >= NUM_ACTIONS):
        raise ValueError(
            f"{who} actions must lie in [0, {NUM_ACTIONS}), got {a.min()}..{a.max()}; "
            f"valid actions: {VALID_ACTIONS}"
        )
    return a.astype(np.int64)


STATE_KEYS = (
    "agent_pos",
    "agent_dir",
    "agent_inv",
    "pot_onions",
    "pot_timer",
    "counter_items",
    "delivered",
)


def validate_state(layout: Layout, cook_time: int, state: dict[str, Any]) -> dict[str, Any]:
    """Check a state dict (module format) and return int64 copies plus the int "t"."""
    missing = [k for k in (*STATE_KEYS, "t") if k not in state]
    if missing:
        raise ValueError(
            f"state is missing {missing}; a state has keys {', '.join((*STATE_KEYS, 't'))}"
        )
    out = {k: np.array(state[k], dtype=np.int64) for k in STATE_KEYS}
    m = len(out["agent_pos"]) if out["agent_pos"].ndim else 0
    p, c = len(layout.pot_cells), len(layout.counter_cells)
    shapes = {
        "agent_pos": (m, 2),
        "agent_dir": (m, 2),
        "agent_inv": (m, 2),
        "pot_onions": (m, p),
        "pot_timer": (m, p),
        "counter_items": (m, c),
        "delivered": (m, 2),
    }
    for k, shape in shapes.items():
        if out[k].shape != shape or m < 1:
            raise ValueError(
                f"state[{k!r}] must have shape {shape} with M >= 1, got {out[k].shape}"
            )
    pos = out["agent_pos"]
    if pos.min() < 0 or pos.max() >= layout.num_cells or np.any(layout.tile[pos] != FLOOR):
        raise ValueError("state['agent_pos'] must hold floor cells (row * width + col)")
    if np.any(pos[:, 0] == pos[:, 1]):
        raise ValueError("state['agent_pos']: the two agents must be on different cells")
    ranges = {
        "agent_dir": 4,
        "agent_inv": 4,
        "pot_onions": 4,
        "pot_timer": cook_time + 1,
        "counter_items": 4,
    }
    for k, hi in ranges.items():
        if out[k].size and (out[k].min() < 0 or out[k].max() >= hi):
            raise ValueError(f"state[{k!r}] must lie in [0, {hi})")
    if np.any((out["pot_onions"] < 3) & (out["pot_timer"] != 0)):
        raise ValueError("state: a pot with < 3 onions must have timer 0")
    if out["delivered"].min() < 0:
        raise ValueError("state['delivered'] must be >= 0")
    t = np.unique(np.asarray(state["t"], dtype=np.int64))
    if len(t) != 1 or t[0] < 0:
        raise ValueError(f"state['t'] must be one non-negative step count, got {t}")
    out["t"] = int(t[0])
    return out


def render_text(layout: Layout, cook_time: int, s: dict[str, Any], t: int) -> str:
    """Grid: static chars; counters show o/d/s for onion/dish/soup; pots show the onion count,
    ``c`` while cooking, ``!`` when ready; agents ``R`` (robot) and ``H`` (human)."""
    w = layout.width
    chars = [list(row.replace("1", " ").replace("2", " ")) for row in layout.grid]

    def put(cell: int, ch: str) -> None:
        chars[cell // w][cell % w] = ch

    for c, cell in enumerate(layout.counter_cells):
        it = int(s["counter_items"][c])
        if it:
            put(int(cell), "ods"[it - 1])
    for p, cell in enumerate(layout.pot_cells):
        on, tm = int(s["pot_onions"][p]), int(s["pot_timer"][p])
        put(int(cell), ("c" if tm > 0 else "!") if on == 3 else str(on))
    for i, name in enumerate("RH"):
        put(int(s["agent_pos"][i]), name)
    lines = ["".join(row) for row in chars]
    lines.append(f"t={t}")
    arrows = ">v<^"
    for i, who in enumerate(("robot", "human")):
        cell = int(s["agent_pos"][i])
        lines.append(
            f"{who}: ({cell // w},{cell % w}) facing {arrows[int(s['agent_dir'][i])]} "
            f"holding {ITEM_NAMES[int(s['agent_inv'][i])]}; delivered {int(s['delivered'][i])}"
        )
    return "\n".join(lines) + "\n"


class VecOvercooked:
    """N Overcooked environments stepped in lockstep (rules in the module docstring).

    State arrays (leading dim N): ``agent_pos`` (N, 2) flat cells, ``agent_dir`` (N, 2),
    ``agent_inv`` (N, 2), ``pot_onions`` / ``pot_timer`` (N, P), ``counter_items`` (N, C),
    ``delivered`` (N, 2); plus the step count ``t`` (``get_state()["t"]`` is a 0-d array).
    """

    robot_actions = NUM_ACTIONS
    human_actions = NUM_ACTIONS
    noop_robot_action = STAY

    def __init__(
        self,
        layout: str = "cramped_room",
        num_envs: int = 16,
        horizon: int = 400,
        cook_time: int = 20,
        delivery_reward: float = 20.0,
    ):
        self.layout = get_layout(layout)
        check_config(horizon, cook_time)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.layout_name = layout
        self.num_envs = int(num_envs)
        self.horizon = int(horizon)
        self.cook_time = int(cook_time)
        self.delivery_reward = float(delivery_reward)
        self.obs_dim = obs_dim_of(self.layout)
        self.num_floor = len(self.layout.floor_cells)
        self.reset(np.random.default_rng(0))

    # ----------------------------------------------------------------- state
    def reset(self, rng: np.random.Generator | None = None) -> None:
        """Fixed start: layout start cells, both facing up, empty hands, pots and counters
        empty. ``rng`` is accepted for API symmetry and not used."""
        n, lay = self.num_envs, self.layout
        self.agent_pos = np.tile(lay.start, (n, 1))
        self.agent_dir = np.full((n, 2), UP, dtype=np.int64)
        self.agent_inv = np.zeros((n, 2), dtype=np.int64)
        self.pot_onions = np.zeros((n, len(lay.pot_cells)), dtype=np.int64)
        self.pot_timer = np.zeros((n, len(lay.pot_cells)), dtype=np.int64)
        self.counter_items = np.zeros((n, len(lay.counter_cells)), dtype=np.int64)
        self.delivered = np.zeros((n, 2), dtype=np.int64)
        self.t = 0

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the state arrays (leading dim N) and ``t`` as a 0-d array."""
        state = {k: getattr(self, k).copy() for k in STATE_KEYS}
        state["t"] = np.array(self.t)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Load a state of any batch size M (sets ``num_envs = M``), e.g. one whose arrays were
        ``np.repeat``-ed for simulated rollouts. ``t`` may be a scalar or an array of equal
        values. Invalid states raise ValueError."""
        s = validate_state(self.layout, self.cook_time, state)
        for k in STATE_KEYS:
            setattr(self, k, s[k])
        self.num_envs = len(s["agent_pos"])
        self.t = s["t"]

    @property
    def truncated(self) -> bool:
        return self.t >= self.horizon

    # ----------------------------------------------------------- observation
    def _agent_block(self, i: int) -> np.ndarray:
        n, f = self.num_envs, self.num_floor
        block = np.zeros((n, f + 8), dtype=np.float32)
        rows = np.arange(n)
        block[rows, self.layout.floor_id[self.agent_pos[:, i]]] = 1.0
        block[rows, f + self.agent_dir[:, i]] = 1.0
        block[rows, f + 4 + self.agent_inv[:, i]] = 1.0
        return block

    def observe(self, agent: int = 0) -> np.ndarray:
        """(N, obs_dim) float32, layout in the module docstring; ``agent=1`` puts the human's
        block first (its own view)."""
        if agent not in (0, 1):
            raise ValueError(f"agent must be 0 (robot) or 1 (human), got {agent!r}")
        n = self.num_envs
        on, tm = self.pot_onions, self.pot_timer
        full = on == 3
        pots = np.stack(
            [on / 3.0, full & (tm > 0), tm / self.cook_time, full & (tm == 0)], axis=-1
        ).reshape(n, -1)
        counters = np.zeros((n, self.counter_items.shape[1], 4), dtype=np.float32)
        np.put_along_axis(counters, self.counter_items[..., None], 1.0, axis=-1)
        blocks = [self._agent_block(agent), self._agent_block(1 - agent)]
        return np.concatenate(
            [*blocks, pots.astype(np.float32), counters[..., 1:].reshape(n, -1)], axis=1
        )

    def empowerment_features(self) -> np.ndarray:
        """(N, F + 8) float32: the human's (agent 1's) cell one-hot, facing and held item."""
        return self._agent_block(1)

    # ------------------------------------------------------------------ step
    def step(self, robot_action: Any, human_action: Any) -> np.ndarray:
        """Advance every env one step; returns the (N,) float32 team reward."""
        n, lay = self.num_envs, self.layout
        act = np.stack(
            [
                _check_actions(robot_action, n, "robot"),
                _check_actions(human_action, n, "human"),
            ],
            axis=1,
        )
        # movement, resolved simultaneously (JaxMARL collision / swap rule)
        pos = self.agent_pos
        is_move = act < 4
        cand = lay.neighbor[pos, np.minimum(act, 3)]
        fwd = np.where(is_move & (lay.tile[cand] == FLOOR), cand, pos)
        blocked = (fwd[:, 0] == fwd[:, 1]) | ((fwd[:, 0] == pos[:, 1]) & (fwd[:, 1] == pos[:, 0]))
        self.agent_pos = np.where(blocked[:, None], pos, fwd)
        self.agent_dir = np.where(is_move, act, self.agent_dir)

        reward = np.zeros(n, dtype=np.float32)
        rows = np.arange(n)
        for i in (0, 1):
            self._interact(i, act[:, i] == INTERACT, rows, reward)

        cooking = (self.pot_onions == 3) & (self.pot_timer > 0)
        self.pot_timer = self.pot_timer - cooking
        self.t += 1
        return reward

    def _interact(self, i: int, m: np.ndarray, rows: np.ndarray, reward: np.ndarray) -> None:
        if not m.any():
            return
        lay = self.layout
        face = lay.neighbor[self.agent_pos[:, i], self.agent_dir[:, i]]
        tt = lay.tile[face]
        inv = self.agent_inv[:, i]
        new_inv = inv.copy()
        empty = inv == NONE

        new_inv[m & empty & (tt == ONION_PILE)] = ONION
        new_inv[m & empty & (tt == DISH_PILE)] = DISH

        if len(lay.pot_cells):
            pid = np.maximum(lay.pot_id[face], 0)
            on, tm = self.pot_onions[rows, pid], self.pot_timer[rows, pid]
            at_pot = m & (tt == POT)
            add = at_pot & (inv == ONION) & (on < 3)
            take = at_pot & (inv == DISH) & (on == 3) & (tm == 0)
            self.pot_onions[rows[add], pid[add]] += 1
            start = add & (on == 2)
            self.pot_timer[rows[start], pid[start]] = self.cook_time
            self.pot_onions[rows[take], pid[take]] = 0
            new_inv[add] = NONE
            new_inv[take] = SOUP

        serve = m & (tt == SERVE) & (inv == SOUP)
        new_inv[serve] = NONE
        reward[serve] += self.delivery_reward
        self.delivered[serve, i] += 1

        if len(lay.counter_cells):
            cid = np.maximum(lay.counter_id[face], 0)
            item = self.counter_items[rows, cid]
            at_counter = m & (tt == COUNTER)
            place = at_counter & ~empty & (item == NONE)
            pick = at_counter & empty & (item != NONE)
            self.counter_items[rows[place], cid[place]] = inv[place]
            self.counter_items[rows[pick], cid[pick]] = NONE
            new_inv[place] = NONE
            new_inv[pick] = item[pick]

        self.agent_inv[:, i] = new_inv

    def render(self, env: int = 0) -> str:
        """Text picture of environment ``env`` (same format as `OvercookedEnv.render`)."""
        s = self.get_state()
        one = {k: v[env] for k, v in s.items() if k != "t"}
        return render_text(self.layout, self.cook_time, one, self.t)
