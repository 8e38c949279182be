"""The scripted noisy human of the Overcooked experiments, and the env it acts in.

- `ScriptedHuman`: a vectorised greedy subtask policy with epsilon noise, standing in for the
  paper's behaviour-cloned human (rules of the env: `overcooked`).
- `AssistedOvercooked`: `VecOvercooked` whose human (agent 1) is a `ScriptedHuman`, the
  training loop's environment interface (`human_act`).

How the human differs from the paper's
--------------------------------------
The paper's human (``networks/human.py``) is a behaviour-cloned human_aware_rl network
(conv + MLP over JaxMARL's 26-channel grid observation) loaded from ``humans/{layout}-{seed}``
checkpoints; neither the checkpoints nor the human data are public. Ours is a scripted greedy
subtask policy with epsilon noise; there is no learning and no human data:

- holding soup -> nearest serving tile, interact;
- holding a dish -> the pot with 3 onions that can be emptied soonest (max(distance, timer),
  then distance), face it, interact when ready, wait otherwise; if no pot holds 3 onions the
  dish goes on the nearest free counter (so a human left with a useless dish cannot stall);
- holding an onion -> nearest pot with < 3 onions, interact; if none, the onion goes on the
  nearest free counter (or the human waits if no free counter is reachable);
- empty hands -> a soup lying on a counter first (our addition: only the robot can put one
  there); else, if some pot holds 3 onions and the robot holds no dish, a dish (dish pile or a
  counter holding one); else, if some pot has < 3 onions, an onion (pile or counter); else wait.
- Navigation: precomputed BFS tables on the static floor grid (shortest moves to a floor cell
  next to the target tile, then a move toward the tile, which only turns, then interact). The
  tables also exist with each floor cell removed, and the human routes around the robot's
  current cell when another path exists (else it walks the blocked shortest path and waits).
  Ties go to the lowest action / cell index. All decisions are table lookups over the batch.
- With probability epsilon (default 0.1) a uniformly random action instead.
- `temperature` (default 0: the deterministic choice above, exactly, drawing no random
  numbers): the stand-in for the paper's *sampled* behaviour-cloned human (the authors'
  train_overcooked.py, `step_human`, samples the BC network's categorical policy). Each step,
  the subtask keeps its priority above (what to do with what is held), and the tile it goes to
  is drawn from softmax(-cost / temperature) over that subtask's reachable tiles, the cost
  being the one the greedy choice minimises (the path's moves; for a dish, max(moves, pot
  timer)); then the action toward the drawn tile, then the epsilon noise. Temperature is in
  moves: at 1, a tile one move further is e^-1 as likely. The draw is repeated every step (the
  human has no memory beyond the state, as a BC policy), so between two equally far tiles it
  may change its mind on the way. Where a subtask has one reachable tile (the one pot of
  Cramped Room, its one serving tile) the human stays deterministic; the choices are the onion
  source, the dish source, the pot (two in Coordination Ring and Asymmetric Advantages), the
  serving tile and the counter a useless item goes on. The observations stay aligned (the
  state before the step with the actions taken in it), unlike the original's, whose stored
  observation is one step later than the actions stored with it.

Consequences: the scripted human is competent, deterministic given its state (up to the
epsilon noise, and at temperature 0), never adapts to the robot and has none of a BC policy's systematic errors
(human_aware_rl's data were recorded under older overcooked-ai dynamics, and BC humans are
known to misbehave when the dynamics differ: HumanCompatibleAI/human_aware_rl, GitHub #22). Alone it delivers
about 7-10 soups per 400 steps (the tests check >= 1 on every layout), so the robot's room to
help is smaller than with the paper's human, and absolute returns, the gap to a random robot
and the size of the AvE / ESR effects are not comparable with the paper's table. Because it
routes around the robot's current cell, a robot can block it less easily than a BC policy
that has learnt nothing about detours. Its action is a deterministic function of the state
the robot observes, so given the state the human's action carries information (what ESR's
empowerment term measures) only through the epsilon noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .overcooked import (
    DISH,
    DISH_PILE,
    FLOOR,
    INTERACT,
    NONE,
    NUM_ACTIONS,
    ONION,
    ONION_PILE,
    POT,
    SERVE,
    SOUP,
    STATE_KEYS,
    STAY,
    Layout,
    VecOvercooked,
    get_layout,
)

_INF = 1 << 20  # unreachable
_DETOUR = 1 << 10  # added to a path that has to wait for the robot to move


def _bfs_tables(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Navigation tables of the scripted human, indexed [blocked, floor cell, target tile]:

    - dist: moves to a floor cell next to the target tile, avoiding the blocked floor cell
      (index F = nothing blocked); when only the blocked cell's path exists, the unblocked
      distance + _DETOUR; _INF if unreachable.
    - move: the first move action along such a path (-1 where dist is 0 or _INF).
    - face (F, H*W): the direction from a floor cell to an adjacent target tile, or -1.
    """
    fl, nb, tile = layout.floor_cells, layout.neighbor, layout.tile
    nf, nc = len(fl), layout.num_cells
    fid = layout.floor_id
    face = np.full((nf, nc), -1, dtype=np.int64)
    for s in range(nf):
        for d in range(3, -1, -1):  # lowest direction wins
            face[s, nb[fl[s], d]] = d
        face[s, fl[s]] = -1
    face[:, tile == FLOOR] = -1

    raw_dist = np.full((nf + 1, nf, nc), _INF, dtype=np.int64)
    raw_move = np.full((nf + 1, nf, nc), -1, dtype=np.int64)
    for j in np.flatnonzero(tile != FLOOR):
        sources = np.flatnonzero(face[:, j] >= 0)
        for b in range(nf + 1):
            dist = np.full(nf, _INF, dtype=np.int64)
            frontier = [s for s in sources if s != b]
            for s in frontier:
                dist[s] = 0
            while frontier:
                nxt = []
                for s in frontier:
                    for d in range(4):
                        c = nb[fl[s], d]
                        u = fid[c]
                        if u >= 0 and u != b and dist[u] == _INF:
                            dist[u] = dist[s] + 1
                            nxt.append(u)
                frontier = nxt
            raw_dist[b, :, j] = dist
            for s in range(nf):
                if 0 < dist[s] < _INF:
                    for d in range(4):
                        u = fid[nb[fl[s], d]]
                        if u >= 0 and u != b and dist[u] == dist[s] - 1:
                            raw_move[b, s, j] = d
                            break
    free = raw_dist[nf][None]
    detour = (raw_dist >= _INF) & (free < _INF)
    dist = np.where(detour, free + _DETOUR, raw_dist)
    move = np.where(detour, raw_move[nf][None], raw_move)
    return dist, move, face


