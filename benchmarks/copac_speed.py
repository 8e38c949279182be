"""CopAC on CPU: SAC gradient updates per second, alignlab.rl.sac against Stable-Baselines3
2.9's `SAC.train`, side by side in one run; then CopAC's Q-maximisation (`qmax_section`).

Needs stable-baselines3 (the anchors venv, where alignlab is installed editable):

    /work/anchors-venv/bin/python benchmarks/copac_speed.py [--quick] [--threads 1 2]
        [--archs 32x32 256x256] [--repeats N] [--out PATH]

1. SAC updates/s. Both sides on Pendulum-v1 (obs 3, action 1), SB3's defaults (Adam 3e-4,
   batch 256, tau 0.005, gamma 0.99, ent_coef "auto", buffer of 1e6 transitions), hidden widths
   --archs for the actor and both critics, torch threads --threads (torch.set_num_threads, one
   setting after another in this process). The same torch seed gives both sides the same
   initial weights (checked). Both replay buffers hold the same 10,000 transitions (uniform
   random actions on Pendulum), so one update is the same work on both sides:
   - SB3: `model.train(gradient_steps=U, batch_size=256)`, logger configured with no output
     (SB3's cheapest), which per step samples its buffer (np.random), runs the temperature,
     critic and actor steps and the Polyak update;
   - ours: `sac.train(U, rng)`, the same steps on minibatches drawn with `rng`.
   Before timing, one update of each side on the same batch and torch seed is compared (the
   largest difference in losses and weights; tests/rl/test_sac.py asserts 1e-6 and, with SB3's
   non-fused Adam, bitwise equality). Timing: --warmup updates per side, then --repeats
   measurements of U updates per side, the sides interleaved within each repeat (so drifts in
   machine load hit both alike); updates/s = U / median seconds; the ratio (ours / SB3) is of
   medians measured side by side, so it is more trustworthy than the absolute rates. Each
   measurement also records its CPU use (process CPU seconds per wall second): about 1 on a
   quiet machine with one thread; below 0.75 it shared a core with other work, and is listed
   under "contention" in the JSON.
2. Memory: each side alone in a fresh subprocess (first --threads value): imports and data,
   then build, fill the buffer, warm-up + U updates; the process's peak RSS and the RSS that
   building and training added (peak minus VmRSS before them), from /proc/self/status
   (VmHWM, VmRSS). Not resource.getrusage's ru_maxrss there: Linux keeps it across exec, so a
   child reports its parent's peak if that was higher (it is in the JSON too, as is this
   process's own ru_maxrss). Peak RSS is mostly imports (torch for both; SB3 adds its own,
   pandas and matplotlib among them).
3. CopAC's Q-maximisation: `qmax_section`, rows of its own, appended to the JSON as "qmax".

Sizes: U = 100 updates per measurement at widths <= 64, 30 above; 5 repeats, 10 warm-up
updates. --quick: U = 20 / 6, 3 repeats, 3 warm-up updates (noisy numbers, for a smoke run).

Writes docs/img/copac_benchmark.json by default.
"""

from __future__ import annotations

import argparse
import os
import sys


def _max_threads() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    return max(parser.parse_known_args(sys.argv[1:])[0].threads)


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(_max_threads())  # before numpy and torch start their pools

