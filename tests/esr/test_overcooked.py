"""Tests of the numpy Overcooked (JaxMARL v1 rules): hand-made rule cases on both the vectorised
env and the plain-Python reference, step-for-step agreement between the two, the scripted
human, the gymnasium / parallel APIs and input validation."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from alignlab.esr.overcooked import (
    DISH,
    DOWN,
    INTERACT,
    LAYOUTS,
    LEFT,
    NONE,
    NUM_ACTIONS,
    ONION,
    RIGHT,
    SOUP,
    STAY,
    UP,
    VecOvercooked,
    get_layout,
)
from alignlab.esr.overcooked_env import OvercookedEnv, OvercookedParallelEnv
from alignlab.esr.overcooked_human import _INF, ScriptedHuman, softmax_choice

# --------------------------------------------------------------------------- helpers


class VecDriver:
    """One env of VecOvercooked behind a scalar interface."""

    def __init__(self, layout: str, **kw):
        self.env = VecOvercooked(layout, num_envs=1, **kw)

    def set(self, state):
        self.env.set_state(state)

    def step(self, ra: int, ha: int) -> float:
        return float(self.env.step(np.array([ra]), np.array([ha]))[0])

    def state(self):
        return self.env.get_state()

    def obs(self):
        return self.env.observe()[0]


class SingleDriver(VecDriver):
    def __init__(self, layout: str, **kw):
        self.env = OvercookedEnv(layout, **kw)
        self.env.reset(seed=0)

    def step(self, ra: int, ha: int) -> float:
        return self.env.joint_step(ra, ha)[1]

    def obs(self):
        return self.env.observe()


@pytest.fixture(params=["vec", "single"])
def make(request):
    cls = VecDriver if request.param == "vec" else SingleDriver

    def factory(layout: str = "cramped_room", **kw):
        return cls(layout, **kw)

    return factory


def cell(layout: str, r: int, c: int) -> int:
    return r * get_layout(layout).width + c


def state_of(layout: str, cook_time: int = 20, **over):
    """A N=1 state: the reset state with entries overridden. ``pos`` as ((r, c), (r, c))."""
    env = VecOvercooked(layout, num_envs=1, cook_time=cook_time)
    s = env.get_state()
    if "pos" in over:
        s["agent_pos"] = np.array([[cell(layout, *rc) for rc in over.pop("pos")]])
    for key, name in (("dir", "agent_dir"), ("inv", "agent_inv")):
        if key in over:
            s[name] = np.array([over.pop(key)])
    for key, name in (("onions", "pot_onions"), ("timer", "pot_timer")):
        if key in over:
            s[name] = np.array([over.pop(key)])
    if "counters" in over:
        items = np.zeros_like(s["counter_items"])
        lay = get_layout(layout)
        for rc, it in over.pop("counters").items():
            items[0, lay.counter_id[cell(layout, *rc)]] = it
        s["counter_items"] = items
    assert not over, over
    return s


# ------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "name, pots, onion, dish, serve, floor",
    [
        ("cramped_room", 1, 2, 1, 1, 6),
        ("coord_ring", 2, 2, 1, 1, 8),
        ("asymm_advantages", 2, 2, 2, 2, 14),
    ],
)
def test_layout_counts(name, pots, onion, dish, serve, floor):
    lay = get_layout(name)
    assert len(lay.pot_cells) == pots
    assert len(lay.onion_piles) == onion
    assert len(lay.dish_piles) == dish
    assert len(lay.serving) == serve
    assert len(lay.floor_cells) == floor
    assert lay.tile[lay.start].tolist() == [0, 0] and lay.start[0] != lay.start[1]


def test_layout_positions_match_jaxmarl():
    # JaxMARL layouts.py flat indices (row * width + col)
    cr = get_layout("cramped_room")
    assert cr.start.tolist() == [6, 8] and cr.pot_cells.tolist() == [2]
    assert cr.onion_piles.tolist() == [5, 9] and cr.dish_piles.tolist() == [16]
    assert cr.serving.tolist() == [18]
    ring = get_layout("coord_ring")
    assert ring.start.tolist() == [7, 11] and ring.pot_cells.tolist() == [3, 9]
    assert ring.onion_piles.tolist() == [15, 21] and ring.dish_piles.tolist() == [10]
    assert ring.serving.tolist() == [22]
    walls = [0, 1, 2, 3, 4, 5, 9, 10, 12, 14, 15, 19, 20, 21, 22, 23, 24]
    assert np.flatnonzero(ring.tile != 0).tolist() == walls
    aa = get_layout("asymm_advantages")
    assert aa.start.tolist() == [29, 32] and aa.pot_cells.tolist() == [22, 31]
    assert aa.serving.tolist() == [12, 17] and aa.dish_piles.tolist() == [39, 41]
    assert aa.onion_piles.tolist() == [9, 14]


def test_unknown_layout_raises_naming_valid_ones():
    for ctor in (get_layout, VecOvercooked, OvercookedEnv, ScriptedHuman, OvercookedParallelEnv):
        with pytest.raises(ValueError, match="cramped_room, coord_ring, asymm_advantages"):
            ctor("kitchen")


# ---------------------------------------------------------------------- rule cases


def test_reset_state(make):
    d = make("cramped_room")
    s = d.state()
    assert s["agent_pos"].tolist() == [[6, 8]]
    assert s["agent_dir"].tolist() == [[UP, UP]]
    assert s["agent_inv"].tolist() == [[NONE, NONE]] and int(s["t"]) == 0


@pytest.mark.parametrize("cook_time", [20, 4])
def test_cooking_cycle(make, cook_time):
    """3 onions -> auto start -> ready exactly after cook_time steps -> dish -> soup."""
    lay = "cramped_room"
    d = make(lay, cook_time=cook_time)
    # human below the pot (0, 2), facing it, holding an onion; pot has 1 onion
    d.set(state_of(lay, cook_time, pos=((2, 1), (1, 2)), dir=(UP, UP), inv=(0, ONION), onions=[1]))
    assert d.step(STAY, INTERACT) == 0.0
    s = d.state()
    assert s["pot_onions"].tolist() == [[2]] and s["pot_timer"].tolist() == [[0]]
    assert s["agent_inv"][0, 1] == NONE
    d.set({**d.state(), "agent_inv": np.array([[0, ONION]])})
    d.step(STAY, INTERACT)  # 3rd onion: cooking starts; this step already counts
    s = d.state()
    assert s["pot_onions"].tolist() == [[3]] and s["pot_timer"].tolist() == [[cook_time - 1]]
    obs = d.obs()
    pot = obs[2 * (6 + 8) : 2 * (6 + 8) + 4]
    np.testing.assert_allclose(
        pot, [1.0, 1.0 if cook_time > 1 else 0.0, (cook_time - 1) / cook_time, 0.0]
    )
    # a 4th onion is refused while cooking; a dish does nothing before the pot is ready
    d.set({**d.state(), "agent_inv": np.array([[0, ONION]])})
    d.step(STAY, INTERACT)  # step 2 of cooking
    assert d.state()["agent_inv"][0, 1] == ONION and d.state()["pot_onions"][0, 0] == 3
    d.set({**d.state(), "agent_inv": np.array([[0, DISH]])})
    for _ in range(3, cook_time + 1):
        assert d.state()["pot_timer"][0, 0] > 0
        d.step(STAY, INTERACT)  # step k of cooking: not ready yet at interaction time
        assert d.state()["agent_inv"][0, 1] == DISH
    # after exactly cook_time steps (counting the adding one) the pot is ready
    s = d.state()
    assert s["pot_timer"].tolist() == [[0]] and s["pot_onions"].tolist() == [[3]]
    assert d.obs()[2 * 14 + 3] == 1.0
    assert d.step(STAY, INTERACT) == 0.0  # dish -> soup, pot empty
    s = d.state()
    assert s["agent_inv"][0, 1] == SOUP
    assert s["pot_onions"].tolist() == [[0]] and s["pot_timer"].tolist() == [[0]]


def test_ready_time_counts_adding_step(make):
    lay = "cramped_room"
    d = make(lay, cook_time=5)
    d.set(state_of(lay, 5, pos=((2, 1), (1, 2)), inv=(0, ONION), onions=[2]))
    timers = []
    for _ in range(6):
        d.step(STAY, STAY if timers else INTERACT)
        timers.append(int(d.state()["pot_timer"][0, 0]))
    assert timers == [4, 3, 2, 1, 0, 0]


def test_serving_pays_once_and_empties_hand(make):
    lay = "cramped_room"
    d = make(lay)
    d.set(state_of(lay, pos=((1, 1), (2, 3)), dir=(UP, DOWN), inv=(0, SOUP)))
    assert d.step(STAY, INTERACT) == 20.0
    s = d.state()
    assert s["agent_inv"][0, 1] == NONE and s["delivered"].tolist() == [[0, 1]]
    assert d.step(STAY, INTERACT) == 0.0
    assert d.state()["delivered"].tolist() == [[0, 1]]
    # a robot delivery counts for agent 0; the reward is the team's
    d.set(state_of(lay, pos=((2, 3), (1, 1)), dir=(DOWN, UP), inv=(SOUP, 0)))
    assert d.step(INTERACT, STAY) == 20.0
    assert d.state()["delivered"].tolist() == [[1, 0]]


def test_delivery_reward_parameter(make):
    lay = "cramped_room"
    d = make(lay, delivery_reward=3.5)
    d.set(state_of(lay, pos=((1, 1), (2, 3)), dir=(UP, DOWN), inv=(0, SOUP)))
    assert d.step(STAY, INTERACT) == 3.5


def test_pile_pickups(make):
    lay = "cramped_room"
    d = make(lay)
    # human faces the onion pile (1, 4); robot faces the dish pile (3, 1)
    d.set(state_of(lay, pos=((2, 1), (1, 3)), dir=(DOWN, RIGHT)))
    d.step(INTERACT, INTERACT)
    assert d.state()["agent_inv"].tolist() == [[DISH, ONION]]
    # full hands: piles do nothing
    d.step(INTERACT, INTERACT)
    assert d.state()["agent_inv"].tolist() == [[DISH, ONION]]


def test_counter_place_and_pick(make):
    lay = "cramped_room"
    d = make(lay)
    cid = get_layout(lay).counter_id[cell(lay, 2, 4)]
    d.set(state_of(lay, pos=((1, 1), (2, 3)), dir=(UP, RIGHT), inv=(0, ONION)))
    d.step(STAY, INTERACT)
    s = d.state()
    assert s["agent_inv"][0, 1] == NONE and s["counter_items"][0, cid] == ONION
    obs = d.obs()
    base = 2 * 14 + 4 + 3 * cid
    assert obs[base : base + 3].tolist() == [1.0, 0.0, 0.0]
    # occupied counter + item in hand: no-op
    d.set({**d.state(), "agent_inv": np.array([[0, DISH]])})
    d.step(STAY, INTERACT)
    assert d.state()["agent_inv"][0, 1] == DISH and d.state()["counter_items"][0, cid] == ONION
    # empty hands pick it up
    d.set({**d.state(), "agent_inv": np.array([[0, NONE]])})
    d.step(STAY, INTERACT)
    s = d.state()
    assert s["agent_inv"][0, 1] == ONION and s["counter_items"][0, cid] == NONE
    # empty counter + empty hands: no-op
    d.set({**d.state(), "agent_inv": np.array([[0, NONE]])})
    d.step(STAY, INTERACT)
    assert d.state()["agent_inv"][0, 1] == NONE and d.state()["counter_items"].sum() == 0


def test_soup_can_be_placed_on_a_counter(make):
    lay = "cramped_room"
    d = make(lay)
    d.set(state_of(lay, pos=((1, 1), (2, 3)), dir=(UP, RIGHT), inv=(0, SOUP)))
    d.step(STAY, INTERACT)
    assert d.state()["counter_items"].max() == SOUP


@pytest.mark.parametrize(
    "human, held, onions, timer",
    [
        (((1, 2), RIGHT), NONE, 0, 0),  # facing floor
        (((1, 2), UP), NONE, 0, 0),  # pot, empty hands
        (((1, 2), UP), DISH, 2, 0),  # pot not ready, dish
        (((1, 2), UP), SOUP, 0, 0),  # pot, soup in hand
        (((2, 3), DOWN), ONION, 0, 0),  # serving tile without soup
        (((2, 3), DOWN), DISH, 0, 0),  # serving tile with a dish
        (((1, 3), RIGHT), SOUP, 0, 0),  # onion pile with full hands
    ],
)
def test_interact_on_wrong_tile_is_noop(make, human, held, onions, timer):
    lay = "cramped_room"
    d = make(lay)
    d.set(
        state_of(
            lay,
            pos=((2, 1), human[0]),
            dir=(UP, human[1]),
            inv=(0, held),
            onions=[onions],
            timer=[timer],
        )
    )
    before = d.state()
    assert d.step(STAY, INTERACT) == 0.0
    after = d.state()
    for k in ("agent_pos", "agent_dir", "agent_inv", "pot_onions", "counter_items", "delivered"):
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_move_into_wall_only_turns(make):
    lay = "cramped_room"
    d = make(lay)
    d.set(state_of(lay, pos=((1, 1), (2, 3)), dir=(UP, UP)))
    d.step(LEFT, DOWN)  # (1, 0) is an onion pile, (3, 3) the serving tile
    s = d.state()
    assert s["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 2, 3)]]
    assert s["agent_dir"].tolist() == [[LEFT, DOWN]]
    d.step(DOWN, LEFT)  # both onto floor
    s = d.state()
    assert s["agent_pos"].tolist() == [[cell(lay, 2, 1), cell(lay, 2, 2)]]
    assert s["agent_dir"].tolist() == [[DOWN, LEFT]]
    d.step(STAY, INTERACT)  # stay and interact keep the direction
    assert d.state()["agent_dir"].tolist() == [[DOWN, LEFT]]


def test_collision_same_target(make):
    lay = "cramped_room"
    d = make(lay)
    d.set(state_of(lay, pos=((1, 1), (1, 3))))
    d.step(RIGHT, LEFT)  # both target (1, 2)
    s = d.state()
    assert s["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 1, 3)]]
    assert s["agent_dir"].tolist() == [[RIGHT, LEFT]]  # they still turn


def test_collision_swap(make):
    lay = "cramped_room"
    d = make(lay)
    d.set(state_of(lay, pos=((1, 1), (1, 2))))
    d.step(RIGHT, LEFT)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 1, 2)]]


def test_moving_into_occupied_cell(make):
    lay = "cramped_room"
    d = make(lay)
    # the other agent stays
    d.set(state_of(lay, pos=((1, 1), (1, 2))))
    d.step(RIGHT, STAY)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 1, 2)]]
    # the other agent's move is blocked by a wall (its target is its own cell)
    d.step(RIGHT, UP)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 1, 2)]]
    # the other agent interacts
    d.step(STAY, INTERACT)
    d.step(RIGHT, INTERACT)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 1, 1), cell(lay, 1, 2)]]
    # chain (JaxMARL): the other moves away successfully, so following it is allowed
    d.step(RIGHT, RIGHT)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 1, 2), cell(lay, 1, 3)]]
    # and the other way round (human follows the robot)
    d.set(state_of(lay, pos=((2, 2), (2, 3))))
    d.step(LEFT, LEFT)
    assert d.state()["agent_pos"].tolist() == [[cell(lay, 2, 1), cell(lay, 2, 2)]]


def test_interactions_resolve_agent0_first(make):
    lay = "coord_ring"  # the centre counter (2, 2) is reachable from (1, 2) and (3, 2)
    d = make(lay)
    d.set(state_of(lay, pos=((1, 2), (3, 2)), dir=(DOWN, UP), inv=(ONION, NONE)))
    d.step(INTERACT, INTERACT)  # robot places, then the human picks it up
    s = d.state()
    assert s["agent_inv"].tolist() == [[NONE, ONION]] and s["counter_items"].sum() == 0
    d.step(INTERACT, INTERACT)  # robot: empty counter, nothing; then the human places
    s = d.state()
    assert s["agent_inv"].tolist() == [[NONE, NONE]] and s["counter_items"].sum() == ONION


def test_second_onion_into_the_same_pot_order():
    # asymm_advantages: pot (2, 4) is reachable from (2, 3) (robot) and (2, 5) (human)
    lay = "asymm_advantages"
    env = VecOvercooked(lay, num_envs=1)
    env.set_state(
        state_of(lay, pos=((2, 3), (2, 5)), dir=(RIGHT, LEFT), inv=(ONION, ONION), onions=[2, 0])
    )
    env.step(np.array([INTERACT]), np.array([INTERACT]))
    s = env.get_state()
    assert s["agent_inv"].tolist() == [[NONE, ONION]]  # robot's onion went first
    assert s["pot_onions"].tolist() == [[3, 0]] and s["pot_timer"].tolist() == [[19, 0]]


# ------------------------------------------------------- vectorised == reference


def _compare(vec: VecOvercooked, singles: list[OvercookedEnv]) -> None:
    obs = vec.observe()
    state = vec.get_state()
    for e, env in enumerate(singles):
        np.testing.assert_array_equal(obs[e], env.observe())
        one = env.get_state()
        for k, v in one.items():
            if k == "t":
                assert int(v) == int(state["t"])
            else:
                np.testing.assert_array_equal(v[0], state[k][e], err_msg=k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vectorised_matches_reference(layout):
    n, cook_time = 5, 4
    rng = np.random.default_rng(123)
    vec = VecOvercooked(layout, num_envs=n, cook_time=cook_time)
    vec.reset(rng)
    singles = [OvercookedEnv(layout, cook_time=cook_time) for _ in range(n)]
    for env in singles:
        env.reset(seed=0)
    human = ScriptedHuman(layout, epsilon=0.3)
    _compare(vec, singles)

    def run(steps: int) -> int:
        for _ in range(steps):
            ra = rng.integers(0, 6, vec.num_envs)
            # a noisy competent human so that soups get cooked and delivered
            ha = human.act(vec, rng)
            r = vec.step(ra, ha)
            for e, env in enumerate(singles):
                _, re, term, trunc, info = env.joint_step(int(ra[e]), int(ha[e]))
                assert re == r[e] and not term
                assert info["human_action"] == ha[e]
                np.testing.assert_array_equal(info["delivered"], vec.delivered[e])
            _compare(vec, singles)
        return int(vec.delivered.sum())

    run(220)
    # simulated rollouts: a repeated state (M = 3 n) against single envs loaded from it
    rep = {k: (np.repeat(v, 3, axis=0) if k != "t" else v) for k, v in vec.get_state().items()}
    vec.set_state(rep)
    assert vec.num_envs == 3 * n
    new_singles = []
    for e in range(3 * n):
        env = OvercookedEnv(layout, cook_time=cook_time)
        env.reset(seed=0)
        env.set_state({k: (v[e : e + 1] if k != "t" else v) for k, v in rep.items()})
        new_singles.append(env)
    singles[:] = new_singles
    _compare(vec, singles)
    delivered = run(100)
    assert delivered > 0  # the comparison covered deliveries
    assert vec.t == 320


def test_set_state_repeat_and_t_formats():
    vec = VecOvercooked("coord_ring", num_envs=4)
    rng = np.random.default_rng(0)
    for _ in range(30):
        vec.step(rng.integers(0, 6, 4), rng.integers(0, 6, 4))
    s = vec.get_state()
    assert s["t"].shape == () and int(s["t"]) == 30
    assert all(v.shape[0] == 4 for k, v in s.items() if k != "t")
    big = {k: np.repeat(v, 20, axis=0) for k, v in s.items() if k != "t"}
    big["t"] = np.full(80, 30)  # an array of equal values is accepted too
    sim = VecOvercooked("coord_ring", num_envs=1)
    sim.set_state(big)
    assert sim.num_envs == 80 and sim.t == 30
    np.testing.assert_array_equal(sim.observe(), np.repeat(vec.observe(), 20, axis=0))
    # copies: mutating the returned state does not touch the env
    s2 = vec.get_state()
    s2["agent_inv"][:] = 3
    assert not np.array_equal(vec.agent_inv, s2["agent_inv"])
    with pytest.raises(ValueError, match="one non-negative step count"):
        sim.set_state({**big, "t": np.arange(80)})
    with pytest.raises(ValueError, match="pot_onions"):
        sim.set_state({**big, "pot_onions": big["pot_onions"][:, :1]})
    with pytest.raises(ValueError, match="missing"):
        sim.set_state({k: v for k, v in big.items() if k != "delivered"})
    bad = {k: v.copy() for k, v in big.items()}
    bad["agent_pos"][0] = [0, 1]  # counters, not floor
    with pytest.raises(ValueError, match="floor"):
        sim.set_state(bad)


def test_observation_layout_and_empowerment_features():
    for name in LAYOUTS:
        vec = VecOvercooked(name, num_envs=3)
        lay = vec.layout
        f, p, c = len(lay.floor_cells), len(lay.pot_cells), len(lay.counter_cells)
        assert vec.obs_dim == 2 * (f + 8) + 4 * p + 3 * c
        obs = vec.observe()
        assert obs.shape == (3, vec.obs_dim) and obs.dtype == np.float32
        assert obs.min() >= 0.0 and obs.max() <= 1.0
        feats = vec.empowerment_features()
        assert feats.shape == (3, f + 8) and feats.dtype == np.float32
        np.testing.assert_array_equal(feats, obs[:, f + 8 : 2 * (f + 8)])
        np.testing.assert_array_equal(vec.observe(1)[:, : f + 8], feats)
        # one-hots: each agent block sums to 3
        assert np.all(obs[:, : f + 8].sum(1) == 3) and np.all(feats.sum(1) == 3)


# ------------------------------------------------------------------ scripted human


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scripted_human_alone_delivers(layout, capsys):
    n = 4
    vec = VecOvercooked(layout, num_envs=n)
    human = ScriptedHuman(layout, epsilon=0.0)
    rng = np.random.default_rng(0)
    vec.reset(rng)
    total = 0.0
    for _ in range(400):
        total += vec.step(np.full(n, STAY), human.act(vec, rng)).sum()
    assert vec.delivered[:, 0].sum() == 0
    assert np.all(vec.delivered[:, 1] >= 1)
    assert total == 20.0 * vec.delivered.sum()
    with capsys.disabled():
        print(f"\n[{layout}] eps=0 human alone, robot staying: {vec.delivered[0, 1]} soups / 400")


def test_scripted_human_greedy_is_deterministic_and_epsilon_noise():
    vec = VecOvercooked("cramped_room", num_envs=2000)
    greedy = ScriptedHuman("cramped_room", epsilon=0.0)
    noisy = ScriptedHuman("cramped_room", epsilon=0.5)
    g = greedy.greedy(vec)
    assert np.all(g == g[0])
    a = noisy.act(vec, np.random.default_rng(0))
    frac = (a != g).mean()  # 0.5 * 5/6 expected
    assert 0.36 < frac < 0.48
    with pytest.raises(ValueError, match="layout"):
        greedy.greedy(VecOvercooked("coord_ring", num_envs=1))
    with pytest.raises(ValueError, match="epsilon"):
        ScriptedHuman("cramped_room", epsilon=1.5)


def test_scripted_human_subtasks():
    lay = "cramped_room"
    h = ScriptedHuman(lay, epsilon=0.0)
    vec = VecOvercooked(lay, num_envs=1)

    def act(**kw):
        vec.set_state(state_of(lay, **kw))
        return int(h.greedy(vec)[0])

    # start: empty pot -> fetch an onion from the pile at (1, 4): turn right, then interact
    assert act(pos=((1, 1), (1, 3)), dir=(UP, UP)) == RIGHT
    assert act(pos=((1, 1), (1, 3)), dir=(UP, RIGHT)) == INTERACT
    # onion in hand -> the pot (0, 2) from (1, 2)
    assert act(pos=((1, 1), (1, 3)), dir=(UP, RIGHT), inv=(0, ONION)) == LEFT
    assert act(pos=((1, 1), (1, 2)), dir=(UP, LEFT), inv=(0, ONION)) == UP
    assert act(pos=((1, 1), (1, 2)), dir=(UP, UP), inv=(0, ONION)) == INTERACT
    # a pot cooking, nobody holds a dish -> the dish pile (3, 1) via (2, 1)
    cooking = dict(onions=[3], timer=[10])
    assert act(pos=((1, 1), (1, 2)), dir=(UP, UP), **cooking) == DOWN
    # ... unless the robot holds one: then onions are useless too (pot full), so wait
    assert act(pos=((1, 1), (1, 2)), dir=(UP, UP), inv=(DISH, 0), **cooking) == STAY
    # dish in hand at a cooking pot: wait; ready: interact
    assert act(pos=((1, 1), (1, 2)), dir=(UP, UP), inv=(0, DISH), **cooking) == STAY
    ready = dict(onions=[3], timer=[0])
    assert act(pos=((1, 1), (1, 2)), dir=(UP, UP), inv=(0, DISH), **ready) == INTERACT
    # soup -> serving (3, 3) from (2, 3)
    assert act(pos=((1, 1), (2, 3)), dir=(UP, UP), inv=(0, SOUP)) == DOWN
    assert act(pos=((1, 1), (2, 3)), dir=(UP, DOWN), inv=(0, SOUP)) == INTERACT
    # onion in hand, pot full -> place it on the nearest free counter (2, 4) from (2, 3)
    assert act(pos=((1, 1), (2, 3)), dir=(UP, RIGHT), inv=(0, ONION), **cooking) == INTERACT
    # a soup lying on a counter is fetched first
    soup_on = dict(counters={(2, 4): SOUP})
    assert act(pos=((1, 1), (2, 3)), dir=(UP, RIGHT), **soup_on) == INTERACT


def test_scripted_human_routes_around_the_robot():
    lay = "coord_ring"
    h = ScriptedHuman(lay, epsilon=0.0)
    vec = VecOvercooked(lay, num_envs=2)
    s = state_of(lay, pos=((1, 2), (1, 1)), dir=(UP, UP), inv=(0, ONION))
    s2 = state_of(lay, pos=((3, 3), (1, 1)), dir=(UP, UP), inv=(0, ONION))
    vec.set_state({k: np.concatenate([s[k], s2[k]]) if k != "t" else s[k] for k in s})
    # the pots are reached from (1, 3): the short way is through the robot at (1, 2), so the
    # human goes round the ring (down); with the robot elsewhere it goes right
    assert h.greedy(vec).tolist() == [DOWN, RIGHT]


# ------------------------------------------------------- the sampled human (temperature)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scripted_human_at_temperature_zero_is_the_greedy_human(layout):
    """Temperature 0 (the default) is the deterministic human exactly: the greedy action, then
    epsilon noise from the same draws, and no other random number taken from the generator."""
    n = 16
    vec = VecOvercooked(layout, num_envs=n)
    env_rng, rng, ref = (np.random.default_rng(s) for s in (5, 9, 9))
    vec.reset(env_rng)
    human = ScriptedHuman(layout, epsilon=0.2, temperature=0.0)
    assert ScriptedHuman(layout).temperature == 0.0
    for _ in range(100):
        explore = ref.random(n) < 0.2
        expected = np.where(explore, ref.integers(0, NUM_ACTIONS, n), human.greedy(vec))
        a = human.act(vec, rng)
        assert np.array_equal(a, expected)
        assert np.array_equal(human.policy_state(vec.get_state(), rng), human.greedy(vec))
        vec.step(env_rng.integers(0, NUM_ACTIONS, n), a)
    assert rng.bit_generator.state == ref.bit_generator.state


def counter_choice():
    """Coordination Ring, the human at (3, 3) holding a dish while no pot is full (robot at
    (1, 2)): its subtask is a free counter. Returns the state, each reachable counter's path
    cost and the action toward it (the greedy action when only that counter is free)."""
    layout = "coord_ring"
    lay, h = get_layout(layout), ScriptedHuman(layout, epsilon=0.0)
    s = state_of(layout, pos=((1, 2), (3, 3)), dir=(UP, UP), inv=(0, DISH))
    robot, me = lay.floor_id[s["agent_pos"][0]]
    cost = h.dist[robot, me, lay.counter_cells]
    reach = np.flatnonzero(cost < _INF)
    toward = []
    for c in reach:
        only = {**s, "counter_items": np.full_like(s["counter_items"], ONION)}
        only["counter_items"][0, c] = NONE
        toward.append(int(h.greedy_state(only)[0]))
    return s, cost[reach].astype(float), np.array(toward)


def sampled_actions(state, temperature: float, m: int, seed: int) -> np.ndarray:
    human = ScriptedHuman("coord_ring", epsilon=0.0, temperature=temperature)
    many = {k: (np.repeat(v, m, axis=0) if np.ndim(v) else v) for k, v in state.items()}
    return human.policy_state(many, np.random.default_rng(seed))


@pytest.mark.parametrize("temperature", [1.0, 1e6])
def test_sampled_human_matches_the_softmax_over_path_costs(temperature):
    """The human's action frequencies match softmax(-cost / T) over the counters, each counter
    mapped to the action toward it (chi-square, fixed seed); at a high temperature the counter
    is uniform over the reachable ones (the long detour included)."""
    from scipy.stats import chisquare

    state, cost, toward = counter_choice()
    assert len(set(toward.tolist())) >= 3 and np.ptp(cost) > 100  # real choices, a detour
    w = np.exp(-(cost - cost.min()) / temperature)
    p = np.bincount(toward, weights=w / w.sum(), minlength=NUM_ACTIONS)
    if temperature > 1e3:
        uniform = np.bincount(toward, minlength=NUM_ACTIONS) / len(toward)
        np.testing.assert_allclose(p, uniform, atol=1e-3)
    m = 20_000
    counts = np.bincount(sampled_actions(state, temperature, m, seed=11), minlength=NUM_ACTIONS)
    assert counts[p == 0].sum() == 0
    _, pval = chisquare(counts[p > 0], m * p[p > 0])
    assert pval > 1e-3, (counts, m * p)
    # the test has power: the other temperature's frequencies are rejected
    other = 1e6 if temperature == 1.0 else 1.0
    w2 = np.exp(-(cost - cost.min()) / other)
    p2 = np.bincount(toward, weights=w2 / w2.sum(), minlength=NUM_ACTIONS)
    assert chisquare(counts[p2 > 0], m * p2[p2 > 0]).pvalue < 1e-6


def test_softmax_choice_frequencies():
    from scipy.stats import chisquare

    cost = np.array([[3.0, np.inf, 0.5, 1.0, 0.5, np.inf]])
    m, temperature = 30_000, 0.7
    u = np.random.default_rng(2).random(m)
    picks = softmax_choice(np.repeat(cost, m, 0), u, temperature)
    w = np.where(np.isfinite(cost[0]), np.exp(-np.nan_to_num(cost[0], posinf=0) / temperature), 0)
    counts = np.bincount(picks, minlength=cost.shape[1])
    assert counts[1] == counts[5] == 0
    assert chisquare(counts[w > 0], m * w[w > 0] / w.sum()).pvalue > 1e-3
    # near zero temperature: the cheapest (ties: either); no finite cost: index 0
    assert set(softmax_choice(np.repeat(cost, 50, 0), u[:50], 1e-3).tolist()) <= {2, 4}
    assert softmax_choice(np.full((1, 3), np.inf), u[:1], 1.0).tolist() == [0]


def test_temperature_is_checked_and_plumbed():
    for bad in (-0.1, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            ScriptedHuman("cramped_room", temperature=bad)
    env = OvercookedEnv("cramped_room", human_temperature=2.0)
    assert env.human.temperature == 2.0
    from alignlab.esr.overcooked_human import AssistedOvercooked

    assert AssistedOvercooked("cramped_room", 2, 10, 0.1, 0.5).human_policy.temperature == 0.5
    assert AssistedOvercooked("cramped_room", 2, 10, 0.1).human_policy.temperature == 0.0


# ---------------------------------------------------------------- gymnasium / parallel


def test_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    for name in LAYOUTS:
        env = OvercookedEnv(name, render_mode="ansi")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=False)


def test_gym_env_episode_and_render():
    env = OvercookedEnv("cramped_room", horizon=10, render_mode="ansi")
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and info["delivered"].tolist() == [0, 0]
    text = env.render()
    assert "R" in text and "H" in text and "t=0" in text
    for t in range(10):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert not term and trunc == (t == 9)
        assert 0 <= info["human_action"] < 6
    with pytest.raises(ValueError, match="valid actions"):
        env.step(6)
    with pytest.raises(ValueError, match="valid actions"):
        env.joint_step(0, 1.5)


def test_gym_env_human_matches_vectorised_human():
    """OvercookedEnv.step == VecOvercooked + ScriptedHuman with the same generator."""
    layout = "coord_ring"
    env = OvercookedEnv(layout, human_epsilon=0.2)
    env.reset(seed=7)
    rng = copy.deepcopy(env.np_random)
    vec = VecOvercooked(layout, num_envs=1)
    human = ScriptedHuman(layout, epsilon=0.2)
    robot = np.random.default_rng(1)
    for _ in range(150):
        ra = int(robot.integers(0, 6))
        _, r, _, _, info = env.step(ra)
        ha = human.act(vec, rng)
        assert info["human_action"] == ha[0]
        assert vec.step(np.array([ra]), ha)[0] == r
    np.testing.assert_array_equal(env.observe(), vec.observe()[0])


def test_parallel_api():
    penv = OvercookedParallelEnv("cramped_room", horizon=25)
    assert penv.possible_agents == ["robot", "human"]
    obs, infos = penv.reset(seed=0)
    assert set(obs) == set(infos) == {"robot", "human"} and penv.agents == ["robot", "human"]
    for a in penv.possible_agents:
        assert penv.observation_space(a).contains(obs[a])
        assert penv.action_space(a).n == 6
    f = len(get_layout("cramped_room").floor_cells)
    np.testing.assert_array_equal(obs["robot"][: f + 8], obs["human"][f + 8 : 2 * (f + 8)])
    human = ScriptedHuman("cramped_room", epsilon=0.0)
    steps = 0
    while penv.agents:
        ha = int(human.greedy_state(penv.env.get_state())[0])
        obs, rew, term, trunc, infos = penv.step({"robot": STAY, "human": ha})
        steps += 1
        assert rew["robot"] == rew["human"] and not any(term.values())
    assert steps == 25 and all(trunc.values()) and penv.agents == []
    with pytest.raises(ValueError, match="reset"):
        penv.step({"robot": 0, "human": 0})
    penv.reset()
    with pytest.raises(ValueError, match="keys"):
        penv.step({"robot": 0})
    with pytest.raises(ValueError, match="valid agents"):
        penv.action_space("chef")
    with pytest.raises(ValueError, match="valid actions"):
        penv.step({"robot": 0, "human": 9})


# ---------------------------------------------------------------------- validation


def test_bad_actions_raise():
    vec = VecOvercooked("cramped_room", num_envs=3)
    ok = np.zeros(3, dtype=np.int64)
    for bad in (np.zeros(2, dtype=int), np.zeros((3, 1), dtype=int), np.full(3, 6), np.full(3, -1)):
        with pytest.raises(ValueError, match="valid actions: 0 right"):
            vec.step(bad, ok)
        with pytest.raises(ValueError, match="valid actions: 0 right"):
            vec.step(ok, bad)
    with pytest.raises(ValueError, match="integer"):
        vec.step(np.zeros(3), ok)
    with pytest.raises(ValueError, match="num_envs"):
        VecOvercooked("cramped_room", num_envs=0)
    with pytest.raises(ValueError, match="cook_time"):
        VecOvercooked("cramped_room", cook_time=0)
    with pytest.raises(ValueError, match="agent"):
        vec.observe(2)
    with pytest.raises(ValueError, match="render_mode"):
        OvercookedEnv(render_mode="human")
