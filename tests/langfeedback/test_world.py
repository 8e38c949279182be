"""The simulated reach-lift world: seeding, physics, state layout and the five features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from alignlab.core.config import ConfigError
from alignlab.core.errors import AlignlabError
from alignlab.langfeedback.world import (
    ACTION_DIM,
    BOTTLE_POS,
    BOTTLE_REL,
    CUBE_POS,
    CUBE_REL,
    EE_POS,
    EE_VEL,
    FEATURES,
    GRASP,
    GRIPPER,
    OBS_DIM,
    STATE_DIM,
    Trajectories,
    WorldConfig,
    features,
    generate,
    lifted,
)

CFG = WorldConfig()


@pytest.fixture(scope="module")
def pool() -> Trajectories:
    return generate(400, np.random.default_rng(0))


def hand_built(ee, cube, bottle, grasp=0.0, vel=None) -> Trajectories:
    """One trajectory of T steps from per-step (T, 3) positions (or constant 3-vectors)."""
    T = max(np.atleast_2d(x).shape[0] for x in (ee, cube, bottle))
    ee, cube, bottle = (np.broadcast_to(np.asarray(x, float), (T, 3)) for x in (ee, cube, bottle))
    s = np.zeros((1, T, STATE_DIM), dtype=np.float32)
    s[0, :, EE_POS], s[0, :, CUBE_POS], s[0, :, BOTTLE_POS] = ee, cube, bottle
    s[0, :, CUBE_REL], s[0, :, BOTTLE_REL] = cube - ee, bottle - ee
    s[0, :, EE_VEL] = 0.0 if vel is None else vel
    s[0, :, GRASP], s[0, :, GRIPPER] = grasp, 1.0 - grasp
    return Trajectories(s, np.zeros((1, T, ACTION_DIM), dtype=np.float32), {})


def column(name: str) -> int:
    return FEATURES.index(name)


# -- seeding and shapes -------------------------------------------------------------------


def test_same_seed_same_arrays_other_seed_differs():
    a = generate(40, np.random.default_rng(7))
    b = generate(40, np.random.default_rng(7))
    c = generate(40, np.random.default_rng(8))
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.actions, b.actions)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert not np.array_equal(a.states, c.states)
    assert not np.array_equal(a.actions, c.actions)


def test_shapes_dtypes_take_and_observations(pool):
    n, T = len(pool), CFG.horizon
    assert pool.states.shape == (n, T, STATE_DIM) and pool.states.dtype == np.float32
    assert pool.actions.shape == (n, T, ACTION_DIM) and pool.actions.dtype == np.float32
    assert all(v.shape == (n,) for v in pool.params.values())
    obs = pool.observations()
    assert obs.shape == (n, T, OBS_DIM) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[..., :STATE_DIM], pool.states)
    np.testing.assert_array_equal(obs[..., STATE_DIM:], pool.actions)
    sub = pool.take(np.array([5, 2]))
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.states[1], pool.states[2])
    np.testing.assert_array_equal(sub.params["speed_gain"], pool.params["speed_gain"][[5, 2]])
    f = features(pool)
    assert f.shape == (n, len(FEATURES)) and f.dtype == np.float64
    np.testing.assert_array_equal(features(sub), f[[5, 2]])
    cfg = dataclasses.replace(CFG, horizon=12)
    assert generate(3, np.random.default_rng(0), cfg).states.shape == (3, 12, STATE_DIM)


def test_state_layout_is_consistent(pool):
    s = pool.states.astype(np.float64)
    ee, cube, bottle = s[..., EE_POS], s[..., CUBE_POS], s[..., BOTTLE_POS]
    np.testing.assert_allclose(s[..., CUBE_REL], cube - ee, atol=1e-6)
    np.testing.assert_allclose(s[..., BOTTLE_REL], bottle - ee, atol=1e-6)
    # velocity: the last step's displacement over dt, zero at the start
    np.testing.assert_array_equal(s[:, 0, EE_VEL], 0.0)
    np.testing.assert_allclose(s[:, 1:, EE_VEL], np.diff(ee, axis=1) / CFG.dt, atol=2e-4)
    # the bottle never moves and stands on the table; the cube starts resting on it
    np.testing.assert_array_equal(bottle, np.broadcast_to(bottle[:, :1], bottle.shape))
    np.testing.assert_allclose(bottle[..., 2], CFG.table_height + CFG.bottle_height / 2, atol=1e-6)
    np.testing.assert_allclose(cube[:, 0, 2], CFG.table_height + CFG.cube_half_size, atol=1e-6)
    assert set(np.unique(s[..., GRASP])) <= {0.0, 1.0}
    assert s[..., GRIPPER].min() >= 0.0 and s[..., GRIPPER].max() <= 1.0
    # the velocity command is clipped per axis; the ee stays in the workspace
    assert np.abs(s[..., EE_VEL]).max() <= CFG.max_speed + 1e-3
    assert ee[..., 0].min() >= CFG.workspace_x[0] - 1e-6
    assert ee[..., 2].min() >= CFG.table_height + CFG.ee_floor - 1e-6
    assert ee[..., 2].max() <= CFG.table_height + CFG.workspace_top + 1e-6


# -- physics ------------------------------------------------------------------------------


def test_cube_moves_only_when_grasped(pool):
    cube = pool.states[..., CUBE_POS]
    moved = np.any(cube[:, 1:] != cube[:, :-1], axis=2)
    grasp_now = pool.states[:, 1:, GRASP] > 0.5
    grasp_before = pool.states[:, :-1, GRASP] > 0.5
    assert moved.any(), "some cube must be carried in a pool of 400"
    assert not (moved & ~grasp_now).any()
    assert not (moved & ~grasp_before).any()


def test_only_aimed_grasps_hold_and_lifts_happen(pool):
    grasped = (pool.states[..., GRASP] > 0.5).any(axis=1)
    aimed = pool.params["grasp_attempt"] & pool.params["grasp_aimed"]
    assert not (grasped & ~aimed).any()  # no attempt, or aimed beside the cube: no grasp
    assert grasped[aimed].mean() > 0.6  # most aimed grasps hold within the horizon
    up = lifted(pool)
    assert up.any(axis=1).mean() > 0.2
    z = pool.states[..., CUBE_POS][..., 2]
    assert (z[up] > CFG.table_height + CFG.lift_threshold).all()
    # a held cube stays within the grasp radius of the ee
    held = pool.states[..., GRASP] > 0.5
    d = np.linalg.norm(pool.states[..., CUBE_REL], axis=-1)
    assert d[held].max() <= CFG.grasp_radius + 1e-5


# -- features on hand-built trajectories --------------------------------------------------


def test_static_end_effector_has_zero_speed_and_hand_distances():
    ee, cube, bottle = [0.1, -0.05, 1.0], [0.0, 0.0, 0.82], [0.2, 0.1, 0.89]
    f = features(hand_built(ee, cube, bottle))[0]
    d_cube = np.linalg.norm(np.subtract(cube, ee))
    d_bottle = np.linalg.norm(np.subtract(bottle, ee))
    assert f[column("speed")] == 0.0
    assert f[column("height")] == pytest.approx(1.0, abs=1e-6)
    assert f[column("distance_to_cube")] == pytest.approx(d_cube, abs=1e-6)
    assert f[column("distance_to_bottle")] == pytest.approx(d_bottle, abs=1e-6)
    assert f[column("gt_reward")] == pytest.approx(1 - np.tanh(10 * d_cube), abs=1e-6)


def test_moving_trajectory_means_over_time():
    T = 6
    x = np.linspace(0.0, 0.25, T)
    ee = np.stack([x, np.zeros(T), np.full(T, 0.9)], axis=1)
    vel = np.zeros((T, 3))
    vel[1:, 0] = np.diff(x) / CFG.dt
    cube, bottle = np.array([0.3, 0.0, 0.82]), np.array([0.0, 0.2, 0.89])
    f = features(hand_built(ee, cube, bottle, vel=vel))[0]
    d_cube = np.linalg.norm(cube - ee, axis=1)
    assert f[column("speed")] == pytest.approx(np.abs(vel[:, 0]).mean(), rel=1e-5)
    assert f[column("distance_to_cube")] == pytest.approx(d_cube.mean(), abs=1e-6)
    assert f[column("distance_to_bottle")] == pytest.approx(
        np.linalg.norm(bottle - ee, axis=1).mean(), abs=1e-6
    )
    assert f[column("gt_reward")] == pytest.approx((1 - np.tanh(10 * d_cube)).mean(), abs=1e-6)


def test_lifted_cube_gives_2_25_and_grasp_bonus_below_the_threshold():
    ee = [0.0, 0.0, CFG.table_height + 0.1]
    f = features(hand_built(ee, ee, [0.2, 0.0, 0.89], grasp=1.0))[0]
    assert f[column("gt_reward")] == pytest.approx(2.25)
    assert f[column("distance_to_cube")] == 0.0
    # held but still resting on the table: reach 1 plus the grasp bonus 0.25
    rest = [0.0, 0.0, CFG.table_height + CFG.cube_half_size]
    f = features(hand_built(rest, rest, [0.2, 0.0, 0.89], grasp=1.0))[0]
    assert f[column("gt_reward")] == pytest.approx(1.25)
    # high but not held is not lifted
    f = features(hand_built(ee, ee, [0.2, 0.0, 0.89], grasp=0.0))[0]
    assert f[column("gt_reward")] == pytest.approx(1.0)


def test_trajectories_reject_bad_shapes():
    with pytest.raises(ValueError, match="states"):
        Trajectories(np.zeros((2, 5, 19), np.float32), np.zeros((2, 5, 4), np.float32), {})
    with pytest.raises(ValueError, match="actions"):
        Trajectories(np.zeros((2, 5, 20), np.float32), np.zeros((2, 4, 4), np.float32), {})


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        ({"lift_height": (0.3, 0.1)}, "lift_height"),
        ({"lift_height": (0.1, 0.6)}, "lift_height"),
        ({"miss_offset": (0.01, 0.05)}, "miss_offset"),
        ({"cube_x": (-0.6, 0.1)}, "cube_x"),
        ({"cruise_height": (0.1, 0.9)}, "cruise_height"),
        ({"position_gain": 20.0}, "position_gain"),
        ({"lift_threshold": 0.01}, "lift_threshold"),
        ({"speed_gain": (0.5,)}, "speed_gain"),
    ],
)
def test_cross_field_rules_name_the_field(change, field):
    cfg = dataclasses.replace(CFG, **change)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.key == field
    with pytest.raises(AlignlabError, match=field):
        generate(2, np.random.default_rng(0), cfg)


@pytest.mark.parametrize("change, field", [({"horizon": 1}, "horizon"), ({"dt": 0.0}, "dt")])
def test_declared_constraints_name_the_field(change, field):
    with pytest.raises(AlignlabError, match=field):
        generate(2, np.random.default_rng(0), dataclasses.replace(CFG, **change))


def test_default_config_is_valid():
    CFG.validate()


# -- the quick pool -----------------------------------------------------------------------


def test_quick_pool_of_1300_has_varied_features():
    traj = generate(1300, np.random.default_rng(1))
    f = features(traj)
    assert len(traj) == 1300 and np.isfinite(f).all()
    assert (f.std(axis=0) > 0.03).all()
    corr = np.corrcoef(f.T)
    assert np.abs(corr[np.triu_indices(len(FEATURES), 1)]).max() < 0.85


def test_rich_features_on_a_hand_built_trajectory():
    """The richer world's five extra features, worked by hand: the ee rises then falls, pauses
    for two steps, passes the bottle and ends at a known distance from the cube."""
    from alignlab.langfeedback.world import FEATURE_SETS, NEAR_BOTTLE, STILL_SPEED

    z = np.array([0.9, 1.0, 1.1, 1.1, 1.1, 0.95])
    x = np.array([0.0, 0.1, 0.2, 0.2, 0.2, 0.3])
    ee = np.stack([x, np.zeros(6), z], axis=1)
    vel = np.zeros((6, 3))
    vel[1:] = np.diff(ee, axis=0) / CFG.dt
    cube, bottle = np.array([0.3, 0.1, 0.82]), np.array([0.2, 0.0, 1.0])
    traj = hand_built(ee, cube, bottle, vel=vel)
    traj.states[0, :, GRIPPER] = [1, 1, 0.5, 0, 0, 1]
    f = features(traj, feature_set="rich")[0]
    names = FEATURE_SETS["rich"]
    assert f.shape == (10,) and names[:5] == FEATURES
    np.testing.assert_array_equal(f[:5], features(traj)[0])
    speed = np.linalg.norm(vel, axis=1)
    d_bottle = np.linalg.norm(bottle - ee, axis=1)
    expect = {
        "gripper_opening": 3.5 / 6,
        "max_height": 1.1,
        "time_still": (speed < STILL_SPEED).mean(),
        "time_near_bottle": (d_bottle < NEAR_BOTTLE).mean(),
        "final_distance_to_cube": np.linalg.norm(cube - ee[-1]),
    }
    assert expect["time_still"] == 3 / 6  # t = 0 and the two pauses
    assert 0 < expect["time_near_bottle"] < 1
    for name, value in expect.items():
        assert f[names.index(name)] == pytest.approx(value, abs=1e-6), name
    with pytest.raises(AlignlabError, match="unknown feature set 'rch'; valid: paper, rich"):
        features(traj, feature_set="rch")
