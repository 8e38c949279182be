"""Perturbed scripted rollouts in Meta-World `button-press-v3`: a standalone script.

Yang et al. (CoRL 2024) also learn their latent space on Meta-World `button-press`, with the
features `height`, `velocity` and `distance` (official code, USC-Lira/language-preference-
learning, `pref_learning/utils.py`: `mw_feature_aspects`), from pools of SAC policies. This
script is a simulation in their place: every trajectory comes from Meta-World's own scripted
policy, `SawyerButtonPressV3Policy`, driven through random perturbations per trajectory. The
simulator, the task and the policy are Meta-World's (metaworld 3.1.1, MuJoCo 3.3.0); the
perturbations, and therefore the pool's distribution, are ours, not the paper's.

It imports only numpy, gymnasium, metaworld and the standard library (the last two lazily, so
that `alignlab.langfeedback.metaworld` can import its constants and `features` under any
MuJoCo), because metaworld 3.1.1 pins mujoco 3.3.0 and runs in an interpreter of its own:

    <mw-python> mw_rollouts.py --n N --seed S --horizon T --out pool.npz [--workers W]
                               [--perturb '{"speed": [0.5, 1.0], ...}']
    <mw-python> mw_rollouts.py --versions      # {"metaworld": ..., "mujoco": ..., ...}

**The task.** `gymnasium.make("Meta-World/MT1", env_name="button-press-v3", seed=S)`: MT1
draws 50 positions of the button's box (x in [-0.1, 0.1], y in [0.85, 0.9], z 0.115; the
button's observed position, its face, lies about 0.19 m nearer in y) from numpy's global RNG
seeded with S, and its `RandomTaskSelectWrapper` picks one of them at
every reset with the env's RNG. Trajectory i reseeds that RNG (`env.unwrapped.seed(s_i)`, s_i
from `SeedSequence([S, i])`) before its reset, and draws its perturbations from a child of the
same sequence; a reset restarts MuJoCo from scratch (`mj_resetData`), and the hand starts at
Meta-World's fixed (0, 0.4, 0.2). So trajectory i is a function of (S, i) alone, whatever the
number of workers or the trajectories before it in the same process.

**The controller** (per trajectory; the draws are returned in `params`):

1. *via* (with probability `via_prob`, 1 by default): the hand flies to a via point at a
   random height (`via_height`, the hand's absolute z) and a random distance from the button
   (`via_distance`, from the hand to the button's observed position), off to one side by a
   random angle (`via_angle`, radians from the button's front axis; widened where needed to
   keep the point inside the hand's y >= 0.4), and dwells there for a random number of steps
   (`via_dwell`). Height and distance at the via point are drawn independently, which keeps
   the `height` and `distance` features apart (see *Measured* for what they do without it).
2. then, with probability `press_prob`, Meta-World's scripted policy takes over (it aligns
   x and z with the button, backing away in y while it does, then pushes); otherwise the hand
   never presses and hovers at a second random point (`hover_height`, `hover_distance`,
   `hover_angle`, drawn like the via point) until the end.

Every command is a proportional move (gain 25, as in Meta-World's policies) or the policy's
action, clipped to [-1, 1] per axis and multiplied by the trajectory's `speed`; Gaussian noise
of a random scale (`noise`, per axis, in action units: 1 is 1 cm of mocap motion per step) is
then added and the action clipped again to [-1, 1] (Meta-World clips there too). The grip
command is always 0, as in the scripted policy. A slow trajectory may run out of time before it
presses.

**Observations** `obs (N, T, 43) float32`: at each step t, Meta-World's 39-d observation o_t
(the one the controller acts on) and the 4-d action a_t taken on it. o_t holds the hand
position (0:3), the gripper opening (3), the button's position (4:7) and quaternion (7:11),
zero padding (11:18), the previous frame's 18 values (18:36) and the goal (36:39). The
official code's comments (`data/utils.py`) describe a Meta-World state built from these values
plus MuJoCo's qpos and qvel; we keep Meta-World's 39 as they are and add nothing.

**Features** `feats (N, 3) float64`, `FEATURES`, each a mean over the T steps of o_t (computed
from the float32 observations, so `features(obs, dt)` on the returned array gives them back):
`height` = the hand's z; `velocity` = ‖hand_t − hand_{t−1}‖ / dt (dt = 0.0125 s, the env's;
0 at t = 0); `distance` = ‖hand − button‖ (slots 0:3 and 4:7). `success (N,)` is Meta-World's
`info["success"]` (the button within 2 cm of its pressed position) at any step.

**Measured** (seed 0, T = 120, 1,200 trajectories, default ranges; metaworld 3.1.1, MuJoCo
3.3.0, gymnasium 1.4.0, numpy 2.4.6):

| feature | mean | std | corr: height | velocity | distance |
|---|---|---|---|---|---|
| height (m) | 0.1128 | 0.0339 | 1 | −0.242 | 0.258 |
| velocity (m/s) | 0.4501 | 0.1021 | −0.242 | 1 | −0.005 |
| distance (m) | 0.2097 | 0.0399 | 0.258 | −0.005 | 1 |

72% of the trajectories hand over to the policy and 39% press the button (54% of those that
hand over). For contrast, 300 trajectories with only speed and noise perturbed (`via_prob` 0,
`press_prob` 1) all press, and their height and distance correlate at 0.90; with a via point
at a fixed distance (0.3 m, straight in front) at 0.50. The remaining correlations come from
the mix of pressing trajectories (lower, faster) and hovering ones.

Speed: about 2,300–2,700 steps/s on one core (the controller, Meta-World's policy and env; the
env alone steps at 3,000–5,000/s), plus 0.75–0.9 s to build the MT1 env in each process; the
1,200 trajectories took 62 s with `--workers 2` on 2 cores shared with other jobs (load 3–5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

#: bump when a change here changes the pools (it is part of the wrapper's cache key)
VERSION = 1
ENV_NAME = "button-press-v3"
FEATURES = ("height", "velocity", "distance")
MW_OBS_DIM = 39
ACTION_DIM = 4
OBS_DIM = MW_OBS_DIM + ACTION_DIM
HAND = slice(0, 3)
BUTTON = slice(4, 7)
ACTION = slice(MW_OBS_DIM, OBS_DIM)
MAX_HORIZON = 500  # Meta-World's max_path_length: a longer episode raises
HAND_Y_MIN = 0.40  # the hand's (and the mocap's) lower y bound in button-press-v3
GAIN = 25.0  # the proportional gain of Meta-World's scripted policies
ARRIVE = 0.01  # distance (m) at which the hand has reached its via point

#: the perturbations: (low, high) ranges of uniform draws, and two probabilities
DEFAULTS: dict = {
    "speed": (0.5, 1.0),
    "via_prob": 1.0,
    "via_height": (0.05, 0.25),
    "via_distance": (0.14, 0.35),
    "via_angle": (-1.3, 1.3),
    "via_dwell": (0, 25),
    "press_prob": 0.7,
    "hover_height": (0.05, 0.2),
    "hover_distance": (0.1, 0.3),
    "hover_angle": (-1.3, 1.3),
    "noise": (0.0, 0.3),
}
PROBS = ("via_prob", "press_prob")
RANGES = tuple(k for k in DEFAULTS if k not in PROBS)

VIA, DWELL, PRESS, HOVER = range(4)


def features(obs: np.ndarray, dt: float) -> np.ndarray:
    """(..., 3) float64: `FEATURES`, each a mean over the time axis of `obs (..., T, >=7)`."""
    o = np.asarray(obs).astype(np.float64)
    hand, button = o[..., HAND], o[..., BUTTON]
    vel = np.zeros(o.shape[:-1])
    vel[..., 1:] = np.linalg.norm(np.diff(hand, axis=-2), axis=-1) / dt
    dist = np.linalg.norm(hand - button, axis=-1)
    return np.stack([hand[..., 2], vel, dist], axis=-1).mean(axis=-2)


def check_perturb(perturb: dict | None) -> dict:
    """DEFAULTS updated by `perturb`; ValueError naming a bad key or range."""
    p = dict(DEFAULTS)
    for key, value in (perturb or {}).items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown perturbation {key!r}; valid: {', '.join(DEFAULTS)}")
        p[key] = value
    for key in RANGES:
        r = p[key]
        if len(r) != 2 or not float(r[0]) <= float(r[1]):
            raise ValueError(f"{key} must be a (low, high) pair with low <= high, got {r}")
        p[key] = (float(r[0]), float(r[1]))
    if p["speed"][0] < 0 or p["noise"][0] < 0 or p["via_dwell"][0] < 0:
        raise ValueError("speed, noise and via_dwell must be >= 0")
    p["via_dwell"] = (int(p["via_dwell"][0]), int(p["via_dwell"][1]))
    for key in PROBS:
        if not 0.0 <= float(p[key]) <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1], got {p[key]}")
        p[key] = float(p[key])
    return p


def versions() -> dict[str, str]:
    """The installed versions of what the pools depend on (no import of mujoco itself)."""
    from importlib.metadata import version

    return {k: version(k) for k in ("metaworld", "mujoco", "gymnasium", "numpy")}


def _make_env(seed: int):
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)

    return gym.make("Meta-World/MT1", env_name=ENV_NAME, seed=seed)


def _point(button: np.ndarray, height: float, distance: float, angle: float) -> np.ndarray:
    """The point at absolute `height` and `distance` from `button`, `angle` radians off the
    button's front (−y) axis, the angle widened where needed to keep y >= HAND_Y_MIN."""
    dz = height - button[2]
    r = np.sqrt(max(distance * distance - dz * dz, 0.0))
    room = button[1] - HAND_Y_MIN
    if r > room and abs(angle) < np.arccos(room / r):
        angle = float(np.copysign(np.arccos(room / r), angle))
    return np.array([button[0] + r * np.sin(angle), button[1] - r * np.cos(angle), height])


