"""ESR on CPU: batched numpy environments against a loop over single gymnasium environments,
and the learner's update rate, in one run.

1. Obstacle gridworld (5x5, horizon 50, noise 0.2), env-steps per second, N in (16, 64, 256),
   2 and 10 boxes. One env-step is the human's eps-greedy action + the robot's action + the
   step + the observation:
   - vectorised: `VecGridWorld(N)`, per lockstep step `human_act(rng)`, N uniform robot
     actions, `step(a_R, a_H)`, `observe()` (an (N, 2 n^2) batch);
   - loop: N `GridWorldEnv`s, per lockstep step N uniform robot actions (drawn in one call, as
     a batched robot policy would), then for each env `env.step(a)` (the human acts inside,
     from the env's own generator; the observation comes back), and `np.stack` of the N
     observations into the batch a robot acts on.
   Each measurement runs whole episodes from `reset` (resets untimed), enough of them for
   about the same number of env-steps at every N.
2. Overcooked (horizon 400, cook time 20, scripted human with epsilon 0.1), env-steps per
   second for the three layouts, N in (16, 64):
   - vectorised: `VecOvercooked(layout, N)`, per step `ScriptedHuman.act(env, rng)`, N
     uniform robot actions, `step`, `observe()`;
   - loop: N `OvercookedEnv`s, `env.step(a)` (the scripted human acts inside on the env's
     `get_state()`), observations stacked as above.
   Both sides start from the same mid-episode states (the vectorised env is advanced 100 random
   steps and every single env loads its row with `set_state`) and then step on without reset.
3. ESR training updates per second, 1 thread by default: `AgentConfig(batch_size=128,
   repr_lr=1e-3)` (hidden (128, 128), repr_dim 32), `QLearner` + `ESRRepresentation` on the
   5x5 gridworld (5 boxes; 125 robot, 5 human actions) and on cramped_room (6 and 6), with a
   replay buffer (`train.ReplayBuffer`) of random-robot episodes (`train.rollout` +
   `ReplayBuffer.add_rollout`: 4 x 32 gridworld episodes, 16 Overcooked ones; Overcooked as
   `overcooked_human.AssistedOvercooked`, the env with the scripted human as `human_act`).
   One update is `to_torch(buffer.sample(128, rng, 0.9))`, `rep.update` (contrastive step,
   returns the reward) and `learner.q_update` on that reward, as one iteration of
   `train_assistant`'s loop; sampling alone is timed too. For reference, AvE's proxy:
   `ave_reward(lambda m: VecGridWorld(m, num_boxes=5), state, rng, cfg)` calls per second
   for a state of N = 16 gridworlds (20 simulated rollouts of 5 steps each).

Checks first: from the same states and actions, the vectorised and the single environments
give the same observations and rewards (gridworld: one whole episode per box count, N = 16;
Overcooked: 20 steps per layout), so both sides do the same work.

Timing: warm-up steps (5 lockstep steps, 10 updates, 5 AvE calls), then the sides are interleaved within each repeat (so drifts in machine
load hit both alike) and the median of the repeats is reported; ratios (vectorised / loop)
are of medians measured side by side in the same process, so they are more trustworthy than
the absolute rates. Each measurement also records its CPU use (process CPU seconds per wall
second: about 1 on a quiet machine with one thread); below 0.75 it shared a core with other
work, and those measurements are listed under "contention" in the JSON. The machine's load
average at the start and end and the process's peak RSS (all sides together) are printed.

Sizes per measurement (see PRESETS): 12800 gridworld env-steps, 1024 Overcooked env-steps,
50 ESR updates, 100 AvE calls; 5 repeats; about 40 s in all. --quick: 1600 (at least one
episode), 128, 5, 10; 3 repeats; about 10 s, for tests (noisy numbers).

Usage: python benchmarks/esr_speed.py [--quick] [--threads N] [--repeats N] [--out PATH]
Writes docs/img/esr_benchmark.json by default.
"""

import argparse
import os
import sys


def _threads_arg() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_known_args(sys.argv[1:])[0].threads


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(_threads_arg())  # before numpy and torch start their pools