class ScriptedHuman:
    """Vectorised greedy subtask policy for agent 1 with epsilon noise, its target tiles drawn
    from softmax(-cost / temperature) when `temperature` > 0 (module docstring)."""

    def __init__(
        self, layout: str = "cramped_room", epsilon: float = 0.1, temperature: float = 0.0
    ):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        if not (0.0 <= temperature < np.inf):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        self.layout = get_layout(layout)
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self.dist, self.move, self.face = _bfs_tables(self.layout)
        lay = self.layout
        self._is = {k: lay.tile == k for k in (SERVE, ONION_PILE, DISH_PILE)}

    def _check_env(self, env: VecOvercooked) -> None:
        if env.layout.name != self.layout.name:
            raise ValueError(
                f"ScriptedHuman for layout {self.layout.name!r} used on {env.layout.name!r}"
            )

    def greedy(self, env: VecOvercooked) -> np.ndarray:
        """(N,) the greedy action of the human in every env."""
        self._check_env(env)
        return self.greedy_state({k: getattr(env, k) for k in STATE_KEYS})

    def act(self, env: VecOvercooked, rng: np.random.Generator) -> np.ndarray:
        """(N,) the policy's actions (`policy_state`: greedy at temperature 0), each replaced by
        a uniform one with probability epsilon."""
        self._check_env(env)
        return self.act_state({k: getattr(env, k) for k in STATE_KEYS}, rng)

    def act_state(self, state: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
        """`act` on a state dict (the format of `VecOvercooked.get_state`)."""
        return self._noisy(self.policy_state(state, rng), rng)

    def policy_state(self, state: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
        """(N,) actions before the epsilon noise: `greedy_state` at temperature 0 (no random
        number drawn); else each env's target tile drawn from softmax(-cost / temperature) over
        its subtask's reachable tiles, one uniform per env (module docstring)."""
        if self.temperature == 0.0:
            return self.greedy_state(state)
        return self._decide(state, rng.random(len(state["agent_pos"])))

    def _noisy(self, greedy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(greedy)
        explore = rng.random(n) < self.epsilon
        return np.where(explore, rng.integers(0, NUM_ACTIONS, n), greedy)

    def greedy_state(self, state: dict[str, Any]) -> np.ndarray:
        """(N,) greedy actions from a state dict (arrays with leading dim N; "t" unused)."""
        return self._decide(state, None)

    def _decide(self, state: dict[str, Any], u: np.ndarray | None) -> np.ndarray:
        """(N,) actions from a state dict: each subtask's target tile the cheapest (`u` None)
        or drawn by inverse CDF from softmax(-cost / temperature) with the uniforms `u` (N,)."""
        lay = self.layout
        pos = np.asarray(state["agent_pos"], dtype=np.int64)
        hdir = np.asarray(state["agent_dir"], dtype=np.int64)[:, 1]
        inv_all = np.asarray(state["agent_inv"], dtype=np.int64)
        onions = np.asarray(state["pot_onions"], dtype=np.int64)
        timer = np.asarray(state["pot_timer"], dtype=np.int64)
        items = np.asarray(state["counter_items"], dtype=np.int64)
        n = len(pos)
        rows = np.arange(n)
        inv, robot_inv = inv_all[:, 1], inv_all[:, 0]
        s = lay.floor_id[pos[:, 1]]
        b = lay.floor_id[pos[:, 0]]
        dist = self.dist[b, s]  # (N, cells)

        def cell_mask(cells: np.ndarray, sel: np.ndarray) -> np.ndarray:
            mask = np.zeros((n, lay.num_cells), dtype=bool)
            mask[:, cells] = sel
            return mask

        def static(kind: int) -> np.ndarray:
            return np.broadcast_to(self._is[kind], (n, lay.num_cells))

        full = onions == 3
        pot_full = cell_mask(lay.pot_cells, full)
        pot_fill = cell_mask(lay.pot_cells, ~full)
        pot_timer = np.zeros((n, lay.num_cells), dtype=np.int64)
        pot_timer[:, lay.pot_cells] = timer
        free_counter = cell_mask(lay.counter_cells, items == NONE)
        dish_src = static(DISH_PILE) | cell_mask(lay.counter_cells, items == DISH)
        onion_src = static(ONION_PILE) | cell_mask(lay.counter_cells, items == ONION)
        soup_src = cell_mask(lay.counter_cells, items == SOUP)
        any_full, any_fill = full.any(axis=1), (~full).any(axis=1)

        def best(mask: np.ndarray, score: np.ndarray | None = None):
            sc = np.where(mask & (dist < _INF), dist if score is None else score, np.inf)
            j = sc.argmin(axis=1)
            ok = np.isfinite(sc[rows, j])
            if u is not None:
                j = np.where(ok, softmax_choice(sc, u, self.temperature), j)
            return j, ok

        # the candidate stages, first reachable one wins, per held item
        # a dish goes to the pot it can empty soonest: max(moves, timer), then fewer moves
        dish_score = np.maximum(dist, pot_timer) + dist * 1e-4
        stages = [
            (inv == SOUP, *best(static(SERVE))),
            (inv == DISH, *best(pot_full, dish_score)),
            (inv == DISH, *best(free_counter)),
            (inv == ONION, *best(pot_fill)),
            (inv == ONION, *best(free_counter)),
            (inv == NONE, *best(soup_src)),
            ((inv == NONE) & any_full & (robot_inv != DISH), *best(dish_src)),
            ((inv == NONE) & any_fill, *best(onion_src)),
        ]
        target = np.zeros(n, dtype=np.int64)
        chosen = np.zeros(n, dtype=bool)
        for cond, j, ok in stages:
            take = cond & ok & ~chosen
            target[take] = j[take]
            chosen |= take

        d = dist[rows, target]
        mv = self.move[b, s, target]
        fd = self.face[s, target]
        # a dish waits at a pot that is still cooking
        wait = (inv == DISH) & (lay.tile[target] == POT) & (pot_timer[rows, target] > 0)
        action = np.where(d > 0, mv, np.where(hdir != fd, fd, np.where(wait, STAY, INTERACT)))
        return np.where(chosen & (d < _INF), action, STAY).astype(np.int64)


def softmax_choice(cost: np.ndarray, u: np.ndarray, temperature: float) -> np.ndarray:
    """(N,) per row of `cost` (N, K) an index drawn with probability proportional to
    exp(-cost / temperature), by inverse CDF with the uniforms `u` (N,) in [0, 1); infinite
    costs have probability 0 (a row with no finite cost gives 0)."""
    finite = np.isfinite(cost)
    low = np.where(finite, cost, np.inf).min(axis=1, keepdims=True)
    shifted = np.where(finite, cost - np.where(np.isfinite(low), low, 0.0), 0.0)
    weight = np.where(finite, np.exp(-shifted / temperature), 0.0)
    cdf = np.cumsum(weight, axis=1)
    k = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1)
    return np.where(finite.any(axis=1), np.minimum(k, cost.shape[1] - 1), 0)


class AssistedOvercooked(VecOvercooked):
    """`VecOvercooked` whose human (agent 1) is the scripted noisy human: the training loop's
    environment interface (`human_act`)."""

    def __init__(
        self,
        layout: str,
        num_envs: int,
        horizon: int,
        human_epsilon: float,
        human_temperature: float = 0.0,
    ):
        super().__init__(layout, num_envs, horizon)
        self.human_policy = ScriptedHuman(layout, human_epsilon, human_temperature)

    def human_act(self, rng: np.random.Generator) -> np.ndarray:
        return self.human_policy.act(self, rng)