import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.rl.sac import SAC, SACConfig  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img" / "copac_benchmark.json"
ENV_ID, OBS_DIM, ACTION_DIM = "Pendulum-v1", 3, 1
BATCH, TRANSITIONS, SEED = 256, 10_000, 0
CONTENDED_CPU_USE = 0.75
PRESETS = {
    "full": {"small": 100, "large": 30, "repeats": 5, "warmup": 10},
    "quick": {"small": 20, "large": 6, "repeats": 3, "warmup": 3},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer updates and repeats (~20 s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (1 2)")
    p.add_argument("--archs", nargs="+", default=["32x32", "256x256"], help="hidden widths")
    p.add_argument("--repeats", type=int, default=None, help="measurements per side (5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates per side (10)")
    p.add_argument("--updates", type=int, default=None, help="updates per measurement")
    p.add_argument("--out", type=pathlib.Path, default=OUT, help=f"JSON path ({OUT.name})")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # memory worker: side
    a = p.parse_args(argv)
    preset = PRESETS["quick" if a.quick else "full"]
    a.repeats = a.repeats or preset["repeats"]
    a.warmup = preset["warmup"] if a.warmup is None else a.warmup
    a.archs = [tuple(int(w) for w in arch.split("x")) for arch in a.archs]
    a.preset = preset
    return a


def updates_per_measurement(a, arch) -> int:
    return a.updates or a.preset["small" if max(arch) <= 64 else "large"]


# ---- the two sides ------------------------------------------------------------------------------


def transitions() -> dict[str, np.ndarray]:
    """TRANSITIONS steps of Pendulum under uniform random actions (in [-1, 1] scale), with
    `terminated` (never true on Pendulum) as done."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    rng = np.random.default_rng(SEED)
    obs, _ = env.reset(seed=SEED)
    out = {k: [] for k in ("obs", "next_obs", "action", "reward", "done")}
    for _ in range(TRANSITIONS):
        scaled = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
        nxt, reward, term, trunc, _ = env.step(2.0 * scaled)
        for k, v in zip(out, (obs, nxt, scaled, reward, term)):
            out[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    env.close()
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def build_sb3(arch, data):
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    torch.manual_seed(SEED)
    model = SB3SAC(
        "MlpPolicy",
        gym.make(ENV_ID),
        policy_kwargs={"net_arch": list(arch)},
        batch_size=BATCH,
        device="cpu",
    )
    model.set_logger(configure(None, [""]))
    rb, n = model.replay_buffer, TRANSITIONS
    rb.observations[:n, 0] = data["obs"]
    rb.next_observations[:n, 0] = data["next_obs"]
    rb.actions[:n, 0] = data["action"]
    rb.rewards[:n, 0] = data["reward"]
    rb.dones[:n, 0] = data["done"]
    rb.pos = n
    return model


def build_ours(arch, data) -> SAC:
    torch.manual_seed(SEED)
    sac = SAC(
        OBS_DIM,
        ACTION_DIM,
        SACConfig(net_arch=arch, batch_size=BATCH),
        action_low=-2.0,
        action_high=2.0,
    )
    sac.replay.add(data["obs"], data["next_obs"], data["action"], data["reward"], data["done"])
    return sac


def sb3_tensors(model) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("actor", "critic", "critic_target"):
        for k, v in getattr(model, name).state_dict().items():
            out[f"{name}.{k.replace('qf', 'q_networks.')}"] = v
    out["log_ent_coef"] = model.log_ent_coef.detach()
    return out


def check(arch, data) -> dict:
    """Same initial weights from the same seed; then one update of each side on the same batch
    and torch seed: the largest differences in losses and weights."""
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    model, ours = build_sb3(arch, data), build_ours(arch, data)
    mine, theirs = ours.state_tensors(), sb3_tensors(model)
    same_init = all(torch.equal(mine[k], theirs[k]) for k in mine)
    batch = ours.replay.sample(BATCH, np.random.default_rng(SEED))
    samples = ReplayBufferSamples(
        *(
            t.contiguous()
            for t in (
                batch.observations,
                batch.actions,
                batch.next_observations,
                batch.dones,
                batch.rewards,
            )
        )
    )
    model.replay_buffer.sample = lambda *a, **k: samples
    torch.manual_seed(SEED + 1)
    model.train(gradient_steps=1, batch_size=BATCH)
    torch.manual_seed(SEED + 1)
    got = ours.train_step(batch)
    logged = model.logger.name_to_value
    loss_err = max(abs(got[k] - float(logged[f"train/{k}"])) for k in got)
    mine, theirs = ours.state_tensors(), sb3_tensors(model)
    weight_err = max(float((mine[k] - theirs[k]).abs().max()) for k in mine)
    return {
        "same_initial_weights": same_init,
        "loss_max_abs_err": loss_err,
        "weight_max_abs_err": weight_err,
    }


def measure(fn) -> tuple[float, float]:
    """Seconds of fn() and its CPU use (process CPU seconds per wall second)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - t0
    return wall, (time.process_time() - c0) / wall


def side_by_side(arch, threads: int, data, a) -> dict:
    torch.set_num_threads(threads)
    u = updates_per_measurement(a, arch)
    model, ours = build_sb3(arch, data), build_ours(arch, data)
    rng = np.random.default_rng(SEED)
    sides = {
        "sb3": lambda n: model.train(gradient_steps=n, batch_size=BATCH),
        "ours": lambda n: ours.train(n, rng),
    }
    for fn in sides.values():
        fn(a.warmup)
    times = {k: {"s": [], "cpu": []} for k in sides}
    for _ in range(a.repeats):
        for k, fn in sides.items():
            s, cpu = measure(lambda fn=fn: fn(u))
            times[k]["s"].append(s)
            times[k]["cpu"].append(cpu)
    row = {"net_arch": list(arch), "threads": threads, "updates_per_measurement": u}
    for k, t in times.items():
        med = statistics.median(t["s"])
        row[k] = {
            "updates_per_s": u / med,
            "ms_per_update": 1e3 * med / u,
            "s_repeats": t["s"],
            "cpu_use_repeats": t["cpu"],
            "contended": statistics.median(t["cpu"]) < CONTENDED_CPU_USE,
        }
    row["ratio"] = row["ours"]["updates_per_s"] / row["sb3"]["updates_per_s"]
    return row


# ---- memory: each side alone ---------------------------------------------------------------------


def proc_status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_worker(side: str, a) -> dict:
    """One side alone: imports and data first, then build + warm-up + U updates."""
    arch = a.archs[0]
    torch.set_num_threads(a.threads[0])
    if side == "sb3":
        import stable_baselines3  # noqa: F401  (its imports count in the peak, not in training)
    data = transitions()
    before = proc_status_kb("VmRSS")
    n = a.warmup + updates_per_measurement(a, arch)
    if side == "sb3":
        build_sb3(arch, data).train(gradient_steps=n, batch_size=BATCH)
    else:
        build_ours(arch, data).train(n, np.random.default_rng(SEED))
    peak = proc_status_kb("VmHWM")
    return {
        "peak_rss_mb": peak / 1024,
        "training_rss_mb": (peak - before) / 1024,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def memory(a) -> list[dict]:
    rows = []
    for arch in a.archs:
        row = {"net_arch": list(arch), "threads": a.threads[0]}
        for side in ("sb3", "ours"):
            argv = [
                sys.executable,
                __file__,
                "--worker",
                side,
                "--archs",
                "x".join(map(str, arch)),
                "--threads",
                str(a.threads[0]),
                "--warmup",
                str(a.warmup),
            ]
            if a.quick:
                argv.append("--quick")
            out = subprocess.run(argv, capture_output=True, text=True, check=True)
            row[side] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
    return rows


# ---- 3. CopAC's Q-maximisation: a hook, filled in separately ---------------------------------


def qmax_section(args) -> list[dict]:
    """CopAC's action choice, x* = argmax_x min(Q1, Q2)(s, f(s, x)) over [-5, 5]^2, for one
    state at a time (as in a patient episode): the batched grid search of `alignlab.copac` at
    51 and 100 points per dimension, against scipy's L-BFGS-B from x = 0 and dual annealing
    (the official `utils/optimization_methods.py` options), with the Q they reach. Q* and f
    are random networks of the brain's and `ActionNet`'s shapes (Reacher: |S| 10, |A| 2)."""
    from alignlab.copac.copac import ActionNet, grid, qmax, qmax_scipy
    from alignlab.rl.sac import Critic

    torch.set_num_threads(1)
    torch.manual_seed(0)
    critic, f = Critic(10, 2, (32, 32)), ActionNet(10, 2, 2)
    states = torch.randn(20, 10)
    rows = []

    def q_of(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(critic.q_min(states, f(states, x)).mean())

    for name, choose in (
        ("grid 51^2", lambda s, g=grid(51, 2): qmax(critic, f, s, g)),
        ("grid 100^2", lambda s, g=grid(100, 2): qmax(critic, f, s, g)),
        ("scipy L-BFGS-B", lambda s: qmax_scipy(critic, f, s, 2, "lbfgs", 0)),
        ("scipy dual annealing", lambda s: qmax_scipy(critic, f, s, 2, "anneal", 0)),
    ):
        xs, t0 = [], time.perf_counter()
        for s in states:
            xs.append(choose(s[None])[0])
        dt = time.perf_counter() - t0
        rows.append(
            {
                "method": name,
                "decisions/s": round(len(states) / dt, 1),
                "mean min-Q reached": round(q_of(torch.stack(xs)), 4),
            }
        )
    base = rows[2]["decisions/s"]
    for r in rows:
        r["vs L-BFGS-B"] = f"{r['decisions/s'] / base:.2f}x"
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.worker:
        print(json.dumps(memory_worker(a.worker, a)))
        return {}
    try:
        import stable_baselines3
    except ImportError:
        sys.exit("needs stable-baselines3: run it with /work/anchors-venv/bin/python")
    wall0, load_start = time.perf_counter(), os.getloadavg()
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "load_avg_start": load_start,
    }
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, load average "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; torch {torch.__version__}, "
        f"stable-baselines3 {stable_baselines3.__version__}; median of {a.repeats} repeats",
        flush=True,
    )
    data = transitions()
    torch.set_num_threads(1)
    checks = {"x".join(map(str, arch)): check(arch, data) for arch in a.archs}
    for name, c in checks.items():
        print(
            f"check {name}: same initial weights {c['same_initial_weights']}; one update on the "
            f"same batch and seed: losses differ by {c['loss_max_abs_err']:.1e}, weights by "
            f"{c['weight_max_abs_err']:.1e}",
            flush=True,
        )
    sac = [side_by_side(arch, t, data, a) for t in a.threads for arch in a.archs]
    mem = memory(a)
    qmax = qmax_section(a)
    machine["load_avg_end"] = os.getloadavg()
    machine["peak_rss_mb_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def cpu(r: dict) -> str:
        return f"{statistics.median(r['cpu_use_repeats']):.2f}"

    print(
        f"\n1. SAC gradient updates/s on {ENV_ID}, batch {BATCH}; ours = alignlab.rl.sac "
        "SAC.train, SB3 = stable_baselines3 SAC.train; ratio = ours / SB3"
    )
    print(
        markdown(
            [
                "net_arch",
                "threads",
                "SB3",
                "ours",
                "ratio",
                "ms/update SB3 / ours",
                "CPU SB3 / ours",
            ],
            [
                [
                    "x".join(map(str, r["net_arch"])),
                    str(r["threads"]),
                    f"{r['sb3']['updates_per_s']:.0f}",
                    f"{r['ours']['updates_per_s']:.0f}",
                    f"{r['ratio']:.2f}x",
                    f"{r['sb3']['ms_per_update']:.2f} / {r['ours']['ms_per_update']:.2f}",
                    f"{cpu(r['sb3'])} / {cpu(r['ours'])}",
                ]
                for r in sac
            ],
        )
    )
    print(f"\n2. memory, each side alone in a fresh process ({mem[0]['threads']} thread(s))")
    print(
        markdown(
            ["net_arch", "peak RSS SB3", "peak RSS ours", "training RSS SB3", "training RSS ours"],
            [
                [
                    "x".join(map(str, r["net_arch"])),
                    f"{r['sb3']['peak_rss_mb']:.0f} MB",
                    f"{r['ours']['peak_rss_mb']:.0f} MB",
                    f"{r['sb3']['training_rss_mb']:.1f} MB",
                    f"{r['ours']['training_rss_mb']:.1f} MB",
                ]
                for r in mem
            ],
        )
    )
    if qmax:
        print("\n3. CopAC's Q-maximisation")
        keys = list(qmax[0])
        print(markdown(keys, [[str(r.get(k, "")) for k in keys] for r in qmax]))
    contended = [
        f"{'x'.join(map(str, r['net_arch']))}/{r['threads']}t/{side}"
        for r in sac
        for side in ("sb3", "ours")
        if r[side]["contended"]
    ]
    if contended:
        print(f"\ncontended (CPU use < {CONTENDED_CPU_USE}): {', '.join(contended)}")
    print(
        f"load average at end {machine['load_avg_end'][0]:.2f}; peak RSS of this process "
        f"{machine['peak_rss_mb_this_process']:.0f} MB; {time.perf_counter() - wall0:.0f} s in all"
    )
    result = {
        "machine": machine,
        "settings": {
            "env": ENV_ID,
            "batch_size": BATCH,
            "transitions": TRANSITIONS,
            "repeats": a.repeats,
            "warmup": a.warmup,
            "quick": a.quick,
        },
        "checks": checks,
        "sac": sac,
        "memory": mem,
        "contention": contended,
        "qmax": qmax,
        "wall_s": time.perf_counter() - wall0,
    }
    from alignlab.core.io import atomic_write_json

    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, result)
    print(f"\nwrote {a.out}")
    return result


if __name__ == "__main__":
    main()
