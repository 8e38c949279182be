"""The ESR experiments and their claims (Myers et al., NeurIPS 2024).

- esr.gridworld   the obstacle gridworld at 2, 5, 7 and 10 boxes: ESR vs AvE vs a random robot
                  vs goal inference, over seeds (Fig. 3); the logged mutual information; one
                  assisted episode as a picture strip.
- esr.overcooked  Cramped Room, Coordination Ring, Asymmetric Advantages with a scripted noisy
                  human: the team's and the human's delivered reward with ESR, AvE and random
                  assistants (the table on p. 9).

Every (method, setting, seed) is one unit (`alignlab.core.units`): units run in parallel worker
processes, each seeded from its key, and a resumed run skips finished ones.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from alignlab.core.claims import Claim
from alignlab.core.experiment import Experiment, register
from alignlab.core.sweep import mean_ci95
from alignlab.core.units import run_units

from .agent import METHODS, AgentConfig
from .gridworld import VecGridWorld
from .overcooked import LAYOUTS, ScriptedHuman, VecOvercooked
from .train import LoopConfig, evaluate, robot_for, rollout, train_assistant

PAPER = "Myers et al. 2024, Learning to Assist Humans without Inferring Rewards (ESR), NeurIPS 2024"
TRAINED = ("esr", "ave")
LABELS = {"esr": "ESR", "ave": "AvE", "random": "Random", "goal_inference": "Goal inference"}
COLORS = {"esr": "C0", "ave": "C1", "random": "C7", "goal_inference": "C2"}


class AssistedOvercooked(VecOvercooked):
    """`VecOvercooked` whose human (agent 1) is the scripted noisy human: the training loop's
    environment interface (`human_act`)."""

    def __init__(self, layout, num_envs, horizon, human_epsilon):
        super().__init__(layout, num_envs, horizon)
        self.human_policy = ScriptedHuman(layout, human_epsilon)

    def human_act(self, rng: np.random.Generator) -> np.ndarray:
        return self.human_policy.act(self, rng)


def _unit_seed(run_seed: int, *parts) -> list[int]:
    return [run_seed] + [zlib.crc32(str(p).encode()) for p in parts]


def _check_methods(methods, valid) -> None:
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise ValueError(f"unknown or no methods {bad}; valid methods: {', '.join(valid)}")
    _check_listing("methods", methods)


def _check_listing(name: str, values) -> None:
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must be a non-empty list without repeats, got {list(values)}")


def _check_counts(cfg) -> None:
    if cfg.n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    if cfg.eval_envs < 1:
        raise ValueError(f"eval_envs must be >= 1, got {cfg.eval_envs}")
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = one per CPU core), got {cfg.workers}")


def _train_or_not(method, make, agent, loop, seed, uctx):
    """Train ESR/AvE (logging to the unit), or nothing for the untrained robots."""
    if method not in TRAINED:
        uctx.advance(loop.epochs)
        return None, {}
    out = train_assistant(
        method, make, agent, loop, seed, log=uctx.log_metrics, advance=uctx.advance
    )
    # timings go to the metrics log, not the results (which a seed must fix to the byte)
    uctx.log_metrics(loop.epochs, seconds=out["seconds"], updates_per_s=out["updates_per_s"])
    return out, {"curve": out["curve"], "mi_curve": out["mi_curve"]}


def _diff_ci(a, b) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95% Welch CI."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < 2:  # one seed: no interval
        return float(a.mean() - b.mean()), math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return float(a.mean() - b.mean()), 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(a.mean() - b.mean()), float(stats.t.ppf(0.975, dof) * se)


def _summary(values) -> dict:
    mean, half = mean_ci95(values)
    return {"values": [float(v) for v in values], "mean": mean, "ci95": half}


# ---------------------------------------------------------------------------------------
# esr.gridworld


@dataclass
class GridworldConfig:
    obstacles: tuple[int, ...] = (2, 5, 7, 10)
    methods: tuple[str, ...] = METHODS
    n_seeds: int = 5
    size: int = 5
    noise: float = 0.2  # the human's epsilon
    horizon: int = 50
    agent: AgentConfig = field(
        default_factory=lambda: AgentConfig(hidden=(100, 100), repr_lr=1e-3, batch_size=128)
    )
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            epochs=200, num_envs=16, warmup_epochs=40, repr_updates=16, q_updates=16
        )
    )
    eval_envs: int = 64
    strip_obstacles: int = 2  # the pictured episode: ESR (seed 0) at this many boxes
    workers: int = 0  # units at once: 0 = one per CPU core

    def validate(self):
        _check_methods(self.methods, METHODS)
        _check_listing("obstacles", self.obstacles)
        _check_counts(self)
        for k in self.obstacles:
            VecGridWorld(1, self.size, k, self.noise, self.horizon)  # raises a clear error
        self.agent.validate()
        self.loop.validate()


def _grid_env(cfg: GridworldConfig, k: int):
    return lambda n: VecGridWorld(n, cfg.size, k, cfg.noise, cfg.horizon)


def _record_episode(make, robot, rng, tries: int = 20) -> list[dict]:
    """One single-env episode's states, preferring one where the human reaches its goal."""
    best = None
    for _ in range(tries):
        env = make(1)
        states = []
        env.reset(rng)
        robot.begin(env)
        for _t in range(env.horizon):
            states.append(_grid_frame_state(env))
            obs = env.observe()
            a_h = env.human_act(rng)
            a_r = robot.act(env, obs, rng)
            robot.observe_human(env, a_h)
            env.step(a_r, a_h)
        states.append(_grid_frame_state(env))
        if env.at_goal()[0] and not env.dead[0]:
            return states
        best = best or states
    return best