def _draw(rng: np.random.Generator, p: dict) -> dict:
    def u(key):
        return float(rng.uniform(*p[key]))

    q = {k: u(k) for k in ("speed", "via_height", "via_distance", "via_angle")}
    q["via_dwell"] = int(rng.integers(p["via_dwell"][0], p["via_dwell"][1] + 1))
    q["press"] = bool(rng.random() < p["press_prob"])
    q.update({k: u(k) for k in ("hover_height", "hover_distance", "hover_angle", "noise")})
    q["via"] = bool(rng.random() < p["via_prob"])
    return q


def rollout_one(env, policy, seed: int, index: int, horizon: int, p: dict):
    """Trajectory `index` of pool `seed`: (obs (T, 43) float32, params dict, success, dt)."""
    ss = np.random.SeedSequence([seed, index])
    env.unwrapped.seed(int(ss.generate_state(1)[0]))  # the task the wrapper picks at reset
    rng = np.random.default_rng(ss.spawn(1)[0])
    q = _draw(rng, p)
    xi = rng.standard_normal((horizon, 3))
    o, _ = env.reset()
    button0 = o[BUTTON].copy()
    via = _point(button0, q["via_height"], q["via_distance"], q["via_angle"])
    hover = _point(button0, q["hover_height"], q["hover_distance"], q["hover_angle"])
    out = np.empty((horizon, OBS_DIM), dtype=np.float32)
    a = np.zeros(ACTION_DIM)
    phase, dwell = (VIA, q["via_dwell"]) if q["via"] else (DWELL, 0)
    first_success = -1
    for t in range(horizon):
        hand = o[HAND]
        if phase == VIA and np.linalg.norm(via - hand) < ARRIVE:
            phase = DWELL
        if phase == DWELL:
            if dwell <= 0:
                phase = PRESS if q["press"] else HOVER
            dwell -= 1
        if phase == PRESS:
            move = policy.get_action(o)[:3]
        else:
            move = GAIN * ((hover if phase == HOVER else via) - hand)
        a[:3] = np.clip(q["speed"] * np.clip(move, -1.0, 1.0) + q["noise"] * xi[t], -1.0, 1.0)
        out[t, :MW_OBS_DIM] = o
        out[t, ACTION] = a
        o, _, _, _, info = env.step(a.copy())
        if first_success < 0 and info["success"]:
            first_success = t
    q["via_x"], q["via_y"] = float(via[0]), float(via[1])
    q["hover_x"], q["hover_y"] = float(hover[0]), float(hover[1])
    q["button_x"], q["button_y"], q["button_z"] = (float(v) for v in button0)
    q["first_success_step"] = first_success
    return out, q, first_success >= 0, float(env.unwrapped.dt)