import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import _bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.core.io import atomic_write_json  # noqa: E402
from alignlab.esr.agent import AgentConfig, ESRRepresentation, QLearner, ave_reward  # noqa: E402
from alignlab.esr.gridworld import VecGridWorld  # noqa: E402
from alignlab.esr.gridworld_env import GridWorldEnv  # noqa: E402
from alignlab.esr.overcooked import LAYOUTS, VecOvercooked  # noqa: E402
from alignlab.esr.overcooked_env import OvercookedEnv  # noqa: E402
from alignlab.esr.overcooked_human import AssistedOvercooked, ScriptedHuman  # noqa: E402
from alignlab.esr.train import RandomRobot, ReplayBuffer, rollout  # noqa: E402
from alignlab.rl import to_torch  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img" / "esr_benchmark.json"
GRID_NS, GRID_BOXES = (16, 64, 256), (2, 10)
OC_NS = (16, 64)
OC_EPSILON, OC_ADVANCE, CHECK_STEPS = 0.1, 100, 20
AVE_STATES, AVE_BOXES = 16, 5
CONTENDED_CPU_USE = 0.75
SEED = 0

# per preset: env-steps per gridworld / Overcooked measurement, ESR updates and AvE calls per
# measurement, repeats, warm-up (lockstep steps / updates / calls)
PRESETS = {
    "full": {"grid": 12800, "oc": 1024, "esr": 50, "ave": 100, "repeats": 5, "warmup": 5},
    "quick": {"grid": 1600, "oc": 128, "esr": 5, "ave": 10, "repeats": 3, "warmup": 2},
}


def measure(fn) -> tuple[float, float]:
    """fn() returns the seconds to count (the whole call if None); also the call's CPU use."""
    t0, c0 = time.perf_counter(), time.process_time()
    timed = fn()
    wall = time.perf_counter() - t0
    return (wall if timed is None else timed), (time.process_time() - c0) / wall