def _grid_frame_state(env) -> dict:
    return {
        "human": env.human[0].tolist(),
        "boxes": env.boxes[0].tolist(),
        "goal": env.goal[0].tolist(),
        "dead": bool(env.dead[0]),
    }


def run_gridworld(ctx) -> dict:
    cfg: GridworldConfig = ctx.config
    cfg.validate()
    keys = [
        f"{m}/boxes{k}/seed{s}"
        for k in cfg.obstacles
        for m in cfg.methods
        for s in range(cfg.n_seeds)
    ]

    def unit(key, uctx):
        method, boxes, seed = key.split("/")
        k, s = int(boxes[5:]), int(seed[4:])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny networks; also makes results independent of workers
        try:
            make = _grid_env(cfg, k)
            out, info = _train_or_not(
                method, make, cfg.agent, cfg.loop, _unit_seed(ctx.seed, method, k, s), uctx
            )
            robot = robot_for(method, out)
            rng = np.random.default_rng(_unit_seed(ctx.seed, "eval", method, k, s))
            stats = evaluate(make, robot, cfg.loop.eval_episodes, cfg.eval_envs, rng)
            result = {**stats, **info}
            if method == "esr" and k == cfg.strip_obstacles and s == 0:
                result["episode"] = _record_episode(make, robot, rng)
            return result
        finally:
            torch.set_num_threads(threads)

    out = run_units(ctx, keys, unit, size=cfg.loop.epochs, workers=cfg.workers)
    per: dict = {m: {} for m in cfg.methods}
    for m in cfg.methods:
        for k in cfg.obstacles:
            units = [out[f"{m}/boxes{k}/seed{s}"] for s in range(cfg.n_seeds)]
            per[m][str(k)] = {
                "return": _summary([u["return"] for u in units]),
                "crushed": _summary([u["crushed"] for u in units]),
                "curves": [u.get("curve") for u in units],
                "mi_curves": [u.get("mi_curve") for u in units],
            }
    results = {
        "obstacles": list(cfg.obstacles),
        "methods": list(cfg.methods),
        "size": cfg.size,
        "per": per,
    }
    if "esr" in cfg.methods and cfg.strip_obstacles in cfg.obstacles:
        results["episode"] = out[f"esr/boxes{cfg.strip_obstacles}/seed0"].get("episode")
    for m in cfg.methods:
        ctx.log(
            f"{LABELS[m]}: "
            + ", ".join(f"{k} boxes {per[m][str(k)]['return']['mean']:.1f}" for k in cfg.obstacles)
        )
    return results


def _returns(r, method, k) -> list[float]:
    return r["per"][method][str(k)]["return"]["values"]


def _claim_beats_random(r):
    rows, ok = [], bool(r["obstacles"])
    for k in r["obstacles"]:
        d, half = _diff_ci(_returns(r, "esr", k), _returns(r, "random", k))
        ok &= d - half > 0
        rows.append(f"{k}: {d:+.1f} ± {half:.1f}")
    return "ESR − random: " + "; ".join(rows), ok


def _margins(r) -> list[float]:
    return [
        float(np.mean(_returns(r, "esr", k)) - np.mean(_returns(r, "ave", k)))
        for k in r["obstacles"]
    ]


