"""A simulated reach-lift world: a stand-in for the original's robosuite `LiftModded` pools.

Yang et al. (CoRL 2024) learn their shared latent space from trajectories of a Jaco arm in
robosuite's `LiftModded` (a table, a cube and a bottle), collected from SAC policies trained
on random linear weightings of five features (official code, USC-Lira/language-preference-
learning @120990d, `data/utils.py` and `pref_learning/true_rewards_rs/*/variant.json`). Those
pools need about 1.25M simulator steps per reward variant, so this module replaces them with a
small simulation written here: a vectorised, seeded numpy world in which an end effector (ee)
moves by velocity commands over a table with a random cube and a random bottle, and every
trajectory comes from a scripted controller with random parameters. Nothing here is robosuite
or MuJoCo: there are no contacts, no arm and no gravity; the cube moves only while grasped.

**State** (20-d per step, `STATE_DIM`), in this order:

| slots | what |
|---|---|
| 0:3 | ee position (m; z is absolute, the table top is at `table_height`) |
| 3:6 | ee velocity (m/s): the displacement of the last step over `dt`, 0 at t = 0 |
| 6:9 | cube position (its centre) |
| 9:12 | bottle position (its centre, `bottle_height / 2` above the table) |
| 12:15 | cube − ee |
| 15:18 | bottle − ee |
| 18 | grasp flag (1 while the cube is held) |
| 19 | gripper opening (1 open, 0 closed) |

**Action** (4-d, `ACTION_DIM`): a velocity command (3, m/s) and the gripper command (1; −1
opens, +1 closes, as in robosuite). `Trajectories.observations` concatenates state and action
(24-d, `OBS_DIM`), the input of the paper's per-timestep trajectory encoder.

**Physics** of one step (`dt` seconds; 0.1 s, so that T = 80 steps span 8 s, long enough for
a slow reach, dwell and lift): the command is clipped to ±`max_speed` per axis and the ee moves by it, kept inside the
workspace; the gripper opening moves by `gripper_speed · dt` against the command; the gripper
takes hold of the cube when its opening crosses `grasp_closed` while the cube's centre is
within `grasp_radius` of the ee, and keeps it while closed; a held cube follows the ee's
displacement (never below its resting height); a cube not held never moves. The cube counts
as *lifted* while held with its centre more than `lift_threshold` above the table top
(robosuite Lift's `_check_success`: cube height > table height + 0.04).

**Controller** (per trajectory, random parameters in `Trajectories.params`): fly at a random
cruise height to a via point toward or away from the bottle (a random distance from the cube
along the cube–bottle line, to either side) and dwell there for a random time; then either
hover near the cube (no grasp attempt: a random horizontal offset and a random low height),
or go over the cube, descend, close the gripper and lift to a random height. A failing grasp
aims a few centimetres beside the cube (more than `grasp_radius`), so the gripper closes on
nothing and the ee rises without it; whether the grasp holds is decided by the physics alone.
Motion: towards the phase's target at the trajectory's cruise speed (`speed_gain` × `max_speed`),
slowing within reach (proportional gain `position_gain`), plus Ornstein–Uhlenbeck "wander"
of random size while dwelling, hovering and holding the lift (never while travelling to a
target it must reach, descending or closing). A slow trajectory may run out of time before its
grasp. `gt_reward` and `distance_to_cube` are correlated by construction (the reach term is
1 − tanh(10·d_cube)), the others only weakly. Over 1,300 default trajectories (seed 0) the
largest correlation is gt_reward vs distance_to_cube, −0.71; the next ones are
distance_to_bottle vs distance_to_cube, 0.39, and height vs distance_to_cube, 0.37. At
T = 200 (the same controller, more time holding) gt_reward vs distance_to_cube reaches −0.80.

**Features** (`features`): the paper's five, each a mean over time (`data/utils.py`):
robosuite Lift's shaped reward, ee speed, ee height, distance to the bottle, distance to the
cube.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.config import ConfigError, param, validate
from alignlab.core.errors import check_choice

FEATURES = ("gt_reward", "speed", "height", "distance_to_bottle", "distance_to_cube")
#: Five more features, for the study of richer worlds (`FEATURE_SETS["rich"]`): one linear in the
#: state like the paper's (the gripper's opening) and four that are not means of a linear
#: function of the state (a maximum, two threshold shares, a final value).
EXTRA_FEATURES = (
    "gripper_opening", "max_height", "time_still", "time_near_bottle", "final_distance_to_cube",
)  # fmt: skip
#: Named feature sets: the paper's five, and the paper's five followed by the extra five.
FEATURE_SETS = {"paper": FEATURES, "rich": FEATURES + EXTRA_FEATURES}
#: Within this distance (m) of the bottle's centre the ee counts as near it (`time_near_bottle`).
NEAR_BOTTLE = 0.15
#: Below this speed (m/s) the ee counts as still (`time_still`).
STILL_SPEED = 0.02
STATE_DIM = 20
ACTION_DIM = 4
OBS_DIM = STATE_DIM + ACTION_DIM

# state slots
EE_POS = slice(0, 3)
EE_VEL = slice(3, 6)
CUBE_POS = slice(6, 9)
BOTTLE_POS = slice(9, 12)
CUBE_REL = slice(12, 15)
BOTTLE_REL = slice(15, 18)
GRASP = 18
GRIPPER = 19
# action slots
VEL_CMD = slice(0, 3)
GRIPPER_CMD = 3

# robosuite Lift's shaped reward (`robosuite/environments/manipulation/lift.py`)
LIFT_REWARD = 2.25
GRASP_REWARD = 0.25
REACH_SCALE = 10.0

# controller phases
VIA, ABOVE, DESCEND, CLOSE, LIFT = range(5)

#: the fields that are (low, high) ranges of a uniform draw
RANGES = (
    "workspace_x", "workspace_y", "cube_x", "cube_y", "bottle_distance", "start_x", "start_y",
    "start_z", "speed_gain", "cruise_height", "via_radius", "via_dwell", "hover_offset",
    "hover_height", "miss_offset", "lift_height", "wander_noise",
)  # fmt: skip


@dataclass
class WorldConfig:
    """The simulated reach-lift world and its scripted controller (lengths in metres, heights
    above the table top unless said otherwise, times in seconds)."""

    horizon: int = param(80, ge=2, help="steps per trajectory (the paper preset uses 200)")
    dt: float = param(0.1, gt=0, help="seconds per step")
    table_height: float = param(0.8, help="absolute z of the table top (robosuite Lift's 0.8)")
    workspace_x: tuple[float, ...] = param((-0.5, 0.5), help="x range the ee may reach")
    workspace_y: tuple[float, ...] = param((-0.5, 0.5), help="y range the ee may reach")
    workspace_top: float = param(0.5, gt=0, help="highest ee position above the table")
    ee_floor: float = param(0.01, ge=0, help="lowest ee position above the table")
    cube_half_size: float = param(0.02, gt=0, help="half the cube's edge (robosuite Lift: 2 cm)")
    cube_x: tuple[float, ...] = param((-0.1, 0.1), help="x range of the cube's spawn")
    cube_y: tuple[float, ...] = param((-0.1, 0.1), help="y range of the cube's spawn")
    bottle_distance: tuple[float, ...] = param(
        (0.1, 0.3), gt=0, help="range of the bottle's horizontal distance from the cube"
    )
    bottle_height: float = param(0.18, gt=0, help="the bottle's height (its centre at half)")
    start_x: tuple[float, ...] = param((-0.3, 0.3), help="x range of the ee's start")
    start_y: tuple[float, ...] = param((-0.3, 0.3), help="y range of the ee's start")
    start_z: tuple[float, ...] = param((0.05, 0.45), ge=0, help="height range of the ee's start")
    max_speed: float = param(0.5, gt=0, help="velocity command limit, per axis (m/s)")
    gripper_speed: float = param(2.0, gt=0, help="gripper opening change per second")
    grasp_closed: float = param(0.5, gt=0, lt=1, help="opening at which the gripper takes hold")
    grasp_radius: float = param(0.02, gt=0, help="ee–cube distance within which a grasp holds")
    lift_threshold: float = param(
        0.04, gt=0, help="height of the cube's centre above the table at which it is lifted"
    )
    arrive_tol: float = param(0.015, gt=0, help="distance at which the controller has arrived")
    speed_gain: tuple[float, ...] = param(
        (0.15, 1.0), gt=0, le=1, help="range of the cruise speed, as a share of max_speed"
    )
    position_gain: float = param(
        5.0, gt=0, help="the controller's proportional gain near a target (1/s)"
    )
    cruise_height: tuple[float, ...] = param(
        (0.05, 0.3), ge=0, help="range of the cruise height of the approach"
    )
    via_toward_prob: float = param(
        0.5, ge=0, le=1, help="probability that the via point lies toward the bottle"
    )
    via_radius: tuple[float, ...] = param(
        (0.0, 0.45), ge=0, help="range of the via point's distance from the cube"
    )
    via_dwell: tuple[float, ...] = param((0.0, 5.0), ge=0, help="range of the dwell at the via")
    hover_offset: tuple[float, ...] = param(
        (0.0, 0.15), ge=0, help="range of the hover point's horizontal distance from the cube"
    )
    hover_height: tuple[float, ...] = param(
        (0.03, 0.15), ge=0, help="range of the hover point's height (no grasp attempt)"
    )
    grasp_attempt_prob: float = param(
        0.6, ge=0, le=1, help="probability that the controller attempts a grasp"
    )
    grasp_success_prob: float = param(
        0.8, ge=0, le=1, help="probability that an attempted grasp is aimed at the cube"
    )
    miss_offset: tuple[float, ...] = param(
        (0.03, 0.08), gt=0, help="range of a failing grasp's aim error beside the cube"
    )
    lift_height: tuple[float, ...] = param(
        (0.02, 0.4), ge=0, help="range of the ee's lift height above the cube's rest"
    )
    wander_noise: tuple[float, ...] = param(
        (0.0, 0.3), ge=0, help="range of the wander's stationary std (m/s, per axis)"
    )
    wander_tau: float = param(0.3, gt=0, help="the wander's correlation time")

    def validate(self) -> None:
        for key in RANGES:
            r = getattr(self, key)
            if len(r) != 2 or not r[0] <= r[1]:
                raise ConfigError(key, f"must be a (low, high) pair with low <= high, got {r}")
        pairs = [(k + a, "workspace" + a) for k in ("cube", "start") for a in ("_x", "_y")]
        for key, axis in pairs:
            lo, hi = getattr(self, axis)
            if not (lo <= getattr(self, key)[0] and getattr(self, key)[1] <= hi):
                raise ConfigError(key, f"must lie inside {axis} {getattr(self, axis)}")
        for key in ("start_z", "cruise_height", "hover_height"):
            if (
                not self.ee_floor <= getattr(self, key)[0]
                or getattr(self, key)[1] > self.workspace_top
            ):
                raise ConfigError(
                    key, f"must lie in [ee_floor, workspace_top] = [{self.ee_floor}, "
                    f"{self.workspace_top}], got {getattr(self, key)}"
                )  # fmt: skip
        if self.cube_half_size + self.lift_height[1] > self.workspace_top:
            raise ConfigError(
                "lift_height", f"must end below workspace_top - cube_half_size = "
                f"{self.workspace_top - self.cube_half_size:g}, got {self.lift_height}"
            )  # fmt: skip
        if self.lift_threshold <= self.cube_half_size:
            raise ConfigError(
                "lift_threshold", f"must exceed cube_half_size ({self.cube_half_size}) so that "
                f"a resting cube is not lifted, got {self.lift_threshold}"
            )  # fmt: skip
        if self.ee_floor > self.cube_half_size:
            raise ConfigError(
                "ee_floor", f"must be <= cube_half_size ({self.cube_half_size}) so that the "
                f"ee can reach the cube, got {self.ee_floor}"
            )  # fmt: skip
        if self.miss_offset[0] <= self.grasp_radius:
            raise ConfigError(
                "miss_offset", f"must start above grasp_radius ({self.grasp_radius}) so that a "
                f"failing grasp misses, got {self.miss_offset}"
            )  # fmt: skip
        if self.position_gain * self.dt > 1:
            raise ConfigError(
                "position_gain", f"times dt ({self.dt}) must be <= 1 so that the controller "
                f"does not overshoot, got {self.position_gain}"
            )  # fmt: skip
        if self.arrive_tol >= self.grasp_radius:
            raise ConfigError(
                "arrive_tol", f"must be < grasp_radius ({self.grasp_radius}) so that an aimed "
                f"grasp holds, got {self.arrive_tol}"
            )  # fmt: skip


@dataclass
class Trajectories:
    """N simulated trajectories of T steps: `states (N, T, 20)` and `actions (N, T, 4)`
    (float32, layout in the module docstring); `params` holds each trajectory's controller
    parameters (arrays of length N), for diagnostics only."""

    states: np.ndarray
    actions: np.ndarray
    params: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if self.states.ndim != 3 or self.states.shape[2] != STATE_DIM:
            raise ValueError(f"states must be (N, T, {STATE_DIM}), got {self.states.shape}")
        if self.actions.shape != (*self.states.shape[:2], ACTION_DIM):
            raise ValueError(
                f"actions must be (N, T, {ACTION_DIM}) = {(*self.states.shape[:2], ACTION_DIM)}, "
                f"got {self.actions.shape}"
            )

    def __len__(self) -> int:
        return len(self.states)

    @property
    def horizon(self) -> int:
        return self.states.shape[1]

    def take(self, indices) -> Trajectories:
        """The trajectories at `indices` (an integer array, a slice or a boolean mask)."""
        return Trajectories(
            self.states[indices],
            self.actions[indices],
            {k: v[indices] for k, v in self.params.items()},
        )

    def observations(self) -> np.ndarray:
        """(N, T, 24) float32: each step's state and action, the trajectory encoder's input."""
        return np.concatenate([self.states, self.actions], axis=2).astype(np.float32)


def _uniform(rng: np.random.Generator, bounds: tuple[float, ...], n: int) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size=n)


def _norm(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(x * x, axis=-1))


def generate(n: int, rng: np.random.Generator, cfg: WorldConfig | None = None) -> Trajectories:
    """`n` trajectories of the scripted controller, vectorised over trajectories (a loop over
    time only). The same generator state gives identical arrays."""
    cfg = WorldConfig() if cfg is None else cfg
    validate(cfg)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    T, dt, table = cfg.horizon, cfg.dt, cfg.table_height
    cube_z = table + cfg.cube_half_size

    # the scene
    cube = np.stack([_uniform(rng, cfg.cube_x, n), _uniform(rng, cfg.cube_y, n),
                     np.full(n, cube_z)], axis=1)  # fmt: skip
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    b_dist = _uniform(rng, cfg.bottle_distance, n)
    u = np.stack([np.cos(angle), np.sin(angle)], axis=1)  # unit vector cube -> bottle
    bottle = np.empty((n, 3))
    bottle[:, :2] = cube[:, :2] + b_dist[:, None] * u
    bottle[:, 0] = np.clip(bottle[:, 0], *cfg.workspace_x)
    bottle[:, 1] = np.clip(bottle[:, 1], *cfg.workspace_y)
    bottle[:, 2] = table + cfg.bottle_height / 2
    ee = np.stack([_uniform(rng, cfg.start_x, n), _uniform(rng, cfg.start_y, n),
                   table + _uniform(rng, cfg.start_z, n)], axis=1)  # fmt: skip

    # the controller's parameters
    gain = _uniform(rng, cfg.speed_gain, n)
    cruise = _uniform(rng, cfg.cruise_height, n)
    toward = rng.random(n) < cfg.via_toward_prob
    via_r = _uniform(rng, cfg.via_radius, n)
    dwell = _uniform(rng, cfg.via_dwell, n)
    attempt = rng.random(n) < cfg.grasp_attempt_prob
    aimed = rng.random(n) < cfg.grasp_success_prob
    miss = _uniform(rng, cfg.miss_offset, n)
    miss_angle = rng.uniform(0.0, 2 * np.pi, size=n)
    lift = _uniform(rng, cfg.lift_height, n)
    hover = _uniform(rng, cfg.hover_offset, n)
    hover_angle = rng.uniform(0.0, 2 * np.pi, size=n)
    hover_z = _uniform(rng, cfg.hover_height, n)
    wander = _uniform(rng, cfg.wander_noise, n)
    xi = rng.standard_normal((T, n, 3))

    via = np.empty((n, 3))
    via[:, :2] = cube[:, :2] + np.where(toward, 1.0, -1.0)[:, None] * via_r[:, None] * u
    via[:, 0] = np.clip(via[:, 0], *cfg.workspace_x)
    via[:, 1] = np.clip(via[:, 1], *cfg.workspace_y)
    via[:, 2] = table + cruise
    aim = np.zeros((n, 3))  # a failing grasp aims beside the cube
    aim[~aimed, 0] = miss[~aimed] * np.cos(miss_angle[~aimed])
    aim[~aimed, 1] = miss[~aimed] * np.sin(miss_angle[~aimed])
    above = cube + aim
    above[~attempt, 0] += hover[~attempt] * np.cos(hover_angle[~attempt])
    above[~attempt, 1] += hover[~attempt] * np.sin(hover_angle[~attempt])
    above[:, 2] = table + np.where(attempt, cruise, hover_z)
    down = cube + aim
    up = cube + aim
    up[:, 2] = cube_z + lift
    targets = np.stack([via, above, down, down, up])  # (phase, n, 3)

    lo = np.array([cfg.workspace_x[0], cfg.workspace_y[0], table + cfg.ee_floor])
    hi = np.array([cfg.workspace_x[1], cfg.workspace_y[1], table + cfg.workspace_top])
    rows = np.arange(n)
    cruise_speed = gain * cfg.max_speed
    phase = np.full(n, VIA)
    dwell_left = np.round(dwell / dt).astype(np.int64)
    arrived_via = np.zeros(n, dtype=bool)
    vel = np.zeros((n, 3))
    grasp = np.zeros(n, dtype=bool)
    opening = np.ones(n)
    noise = wander[:, None] * xi[0]  # the wander starts in its stationary law
    decay = np.exp(-dt / cfg.wander_tau)
    kick = np.sqrt(1.0 - decay**2) * wander[:, None]
    states = np.empty((n, T, STATE_DIM), dtype=np.float32)
    actions = np.empty((n, T, ACTION_DIM), dtype=np.float32)

    for t in range(T):
        s = states[:, t]
        s[:, EE_POS], s[:, EE_VEL], s[:, CUBE_POS], s[:, BOTTLE_POS] = ee, vel, cube, bottle
        s[:, CUBE_REL], s[:, BOTTLE_REL] = cube - ee, bottle - ee
        s[:, GRASP], s[:, GRIPPER] = grasp, opening

        # the controller: at most one phase transition per step, on what it observes now
        at = _norm(targets[phase, rows] - ee) < cfg.arrive_tol
        in_via = phase == VIA
        arrived_via |= in_via & at
        dwell_left -= in_via & arrived_via
        advance = (
            (in_via & arrived_via & (dwell_left < 0))
            | ((phase == ABOVE) & attempt & at)
            | ((phase == DESCEND) & at)
            | ((phase == CLOSE) & (opening <= cfg.grasp_closed))
        )
        phase = phase + advance
        err = targets[phase, rows] - ee
        dist = _norm(err)
        speed = np.minimum(cruise_speed, cfg.position_gain * dist)
        cmd = err * (speed / np.maximum(dist, 1e-12))[:, None]
        calm = ((phase == VIA) & arrived_via) | ((phase == ABOVE) & ~attempt) | (phase == LIFT)
        if t > 0:
            noise = decay * noise + kick * xi[t]
        cmd += calm[:, None] * noise
        g = np.where(phase >= CLOSE, 1.0, -1.0)
        actions[:, t, VEL_CMD], actions[:, t, GRIPPER_CMD] = cmd, g

        # the physics
        v = np.clip(cmd, -cfg.max_speed, cfg.max_speed)
        new_ee = np.clip(ee + dt * v, lo, hi)
        vel = (new_ee - ee) / dt
        new_opening = np.clip(opening - cfg.gripper_speed * dt * g, 0.0, 1.0)
        closed = new_opening <= cfg.grasp_closed
        near = _norm(cube - new_ee) <= cfg.grasp_radius
        new_grasp = closed & (grasp | (near & (opening > cfg.grasp_closed)))
        held = grasp & new_grasp
        moved = cube + (new_ee - ee)
        moved[:, 2] = np.maximum(moved[:, 2], cube_z)
        cube = np.where(held[:, None], moved, cube)
        ee, opening, grasp = new_ee, new_opening, new_grasp

    params = {
        "speed_gain": gain, "cruise_height": cruise, "via_toward": toward, "via_radius": via_r,
        "via_dwell": dwell, "hover_offset": hover, "grasp_attempt": attempt, "grasp_aimed": aimed,
        "hover_height": hover_z, "lift_height": lift, "wander_noise": wander,
    }  # fmt: skip
    return Trajectories(states, actions, params)


def lifted(traj: Trajectories, cfg: WorldConfig | None = None) -> np.ndarray:
    """(N, T) bool: the cube is held with its centre more than `lift_threshold` above the
    table top (robosuite Lift's `_check_success`, with the grasp required)."""
    cfg = WorldConfig() if cfg is None else cfg
    s = traj.states.astype(np.float64)
    return (s[..., GRASP] > 0.5) & (
        s[..., CUBE_POS.stop - 1] > cfg.table_height + cfg.lift_threshold
    )


def step_features(traj: Trajectories, cfg: WorldConfig | None = None) -> np.ndarray:
    """(N, T, 5) float64: the five features at every step, in the order of `FEATURES`."""
    s = traj.states.astype(np.float64)
    ee = s[..., EE_POS]
    d_cube = _norm(s[..., CUBE_POS] - ee)
    d_bottle = _norm(s[..., BOTTLE_POS] - ee)
    reach = 1.0 - np.tanh(REACH_SCALE * d_cube)
    shaped = reach + GRASP_REWARD * (s[..., GRASP] > 0.5)
    gt = np.where(lifted(traj, cfg), LIFT_REWARD, shaped)
    return np.stack([gt, _norm(s[..., EE_VEL]), ee[..., 2], d_bottle, d_cube], axis=-1)


def features(
    traj: Trajectories, cfg: WorldConfig | None = None, feature_set: str = "paper"
) -> np.ndarray:
    """(N, K) float64, the features of `FEATURE_SETS[feature_set]`. The paper's five
    (`data/utils.py`; K = 5 by default) are each a mean over time:

    - `gt_reward`: robosuite Lift's shaped reward, 2.25 while the cube is lifted, else
      1 − tanh(10·d_cube) + 0.25·grasp;
    - `speed`: ‖v_ee‖;
    - `height`: the ee's absolute z;
    - `distance_to_bottle`: ‖bottle − ee‖;
    - `distance_to_cube`: ‖cube − ee‖ (d_cube).

    `"rich"` appends `EXTRA_FEATURES` (K = 10), ours, for the study of richer worlds:

    - `gripper_opening`: the mean gripper opening (1 open, 0 closed);
    - `max_height`: the ee's highest absolute z over the trajectory;
    - `time_still`: the share of steps with ‖v_ee‖ < `STILL_SPEED` (pauses and dwells);
    - `time_near_bottle`: the share of steps with ‖bottle − ee‖ < `NEAR_BOTTLE`;
    - `final_distance_to_cube`: ‖cube − ee‖ at the last step.

    `cfg` gives the table height, cube size and lift threshold (default `WorldConfig()`)."""
    check_feature_set(feature_set)
    cfg = WorldConfig() if cfg is None else cfg
    per_step = step_features(traj, cfg)
    base = per_step.mean(axis=1)
    if feature_set == "paper":
        return base
    s = traj.states.astype(np.float64)
    extra = np.stack(
        [
            s[..., GRIPPER].mean(axis=1),
            s[..., EE_POS.stop - 1].max(axis=1),
            (per_step[..., 1] < STILL_SPEED).mean(axis=1),
            (per_step[..., 3] < NEAR_BOTTLE).mean(axis=1),
            per_step[:, -1, 4],
        ],
        axis=-1,
    )
    return np.concatenate([base, extra], axis=-1)


def check_feature_set(name: str) -> str:
    """`name`, or one error listing the feature sets."""
    return check_choice("feature set", name, tuple(FEATURE_SETS))
