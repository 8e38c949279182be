"""The single-environment Overcooked references: a gymnasium env and a PettingZoo-style API.

`OvercookedEnv` is written independently of `overcooked.VecOvercooked`, straightforwardly in
plain Python, and is the reference the vectorised dynamics are tested against (rules,
observation and state format: the `overcooked` module docstring). The robot (agent 0) is the
learner; the human (agent 1) acts inside with `overcooked_human.ScriptedHuman`.
`OvercookedParallelEnv` is a PettingZoo-style parallel API over it (no pettingzoo dependency).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .overcooked import (
    DIRS,
    DISH,
    INTERACT,
    NONE,
    NUM_ACTIONS,
    ONION,
    SOUP,
    UP,
    VALID_ACTIONS,
    check_config,
    check_layout_name,
    get_layout,
    obs_dim_of,
    render_text,
    validate_state,
)
from .overcooked_human import ScriptedHuman


class OvercookedEnv(gym.Env):
    """One Overcooked environment, written straightforwardly in plain Python; the robot
    (agent 0) is the learner and the human (agent 1) acts inside with `ScriptedHuman`.

    `step(action)` draws the human's action (``info["human_action"]``) from the env's
    ``np_random``; `joint_step(robot, human)` takes both. ``terminated`` is always False,
    ``truncated`` is True from step ``horizon`` on. ``get_state`` / ``set_state`` use the dict
    format of `VecOvercooked` with N = 1.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        layout: str = "cramped_room",
        horizon: int = 400,
        cook_time: int = 20,
        delivery_reward: float = 20.0,
        human_epsilon: float = 0.1,
        render_mode: str | None = None,
        human_temperature: float = 0.0,
    ):
        check_layout_name(layout)
        check_config(horizon, cook_time)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: 'ansi' or None")
        self.layout = get_layout(layout)
        self.layout_name = layout
        self.horizon, self.cook_time = int(horizon), int(cook_time)
        self.delivery_reward = float(delivery_reward)
        self.render_mode = render_mode
        self.human = ScriptedHuman(layout, human_epsilon, human_temperature)
        self.obs_dim = obs_dim_of(self.layout)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.obs_dim,), dtype=np.float32)
        self._grid = [list(row) for row in self.layout.grid]
        self._h, self._w = self.layout.height, self.layout.width
        # row-major orderings used by the observation / state format
        self._floor = [
            (r, c) for r in range(self._h) for c in range(self._w) if self._is_floor(r, c)
        ]
        self._pots = self._cells_of("P")
        self._counters = self._cells_of("X")
        self._reset_state()

    def _cells_of(self, ch: str) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self._h) for c in range(self._w) if self._grid[r][c] == ch]

    def _is_floor(self, r: int, c: int) -> bool:
        return 0 <= r < self._h and 0 <= c < self._w and self._grid[r][c] in " 12"

    def _reset_state(self) -> None:
        start = {}
        for r in range(self._h):
            for c in range(self._w):
                if self._grid[r][c] in "12":
                    start[self._grid[r][c]] = (r, c)
        self.pos = [start["1"], start["2"]]
        self.dir = [UP, UP]
        self.inv = [NONE, NONE]
        self.pot = {cell: [0, 0] for cell in self._pots}  # [onions, timer]
        self.counter = {cell: NONE for cell in self._counters}
        self.delivered = [0, 0]
        self.t = 0

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_state()
        return self._observe(0), self._info(None)

    def step(self, action):
        human_action = int(self.human.act_state(self.get_state(), self.np_random)[0])
        return self.joint_step(action, human_action)

    def joint_step(self, robot_action, human_action):
        """One step with both actions given; the usual gymnasium 5-tuple (robot's view)."""
        acts = [
            _check_scalar_action(robot_action, "robot"),
            _check_scalar_action(human_action, "human"),
        ]
        # movement
        fwd = []
        for i in (0, 1):
            a, (r, c) = acts[i], self.pos[i]
            if a < 4:
                self.dir[i] = a
                dr, dc = DIRS[a]
                if self._is_floor(r + dr, c + dc):
                    fwd.append((r + dr, c + dc))
                    continue
            fwd.append((r, c))
        if fwd[0] == fwd[1]:
            pass  # collision: nobody moves
        elif fwd[0] == self.pos[1] and fwd[1] == self.pos[0]:
            pass  # swap: nobody moves
        else:
            self.pos = fwd
        # interactions, agent 0 first
        reward = 0.0
        for i in (0, 1):
            if acts[i] != INTERACT:
                continue
            dr, dc = DIRS[self.dir[i]]
            f = (self.pos[i][0] + dr, self.pos[i][1] + dc)
            ch = self._grid[f[0]][f[1]]
            held = self.inv[i]
            if ch == "O" and held == NONE:
                self.inv[i] = ONION
            elif ch == "D" and held == NONE:
                self.inv[i] = DISH
            elif ch == "P":
                pot = self.pot[f]
                if held == ONION and pot[0] < 3:
                    pot[0] += 1
                    self.inv[i] = NONE
                    if pot[0] == 3:
                        pot[1] = self.cook_time
                elif held == DISH and pot[0] == 3 and pot[1] == 0:
                    pot[0] = 0
                    self.inv[i] = SOUP
            elif ch == "S" and held == SOUP:
                self.inv[i] = NONE
                reward += self.delivery_reward
                self.delivered[i] += 1
            elif ch == "X":
                if held != NONE and self.counter[f] == NONE:
                    self.counter[f] = held
                    self.inv[i] = NONE
                elif held == NONE and self.counter[f] != NONE:
                    self.inv[i] = self.counter[f]
                    self.counter[f] = NONE
        # cooking
        for pot in self.pot.values():
            if pot[0] == 3 and pot[1] > 0:
                pot[1] -= 1
        self.t += 1
        truncated = self.t >= self.horizon
        return self._observe(0), float(reward), False, truncated, self._info(acts[1])

    def _info(self, human_action: int | None) -> dict[str, Any]:
        return {
            "delivered": np.array(self.delivered, dtype=np.int64),
            "human_action": -1 if human_action is None else int(human_action),
        }

    def _observe(self, agent: int) -> np.ndarray:
        obs = np.zeros(self.obs_dim, dtype=np.float32)
        nf = len(self._floor)
        k = 0
        for i in (agent, 1 - agent):
            obs[k + self._floor.index(self.pos[i])] = 1.0
            obs[k + nf + self.dir[i]] = 1.0
            obs[k + nf + 4 + self.inv[i]] = 1.0
            k += nf + 8
        for cell in self._pots:
            onions, timer = self.pot[cell]
            obs[k] = onions / 3.0
            obs[k + 1] = float(onions == 3 and timer > 0)
            obs[k + 2] = timer / self.cook_time
            obs[k + 3] = float(onions == 3 and timer == 0)
            k += 4
        for cell in self._counters:
            item = self.counter[cell]
            if item != NONE:
                obs[k + item - 1] = 1.0
            k += 3
        return obs

    def observe(self, agent: int = 0) -> np.ndarray:
        if agent not in (0, 1):
            raise ValueError(f"agent must be 0 (robot) or 1 (human), got {agent!r}")
        return self._observe(agent)

    # --------------------------------------------------------------- state
    def _cell(self, rc: tuple[int, int]) -> int:
        return rc[0] * self._w + rc[1]

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "agent_pos": np.array([[self._cell(p) for p in self.pos]], dtype=np.int64),
            "agent_dir": np.array([self.dir], dtype=np.int64),
            "agent_inv": np.array([self.inv], dtype=np.int64),
            "pot_onions": np.array([[self.pot[c][0] for c in self._pots]], dtype=np.int64).reshape(
                1, -1
            ),
            "pot_timer": np.array([[self.pot[c][1] for c in self._pots]], dtype=np.int64).reshape(
                1, -1
            ),
            "counter_items": np.array(
                [[self.counter[c] for c in self._counters]], dtype=np.int64
            ).reshape(1, -1),
            "delivered": np.array([self.delivered], dtype=np.int64),
            "t": np.array(self.t),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        s = validate_state(self.layout, self.cook_time, state)
        if len(s["agent_pos"]) != 1:
            raise ValueError(f"OvercookedEnv.set_state needs N = 1, got {len(s['agent_pos'])}")
        w = self._w
        self.pos = [(int(x) // w, int(x) % w) for x in s["agent_pos"][0]]
        self.dir = [int(x) for x in s["agent_dir"][0]]
        self.inv = [int(x) for x in s["agent_inv"][0]]
        self.pot = {
            cell: [int(s["pot_onions"][0, p]), int(s["pot_timer"][0, p])]
            for p, cell in enumerate(self._pots)
        }
        self.counter = {
            cell: int(s["counter_items"][0, c]) for c, cell in enumerate(self._counters)
        }
        self.delivered = [int(x) for x in s["delivered"][0]]
        self.t = s["t"]

    def render(self):
        if self.render_mode != "ansi":
            return None
        s = {k: v[0] for k, v in self.get_state().items() if k != "t"}
        return render_text(self.layout, self.cook_time, s, self.t)


def _check_scalar_action(a: Any, who: str) -> int:
    arr = np.asarray(a)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{who} action must be one integer; valid actions: {VALID_ACTIONS}")
    v = int(arr)
    if not 0 <= v < NUM_ACTIONS:
        raise ValueError(f"{who} action {v} out of range; valid actions: {VALID_ACTIONS}")
    return v


class OvercookedParallelEnv:
    """PettingZoo-style parallel API (no pettingzoo dependency) over `OvercookedEnv`: agents
    ``"robot"`` (agent 0) and ``"human"`` (agent 1) act jointly; both get the team reward and
    each observes the state with its own block first (`VecOvercooked.observe`)."""

    metadata = {
        "render_modes": ["ansi"],
        "name": "alignlab_overcooked_v1",
        "is_parallelizable": True,
    }
    possible_agents = ["robot", "human"]

    def __init__(
        self,
        layout: str = "cramped_room",
        horizon: int = 400,
        cook_time: int = 20,
        delivery_reward: float = 20.0,
        render_mode: str | None = None,
    ):
        self.env = OvercookedEnv(
            layout, horizon, cook_time, delivery_reward, human_epsilon=0.0, render_mode=render_mode
        )
        self.render_mode = render_mode
        self.agents: list[str] = []
        self._obs_space = self.env.observation_space
        self._act_space = gym.spaces.Discrete(NUM_ACTIONS)

    def _check_agent(self, agent: str) -> int:
        if agent not in self.possible_agents:
            raise ValueError(f"unknown agent {agent!r}; valid agents: {self.possible_agents}")
        return self.possible_agents.index(agent)

    def observation_space(self, agent: str) -> gym.spaces.Box:
        self._check_agent(agent)
        return self._obs_space

    def action_space(self, agent: str) -> gym.spaces.Discrete:
        self._check_agent(agent)
        return self._act_space

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: self.env.observe(i) for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ValueError("episode is over (or not started); call reset()")
        if set(actions) != set(self.agents):
            raise ValueError(
                f"actions must have exactly the keys {self.agents}, got {list(actions)}"
            )
        _, reward, _, truncated, info = self.env.joint_step(actions["robot"], actions["human"])
        agents = list(self.agents)
        obs = self._obs()
        rewards = {a: reward for a in agents}
        terminations = {a: False for a in agents}
        truncations = {a: truncated for a in agents}
        infos = {a: {"delivered": info["delivered"].copy()} for a in agents}
        if truncated:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        return self.env.observe(0)

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()