def _claim_margin_grows(r):
    order = np.argsort(r["obstacles"])
    ks = np.asarray(r["obstacles"], float)[order]
    m = np.asarray(_margins(r))[order]
    slope = float(np.polyfit(ks, m, 1)[0]) if len(ks) > 1 else 0.0
    text = "ESR − AvE: " + ", ".join(f"{k:g}: {v:+.1f}" for k, v in zip(ks, m))
    # "grows" read as the paper means it: ESR ahead of AvE, and further ahead with more boxes
    return f"{text} (slope {slope:+.2f}/box)", bool(slope > 0 and m[-1] > m[0] and m[-1] > 0)


def _claim_ave_no_better(r):
    k = max(r["obstacles"])
    d, half = _diff_ci(_returns(r, "ave", k), _returns(r, "random", k))
    return f"AvE − random at {k} boxes: {d:+.1f} ± {half:.1f}", bool(d - half <= 0)


def plot_gridworld(results, ctx) -> None:
    import matplotlib.pyplot as plt

    ks = results["obstacles"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m in results["methods"]:
        rows = [results["per"][m][str(k)]["return"] for k in ks]
        mean = np.array([row["mean"] for row in rows])
        half = np.nan_to_num(np.array([row["ci95"] for row in rows], dtype=float))
        ax.errorbar(ks, mean, yerr=half, marker="o", capsize=3, label=LABELS[m], color=COLORS[m])
    ax.set_xlabel("obstacles (boxes)")
    ax.set_ylabel("steps at goal (of 50)")
    ax.set_title("Obstacle gridworld: return vs obstacles (95% CI)")
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "gridworld_returns")

    if "esr" in results["methods"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for i, k in enumerate(ks):
            row = results["per"]["esr"][str(k)]
            for j, (curve, mi) in enumerate(zip(row["curves"], row["mi_curves"], strict=True)):
                if not curve:
                    continue
                label = f"{k} boxes" if j == 0 else None
                c = np.asarray(curve)
                axes[0].plot(c[:, 0], c[:, 1], color=f"C{i}", alpha=0.6, label=label)
                if mi:
                    c = np.asarray(mi)
                    axes[1].plot(c[:, 0], c[:, 1], color=f"C{i}", alpha=0.6, label=label)
        axes[0].set(xlabel="epoch", ylabel="training return", title="ESR training return")
        axes[1].set(xlabel="epoch", ylabel="nats", title="ESR mutual-information estimate")
        axes[1].axhline(0, color="k", lw=0.5)
        for a in axes:
            a.legend(fontsize=7)
        ctx.save_figure(fig, "gridworld_training")

    if results.get("episode"):
        from .gridworld_env import frame, strip

        size = results["size"]
        states = results["episode"]
        picks = _story_frames(states)
        frames = [frame(size, s["human"], s["boxes"], s["goal"], s["dead"]) for s in states]
        fig, ax = plt.subplots(figsize=(1.1 * len(picks), 1.5))
        ax.imshow(strip([frames[i] for i in picks]))
        ax.set_axis_off()
        ax.set_title(
            "ESR assisting: the first of up to 20 episodes in which the human reaches its goal "
            f"(steps {', '.join(map(str, picks))})",
            fontsize=8,
        )
        ctx.save_figure(fig, "gridworld_episode")


def _story_frames(states: list[dict], most: int = 12) -> list[int]:
    """The frames worth showing: the start, the robot's first push and what follows until the
    human reaches its goal (or the episode ends), and the last frame; at most `most`."""
    last = len(states) - 1
    moved = [t for t in range(1, len(states)) if states[t]["boxes"] != states[0]["boxes"]]
    done = [t for t in range(len(states)) if states[t]["human"] == states[t]["goal"]]
    start = max(1, moved[0] - 1) if moved else 1
    end = done[0] if done else last
    middle = list(range(start, end + 1))
    if len(middle) > most - 2:
        keep = np.linspace(0, len(middle) - 1, most - 2).round().astype(int)
        middle = [middle[i] for i in sorted(set(keep))]
    return sorted({0, *middle, last})


# ---------------------------------------------------------------------------------------
# esr.overcooked


@dataclass
class OvercookedConfig:
    layouts: tuple[str, ...] = LAYOUTS
    methods: tuple[str, ...] = ("esr", "ave", "random")
    n_seeds: int = 3
    horizon: int = 200
    human_epsilon: float = 0.1
    agent: AgentConfig = field(
        default_factory=lambda: AgentConfig(
            repr_lr=1e-3, batch_size=128, gamma=0.8, target_entropy=0.9
        )
    )
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            epochs=80, num_envs=8, warmup_epochs=10, eval_episodes=32, log_every=5
        )
    )
    eval_envs: int = 16
    workers: int = 0

    def validate(self):
        _check_methods(self.methods, ("esr", "ave", "random"))
        bad = [x for x in self.layouts if x not in LAYOUTS]
        if bad or not self.layouts:
            raise ValueError(f"unknown or no layouts {bad}; valid layouts: {', '.join(LAYOUTS)}")
        _check_listing("layouts", self.layouts)
        _check_counts(self)
        if not 0.0 <= self.human_epsilon <= 1.0:
            raise ValueError(f"human_epsilon must lie in [0, 1], got {self.human_epsilon}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        self.agent.validate()
        self.loop.validate()


def run_overcooked(ctx) -> dict:
    cfg: OvercookedConfig = ctx.config
    cfg.validate()
    keys = [
        f"{m}/{lay}/seed{s}" for lay in cfg.layouts for m in cfg.methods for s in range(cfg.n_seeds)
    ]

    def unit(key, uctx):
        method, layout, seed = key.split("/")
        s = int(seed[4:])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            make = lambda n: AssistedOvercooked(layout, n, cfg.horizon, cfg.human_epsilon)  # noqa: E731
            out, info = _train_or_not(
                method, make, cfg.agent, cfg.loop, _unit_seed(ctx.seed, method, layout, s), uctx
            )
            rng = np.random.default_rng(_unit_seed(ctx.seed, "eval", method, layout, s))
            stats = evaluate(
                make, robot_for(method, out), cfg.loop.eval_episodes, cfg.eval_envs, rng
            )
            return {**stats, **info}
        finally:
            torch.set_num_threads(threads)

    out = run_units(ctx, keys, unit, size=cfg.loop.epochs, workers=cfg.workers)
    # the human alone, the robot idle (not a method: the reference for "with / without")
    alone = {}
    for layout in cfg.layouts:
        rng = np.random.default_rng(_unit_seed(ctx.seed, "alone", layout))
        env = AssistedOvercooked(layout, cfg.eval_envs, cfg.horizon, cfg.human_epsilon)
        stats = rollout(env, _IdleRobot(), rng)["stats"]
        alone[layout] = {k: float(v.mean()) for k, v in stats.items()}
    per: dict = {m: {} for m in cfg.methods}
    for m in cfg.methods:
        for layout in cfg.layouts:
            units = [out[f"{m}/{layout}/seed{s}"] for s in range(cfg.n_seeds)]
            per[m][layout] = {
                "team": _summary([u["return"] for u in units]),
                "human": _summary([u["human_return"] for u in units]),
                "curves": [u.get("curve") for u in units],
                "mi_curves": [u.get("mi_curve") for u in units],
            }
    for m in cfg.methods:
        ctx.log(
            f"{LABELS[m]}: "
            + ", ".join(f"{lay} {per[m][lay]['team']['mean']:.1f}" for lay in cfg.layouts)
        )
    return {"layouts": list(cfg.layouts), "methods": list(cfg.methods), "per": per, "alone": alone}


class _IdleRobot:
    def begin(self, env) -> None:
        pass

    def act(self, env, obs, rng) -> np.ndarray:
        return np.full(env.num_envs, env.noop_robot_action)

    def observe_human(self, env, human_action) -> None:
        pass


def _claim_overcooked(r):
    rows, ok = [], bool(r["layouts"])
    for lay in r["layouts"]:
        a = r["per"]["esr"][lay]["team"]["values"]
        b = r["per"]["random"][lay]["team"]["values"]
        d, half = _diff_ci(a, b)
        ok &= d - half > 0  # as in the gridworld: the 95% CI of the difference above 0
        rows.append(f"{lay}: {d:+.1f} ± {half:.1f}")
    return "ESR − random team reward: " + "; ".join(rows), ok


def plot_overcooked(results, ctx) -> None:
    import matplotlib.pyplot as plt

    layouts, methods = results["layouts"], results["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / (len(methods) + 1)
    x = np.arange(len(layouts))
    for ax, what in zip(axes, ("team", "human"), strict=True):
        for i, m in enumerate(methods):
            mean = [results["per"][m][lay][what]["mean"] for lay in layouts]
            half = [results["per"][m][lay][what]["ci95"] for lay in layouts]
            half = np.nan_to_num(np.array(half, dtype=float))  # one seed: no CI
            ax.bar(
                x + i * width, mean, width, yerr=half, capsize=2, label=LABELS[m], color=COLORS[m]
            )
        key = "return" if what == "team" else "human_return"
        ax.bar(
            x + len(methods) * width,
            [results["alone"][lay][key] for lay in layouts],
            width,
            label="human alone (robot idle)",
            color="k",
            alpha=0.4,
        )
        ax.set_xticks(x + width * len(methods) / 2, layouts, fontsize=8)
        ax.set_ylabel(f"{what} reward per episode")
        ax.set_title(f"Overcooked: {what} reward (95% CI over seeds)")
    axes[0].legend(fontsize=7)
    ctx.save_figure(fig, "overcooked_rewards")


# ---------------------------------------------------------------------------------------
# registration

_SMOKE_LOOP = LoopConfig(
    epochs=3,
    num_envs=4,
    warmup_epochs=1,
    repr_updates=2,
    q_updates=2,
    dual_updates=1,
    eval_episodes=4,
    log_every=1,
)
_SMOKE_AGENT = AgentConfig(batch_size=16, hidden=(16, 16), repr_dim=8, ave_rollouts=4, ave_length=2)

register(
    Experiment(
        name="esr.gridworld",
        paper=PAPER,
        description="Obstacle gridworld: ESR vs AvE vs random vs goal inference at 2-10 boxes",
        config=GridworldConfig,
        presets={
            "smoke": GridworldConfig(
                obstacles=(2, 5), n_seeds=2, loop=_SMOKE_LOOP, agent=_SMOKE_AGENT, eval_envs=4
            ),
            "quick": GridworldConfig(),
            "paper": GridworldConfig(
                n_seeds=20,
                agent=AgentConfig(repr_dim=100, hidden=(100, 100), repr_lr=1e-4),
                loop=LoopConfig(
                    epochs=10_000,
                    num_envs=100,
                    warmup_epochs=0,
                    repr_updates=100,
                    q_updates=100,
                    dual_updates=100,
                    buffer_epochs=3,
                    log_every=100,
                ),
            ),
        },
        run=run_gridworld,
        # issue 4, blocked on its claims: at the quick budget ESR ties the random robot at 2
        # boxes and falls below it at 5-10 (its MI estimate stays ~0 there), while AvE with the
        # human's 5 actions beats random (docs/esr.md, "Why ESR fails here")
        wip=True,
        claims=[
            Claim(
                "esr_beats_random",
                "ESR beats the random robot at every obstacle count (Fig. 3)",
                _claim_beats_random,
            ),
            Claim(
                "margin_grows",
                "ESR's margin over AvE grows with the number of obstacles (Fig. 3)",
                _claim_margin_grows,
            ),
            Claim(
                "ave_no_better_than_random",
                "At the largest obstacle count AvE is no better than a random robot (Fig. 3)",
                _claim_ave_no_better,
            ),
        ],
        plots=plot_gridworld,
    )
)

register(
    Experiment(
        name="esr.overcooked",
        paper=PAPER,
        description="Overcooked: team and human reward with ESR, AvE and random assistants",
        config=OvercookedConfig,
        presets={
            "smoke": OvercookedConfig(
                layouts=("cramped_room",),
                n_seeds=1,
                horizon=20,
                loop=_SMOKE_LOOP,
                agent=_SMOKE_AGENT,
                eval_envs=4,
            ),
            "quick": OvercookedConfig(),
            "paper": OvercookedConfig(
                n_seeds=5,
                horizon=400,
                agent=AgentConfig(
                    hidden=(64, 64),
                    policy_lr=1e-5,
                    repr_lr=3e-5,
                    gamma=0.8,
                    tau=1e-5,
                    target_entropy=0.9,
                    batch_size=256,
                ),
                loop=LoopConfig(
                    epochs=10_000,
                    num_envs=100,
                    warmup_epochs=0,
                    repr_updates=100,
                    q_updates=30,
                    dual_updates=100,
                    buffer_epochs=5,
                    log_every=100,
                ),
            ),
        },
        run=run_overcooked,
        # issue 4, blocked on its claim: at the quick budget ESR's robot gets in the scripted
        # human's way (team reward below the random robot's; docs/esr.md)
        wip=True,
        claims=[
            Claim(
                "esr_raises_team_reward",
                "ESR raises the team's delivered reward over the random robot on every layout "
                "(table, p. 9)",
                _claim_overcooked,
            ),
        ],
        plots=plot_overcooked,
    )
)