def interleaved(fns: dict, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Each fn once per repeat, in turn; seconds and CPU use per repeat."""
    out = {k: {"s": [], "cpu": []} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            s, cpu = measure(fn)
            out[k]["s"].append(s)
            out[k]["cpu"].append(cpu)
    return out


def rate(times: dict[str, list[float]], work: int, unit: str) -> dict:
    med = statistics.median(times["s"])
    return {
        f"{unit}_per_s": work / med,
        "s_per_measurement": med,
        "work_per_measurement": work,
        "s_repeats": times["s"],
        "cpu_use_repeats": times["cpu"],
    }


# ---- 1. gridworld ---------------------------------------------------------------------------


def grid_state_row(state: dict, i: int) -> dict:
    return {"human": state["human"][i], "boxes": state["boxes"][i], "goal": state["goal"][i]}


def check_grid(boxes: int, n: int = 16) -> dict:
    """Same state, same actions: same observations (the vectorised one has 2 extra features)
    and rewards, for one whole episode."""
    rng = np.random.default_rng(SEED)
    vec = VecGridWorld(n, num_boxes=boxes)
    vec.reset(rng)
    state = vec.get_state()
    envs = [GridWorldEnv(num_boxes=boxes) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i, options={"state": grid_state_row(state, i)})
    d = 2 * vec.size**2
    obs_err = rew_err = 0.0
    for _ in range(vec.horizon):
        a_h, a_r = vec.human_act(rng), rng.integers(vec.robot_actions, size=n)
        rew = vec.step(a_r, a_h)
        out = [env.joint_step(r, h) for env, r, h in zip(envs, a_r, a_h)]
        obs_err = max(
            obs_err, float(np.abs(vec.observe()[:, :d] - np.stack([o[0] for o in out])).max())
        )
        rew_err = max(rew_err, float(np.abs(rew - np.array([o[1] for o in out])).max()))
    assert obs_err == 0 and rew_err == 0, (boxes, obs_err, rew_err)
    return {
        "steps": vec.horizon,
        "num_envs": n,
        "obs_max_abs_err": obs_err,
        "rew_max_abs_err": rew_err,
    }


def lockstep(vec, human_act, rng):
    """k lockstep steps of a vectorised env: the human's actions, N uniform robot actions,
    the step and the observation batch."""

    def steps(k: int) -> None:
        for _ in range(k):
            a_h = human_act(rng)
            vec.step(rng.integers(vec.robot_actions, size=vec.num_envs), a_h)
            vec.observe()

    return steps


def one_at_a_time(envs, rng, n_act):
    """k steps of single envs, one env at a time (the human acts inside each), the
    observations stacked into the batch a robot would act on."""

    def steps(k: int) -> None:
        for _ in range(k):
            a_r = rng.integers(n_act, size=len(envs))
            np.stack([env.step(a)[0] for env, a in zip(envs, a_r)])

    return steps


def side_by_side(fns: dict, work: int, repeats: int, **labels) -> dict:
    """The vectorised and the loop side timed interleaved: their env-step rates and ratio."""
    t = interleaved(fns, repeats)
    vec, loop = rate(t["vectorised"], work, "env_steps"), rate(t["loop"], work, "env_steps")
    ratio = vec["env_steps_per_s"] / loop["env_steps_per_s"]
    return {**labels, "vectorised": vec, "loop": loop, "ratio": ratio}


def grid_sides(n: int, boxes: int, env_steps: int, warmup: int) -> tuple[dict, int]:
    vec = VecGridWorld(n, num_boxes=boxes)
    envs = [GridWorldEnv(num_boxes=boxes) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=SEED + 1000 + i)
    rng_v, rng_l = np.random.default_rng(SEED + 1), np.random.default_rng(SEED + 2)
    horizon, n_act = vec.horizon, vec.robot_actions
    episodes = max(1, env_steps // (n * horizon))

    vec_steps = lockstep(vec, vec.human_act, rng_v)
    loop_steps = one_at_a_time(envs, rng_l, n_act)

    def episodes_of(reset, steps):
        def run() -> float:
            total = 0.0
            for _ in range(episodes):
                reset()
                t0 = time.perf_counter()
                steps(horizon)
                total += time.perf_counter() - t0
            return total

        return run

    def reset_loop() -> None:
        for env in envs:
            env.reset()

    vec.reset(rng_v)
    vec_steps(warmup)
    reset_loop()
    loop_steps(warmup)
    fns = {
        "vectorised": episodes_of(lambda: vec.reset(rng_v), vec_steps),
        "loop": episodes_of(reset_loop, loop_steps),
    }
    return fns, episodes * horizon * n


# ---- 2. Overcooked --------------------------------------------------------------------------


class OvercookedSides:
    """The vectorised env and max(OC_NS) single envs of one layout, built once (each
    `OvercookedEnv` builds its own scripted human's navigation tables)."""

    def __init__(self, layout: str):
        self.layout = layout
        self.human = ScriptedHuman(layout, OC_EPSILON)
        t0 = time.perf_counter()
        self.envs = [OvercookedEnv(layout, human_epsilon=OC_EPSILON) for _ in range(max(OC_NS))]
        self.build_s_per_env = (time.perf_counter() - t0) / len(self.envs)
        for i, env in enumerate(self.envs):
            env.reset(seed=SEED + 2000 + i)

    def start(self, n: int, rng: np.random.Generator) -> tuple[VecOvercooked, list]:
        """A vectorised env advanced OC_ADVANCE random-robot steps; the first n single envs
        loaded with its rows."""
        vec = VecOvercooked(self.layout, n)
        for _ in range(OC_ADVANCE):
            vec.step(rng.integers(vec.robot_actions, size=n), self.human.act(vec, rng))
        state = vec.get_state()
        envs = self.envs[:n]
        for i, env in enumerate(envs):
            env.set_state({k: (v if k == "t" else v[i : i + 1]) for k, v in state.items()})
        return vec, envs

    def check(self, n: int = 16) -> dict:
        rng = np.random.default_rng(SEED)
        vec, envs = self.start(n, rng)
        obs_err = rew_err = 0.0
        for _ in range(CHECK_STEPS):
            a_h, a_r = self.human.act(vec, rng), rng.integers(vec.robot_actions, size=n)
            rew = vec.step(a_r, a_h)
            out = [env.joint_step(r, h) for env, r, h in zip(envs, a_r, a_h)]
            obs_err = max(
                obs_err, float(np.abs(vec.observe() - np.stack([o[0] for o in out])).max())
            )
            rew_err = max(rew_err, float(np.abs(rew - np.array([o[1] for o in out])).max()))
        assert obs_err == 0 and rew_err == 0, (self.layout, obs_err, rew_err)
        return {
            "steps": CHECK_STEPS,
            "num_envs": n,
            "obs_max_abs_err": obs_err,
            "rew_max_abs_err": rew_err,
        }

    def sides(self, n: int, env_steps: int, warmup: int) -> tuple[dict, int]:
        rng_v, rng_l = np.random.default_rng(SEED + 3), np.random.default_rng(SEED + 4)
        vec, envs = self.start(n, np.random.default_rng(SEED + 5))
        steps = max(1, env_steps // n)
        n_act = vec.robot_actions

        vec_steps = lockstep(vec, lambda rng: self.human.act(vec, rng), rng_v)
        loop_steps = one_at_a_time(envs[:n], rng_l, n_act)

        vec_steps(warmup)
        loop_steps(warmup)
        return {
            "vectorised": lambda: vec_steps(steps),
            "loop": lambda: loop_steps(steps),
        }, steps * n


# ---- 3. ESR updates, AvE's proxy ------------------------------------------------------------


def esr_update_fns(name: str, make_env, cfg: AgentConfig, num_envs: int, epochs: int) -> tuple:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    env = make_env(num_envs)
    learner = QLearner(env.obs_dim, env.robot_actions, cfg)
    rep = ESRRepresentation(env.obs_dim, env.robot_actions, env.human_actions, cfg)
    buffer = ReplayBuffer()
    for _ in range(epochs):
        buffer.add_rollout(rollout(env, RandomRobot(), rng))
    sizes = {
        "env": name,
        "obs_dim": env.obs_dim,
        "robot_actions": env.robot_actions,
        "human_actions": env.human_actions,
        "buffer_states": len(buffer),
        "buffer_episodes": buffer.num_episodes,
    }

    def sample() -> dict:
        return to_torch(buffer.sample(cfg.batch_size, rng, cfg.gamma))

    def update() -> None:
        b = sample()
        s, a_r, a_h = b["obs"], b["action"][:, 0], b["action"][:, 1]
        _, reward = rep.update(s, a_r, a_h, b["goal"])
        learner.q_update(s, a_r, reward, b["next_obs"])

    return update, sample, sizes


def repeat(fn, k: int):
    def run() -> None:
        for _ in range(k):
            fn()

    return run


# ---- report ---------------------------------------------------------------------------------


def markdown(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table, the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(quick: bool, threads: int, repeats: int | None, out: pathlib.Path) -> dict:
    wall0 = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(threads)
    p = PRESETS["quick" if quick else "full"]
    repeats = repeats or p["repeats"]
    warmup = p["warmup"]
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_start": load_start,
    }
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, load average "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; numpy {np.__version__}, "
        f"torch {torch.__version__}; {threads} thread(s); median of {repeats} repeats"
    )

    section_s, section_t0 = {}, time.perf_counter()
    # checks: both sides compute the same thing
    checks = {"gridworld": {b: check_grid(b) for b in GRID_BOXES}}
    oc = {layout: OvercookedSides(layout) for layout in LAYOUTS}
    oc_build_s = {layout: s.build_s_per_env for layout, s in oc.items()}
    checks["overcooked"] = {layout: s.check() for layout, s in oc.items()}
    print(
        "checks: vectorised and single envs give identical observations and rewards from the "
        f"same states and actions (gridworld {', '.join(f'{b} boxes' for b in GRID_BOXES)}: one "
        f"episode of 16 envs; Overcooked {', '.join(LAYOUTS)}: {CHECK_STEPS} steps of 16 envs)"
    )

    section_s["checks"] = time.perf_counter() - section_t0
    section_t0 = time.perf_counter()
    # 1. gridworld
    grid = []
    for boxes in GRID_BOXES:
        for n in GRID_NS:
            fns, work = grid_sides(n, boxes, p["grid"], warmup)
            grid.append(side_by_side(fns, work, repeats, num_boxes=boxes, num_envs=n))

    section_s["gridworld"] = time.perf_counter() - section_t0
    section_t0 = time.perf_counter()
    # 2. Overcooked
    overcooked = []
    for layout, sides in oc.items():
        for n in OC_NS:
            fns, work = sides.sides(n, p["oc"], warmup)
            overcooked.append(side_by_side(fns, work, repeats, layout=layout, num_envs=n))
    del oc

    section_s["overcooked"] = time.perf_counter() - section_t0
    section_t0 = time.perf_counter()
    # 3. ESR updates and AvE's proxy
    cfg = AgentConfig(batch_size=128, repr_lr=1e-3)
    envs = {
        "gridworld 5x5": (lambda m: VecGridWorld(m, num_boxes=AVE_BOXES), 32, 4),
        "cramped_room": (lambda m: AssistedOvercooked("cramped_room", m, 400, OC_EPSILON), 16, 1),
    }
    esr = []
    for name, (make_env, num_envs, epochs) in envs.items():
        update, sample, sizes = esr_update_fns(name, make_env, cfg, num_envs, epochs)
        repeat(update, warmup * 2)()
        t = interleaved(
            {"update": repeat(update, p["esr"]), "sample": repeat(sample, p["esr"])}, repeats
        )
        full, samp = rate(t["update"], p["esr"], "updates"), rate(t["sample"], p["esr"], "samples")
        esr.append(
            {
                **sizes,
                "update": full,
                "sample": samp,
                "ms_per_update": 1e3 * full["s_per_measurement"] / p["esr"],
                "sample_ms": 1e3 * samp["s_per_measurement"] / p["esr"],
                "sample_share": samp["s_per_measurement"] / full["s_per_measurement"],
            }
        )
    rng = np.random.default_rng(SEED)
    grid_env = VecGridWorld(AVE_STATES, num_boxes=AVE_BOXES)
    grid_env.reset(rng)
    state = grid_env.get_state()

    def ave_call() -> None:
        ave_reward(lambda m: VecGridWorld(m, num_boxes=AVE_BOXES), state, rng, cfg)

    repeat(ave_call, warmup)()
    t = interleaved({"ave": repeat(ave_call, p["ave"])}, repeats)
    ave = rate(t["ave"], p["ave"], "calls")
    ave["states_per_s"] = ave["calls_per_s"] * AVE_STATES
    ave["ms_per_call"] = 1e3 * ave["s_per_measurement"] / p["ave"]

    section_s["esr_ave"] = time.perf_counter() - section_t0
    section_t0 = time.perf_counter()

    # report
    def cpu(r: dict) -> str:
        return f"{statistics.median(r['cpu_use_repeats']):.2f}"

    print(
        f"\n1. obstacle gridworld 5x5, env-steps/s (human + robot action + step + observation); "
        f"{p['grid']} env-steps per measurement, whole episodes of 50; ratio = vectorised / loop"
    )
    print(
        markdown(
            ["boxes", "N", "VecGridWorld", "loop of GridWorldEnv", "ratio", "CPU vec / loop"],
            [
                [
                    str(r["num_boxes"]),
                    str(r["num_envs"]),
                    f"{r['vectorised']['env_steps_per_s']:,.0f}",
                    f"{r['loop']['env_steps_per_s']:,.0f}",
                    f"{r['ratio']:.2f}x",
                    f"{cpu(r['vectorised'])} / {cpu(r['loop'])}",
                ]
                for r in grid
            ],
        )
    )
    print(
        f"\n2. Overcooked, env-steps/s (scripted human, epsilon {OC_EPSILON}); about {p['oc']} "
        "env-steps per measurement from mid-episode states; ratio = vectorised / loop"
    )
    print(
        markdown(
            ["layout", "N", "VecOvercooked", "loop of OvercookedEnv", "ratio", "CPU vec / loop"],
            [
                [
                    r["layout"],
                    str(r["num_envs"]),
                    f"{r['vectorised']['env_steps_per_s']:,.0f}",
                    f"{r['loop']['env_steps_per_s']:,.0f}",
                    f"{r['ratio']:.2f}x",
                    f"{cpu(r['vectorised'])} / {cpu(r['loop'])}",
                ]
                for r in overcooked
            ],
        )
    )
    print(
        f"\n3. ESR updates (sample + to_torch + rep.update + learner.q_update), batch "
        f"{cfg.batch_size}, hidden {cfg.hidden}, repr {cfg.repr_dim}; {p['esr']} updates per "
        "measurement"
    )
    print(
        markdown(
            [
                "env",
                "obs dim",
                "robot / human actions",
                "updates/s",
                "ms/update",
                "sample ms",
                "CPU",
            ],
            [
                [
                    r["env"],
                    str(r["obs_dim"]),
                    f"{r['robot_actions']} / {r['human_actions']}",
                    f"{r['update']['updates_per_s']:.0f}",
                    f"{r['ms_per_update']:.2f}",
                    f"{r['sample_ms']:.3f}",
                    cpu(r["update"]),
                ]
                for r in esr
            ],
        )
    )
    print(
        f"\nAvE proxy, gridworld {AVE_BOXES} boxes, {AVE_STATES} states x {cfg.ave_rollouts} "
        f"rollouts x {cfg.ave_length} steps per call: {ave['calls_per_s']:.0f} calls/s "
        f"({ave['ms_per_call']:.2f} ms/call, {ave['states_per_s']:,.0f} states/s; CPU {cpu(ave)})"
    )

    machine["load_avg_end"] = os.getloadavg()
    machine["peak_rss_mb"] = _bench.peak_rss_mb()
    measured = [
        *(
            (f"gridworld/{r['num_boxes']}boxes/N{r['num_envs']}/{s}", r[s])
            for r in grid
            for s in ("vectorised", "loop")
        ),
        *(
            (f"overcooked/{r['layout']}/N{r['num_envs']}/{s}", r[s])
            for r in overcooked
            for s in ("vectorised", "loop")
        ),
        *((f"esr/{r['env']}/{s}", r[s]) for r in esr for s in ("update", "sample")),
        ("ave", ave),
    ]
    floor = CONTENDED_CPU_USE * threads
    low = {
        k: round(min(r["cpu_use_repeats"]), 2)
        for k, r in measured
        if min(r["cpu_use_repeats"]) < floor
    }
    if low:
        print(
            f"\nWARNING: {len(low)} measurements got less than {floor:.2f} CPU s per wall s "
            f"(other work on the cores): {low}"
        )
    result = {
        "quick": quick,
        "machine": machine,
        "sizes": {
            "preset": p,
            "repeats": repeats,
            "gridworld": {
                "size": 5,
                "horizon": 50,
                "noise": 0.2,
                "num_envs": GRID_NS,
                "num_boxes": GRID_BOXES,
            },
            "overcooked": {
                "horizon": 400,
                "cook_time": 20,
                "human_epsilon": OC_EPSILON,
                "num_envs": OC_NS,
                "advance_steps": OC_ADVANCE,
                "build_s_per_single_env": oc_build_s,
            },
            "agent": {
                "batch_size": cfg.batch_size,
                "hidden": list(cfg.hidden),
                "repr_dim": cfg.repr_dim,
                "repr_lr": cfg.repr_lr,
                "gamma": cfg.gamma,
            },
            "ave": {
                "states": AVE_STATES,
                "num_boxes": AVE_BOXES,
                "rollouts": cfg.ave_rollouts,
                "length": cfg.ave_length,
            },
        },
        "checks": checks,
        "gridworld": grid,
        "overcooked": overcooked,
        "esr_updates": esr,
        "ave_proxy": ave,
        "contention": {"cpu_use_floor": floor, "contended": low},
        "section_wall_s": section_s,
        "wall_s": time.perf_counter() - wall0,
    }
    atomic_write_json(out, result)
    print(
        f"\nload average at end {machine['load_avg_end'][0]:.2f}; peak RSS "
        f"{machine['peak_rss_mb']:.0f} MB (this process, all sides); wrote {out} "
        f"({result['wall_s']:.1f} s)"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a ~10 s run (tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument(
        "--out", type=pathlib.Path, default=OUT, help=f"JSON output (default {OUT})"
    )
    args = parser.parse_args()
    main(args.quick, args.threads, args.repeats, args.out)