_WORKER: dict = {}


# Meta-World's policies warn that their gain exceeds the action bounds, and gymnasium's checker
# that observations leave their degenerate box: expected, and silenced where they arise


def _init_worker(seed: int) -> None:
    from metaworld.policies import SawyerButtonPressV3Policy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _WORKER["env"] = _make_env(seed)
    _WORKER["policy"] = SawyerButtonPressV3Policy()


def _chunk(job: tuple) -> list:
    seed, start, stop, horizon, p = job
    env, policy = _WORKER["env"], _WORKER["policy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [rollout_one(env, policy, seed, i, horizon, p) for i in range(start, stop)]


def rollout(
    n: int, seed: int, horizon: int = 120, perturb: dict | None = None, workers: int = 1
) -> dict:
    """`n` trajectories of pool `seed` as arrays: obs, feats, success, dt, params (a dict of
    (N,) arrays), metaworld and mujoco (versions). Identical for any number of `workers`
    (processes, spawned; 1 runs here)."""
    if n < 1 or workers < 1:
        raise ValueError(f"n and workers must be >= 1, got n={n}, workers={workers}")
    if not 2 <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon must lie in [2, {MAX_HORIZON}], got {horizon}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    p = check_perturb(perturb)
    workers = min(workers, n)
    size = -(-n // (4 * workers))  # a few chunks per worker, for balance
    jobs = [(seed, s, min(n, s + size), horizon, p) for s in range(0, n, size)]
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(seed,)) as pool:
            parts = pool.map(_chunk, jobs, chunksize=1)
    else:
        _init_worker(seed)
        try:
            parts = [_chunk(job) for job in jobs]
        finally:
            _WORKER.pop("env").close()
    rows = [row for part in parts for row in part]
    dts = {row[3] for row in rows}
    if len(dts) != 1:
        raise RuntimeError(f"workers disagree on the env's dt: {sorted(dts)}")
    dt = dts.pop()
    obs = np.stack([row[0] for row in rows])
    v = versions()
    return {
        "obs": obs,
        "feats": features(obs, dt),
        "success": np.array([row[2] for row in rows], dtype=bool),
        "dt": np.float64(dt),
        "params": {k: np.array([row[1][k] for row in rows]) for k in rows[0][1]},
        "metaworld": np.array(v["metaworld"]),
        "mujoco": np.array(v["mujoco"]),
    }


def save(path: str | os.PathLike, pool: dict) -> None:
    """`pool` (as `rollout` returns it) as an npz of plain arrays (params as `param_<name>`),
    written to a temporary file in the same folder and renamed into place."""
    path = os.fspath(path)
    arrays = {k: np.asarray(v) for k, v in pool.items() if k != "params"}
    arrays.update({f"param_{k}": np.asarray(v) for k, v in pool["params"].items()})
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mw_rollouts.", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, help="number of trajectories")
    ap.add_argument("--seed", type=int, default=0, help="pool seed (MT1's and the draws')")
    ap.add_argument("--horizon", type=int, default=120, help="steps per trajectory")
    ap.add_argument("--out", help="the npz to write")
    ap.add_argument("--workers", type=int, default=1, help="processes")
    ap.add_argument("--perturb", default="{}", help="JSON: perturbation ranges to override")
    ap.add_argument("--versions", action="store_true", help="print the versions as JSON")
    args = ap.parse_args(argv)
    if args.versions:
        print(json.dumps(versions()))
        return 0
    if args.n is None or args.out is None:
        ap.error("--n and --out are required")
    try:
        perturb = json.loads(args.perturb)
        if not isinstance(perturb, dict):
            raise ValueError(f"--perturb must be a JSON object, got {args.perturb!r}")
        start = time.perf_counter()
        pool = rollout(args.n, args.seed, args.horizon, perturb, args.workers)
        seconds = time.perf_counter() - start
    except ValueError as e:  # bad arguments: one line, no traceback
        print(f"mw_rollouts: {e}", file=sys.stderr)
        return 2
    save(args.out, pool)
    summary = {
        "n": args.n, "horizon": args.horizon, "workers": args.workers,
        "seconds": round(seconds, 2), "steps_per_s": round(args.n * args.horizon / seconds),
        "success": float(pool["success"].mean()),
        "feature_mean": dict(zip(FEATURES, pool["feats"].mean(0).round(4).tolist())),
        "feature_std": dict(zip(FEATURES, pool["feats"].std(0).round(4).tolist())),
        "feature_corr": np.corrcoef(pool["feats"].T).round(3).tolist(),
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    # run as a script, this folder leads sys.path, and its metaworld.py (the wrapper) would
    # shadow the metaworld package (spawned workers inherit the cleaned path)
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.exit(main())
