"""esr.gridworld: the obstacle gridworld at 2, 5, 7 and 10 boxes; ESR vs AvE vs a random robot
vs goal inference over seeds (Fig. 3), the logged mutual information, one assisted episode.

"ave" is the paper's AvE (its code's defaults: `agent.ave_variant="paper"`), which the claims
use; "ave_mobility" is ours, the human's own mobility (`ave_variant="mobility"`), reported
beside it. Both AvE units of a (box count, seed) draw from the same streams (named "ave"), so
"ave_mobility" reproduces the single AvE of before exactly (esr.agent, module docstring)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import ConfigError, param
from alignlab.core.experiment import Experiment, register
from alignlab.core.stats import seed_summary, welch_diff_ci95
from alignlab.core.units import run_units

from ..agent import METHODS, AgentConfig
from ..gridworld import VecGridWorld
from ..train import LoopConfig, evaluate, robot_for
from .common import (
    COLORS,
    LABELS,
    PAPER,
    SMOKE_AGENT,
    SMOKE_LOOP,
    beats_on_every,
    paper_loop,
    train_or_not,
)

LABELS = {**LABELS, "ave": "AvE (paper code)", "ave_mobility": "AvE (human mobility)"}
COLORS = {**COLORS, "ave_mobility": "C1"}  # AvE's colour, dashed (`plot`)


@dataclass
class GridworldConfig:
    obstacles: tuple[int, ...] = param(
        (2, 5, 7, 10), ge=2, nonempty=True, distinct=True, help="box counts, one setting each"
    )
    methods: tuple[str, ...] = param(
        METHODS, choices=METHODS, nonempty=True, distinct=True, help="robots to compare"
    )
    n_seeds: int = param(5, ge=1, help="units (seeds) per method and box count")
    size: int = param(5, ge=3, help="the grid is size x size")
    noise: float = param(0.2, ge=0, le=1, help="the human's epsilon (uniform action rate)")
    horizon: int = param(50, ge=1, help="steps per episode")
    agent: AgentConfig = param(
        factory=lambda: AgentConfig(hidden=(100, 100), repr_lr=1e-3, batch_size=128),
        help="the assistant's hyperparameters",
    )
    loop: LoopConfig = param(
        factory=lambda: LoopConfig(
            epochs=200, num_envs=16, warmup_epochs=40, repr_updates=16, q_updates=16
        ),
        help="experience and updates per unit",
    )
    eval_envs: int = param(64, ge=1, help="environments per evaluation batch")
    strip_obstacles: int = param(2, ge=0, help="pictured episode: ESR (seed 0) at this many boxes")

    def validate(self):
        most = self.size * self.size - 2  # the human and one free cell for its goal
        if max(self.obstacles) > most:
            raise ConfigError(
                "obstacles",
                f"must each be <= size² − 2 = {most} on a {self.size}x{self.size} grid, "
                f"got {list(self.obstacles)}",
            )


def grid_env(cfg: GridworldConfig, k: int):
    return lambda n: VecGridWorld(n, cfg.size, k, cfg.noise, cfg.horizon)


def record_episode(make, robot, rng, tries: int = 20) -> list[dict]:
    """One single-env episode's states, preferring one where the human reaches its goal."""
    best = None
    for _ in range(tries):
        env = make(1)
        states = []
        env.reset(rng)
        robot.begin(env)
        for _t in range(env.horizon):
            states.append(_frame_state(env))
            obs = env.observe()
            a_h = env.human_act(rng)
            a_r = robot.act(env, obs, rng)
            robot.observe_human(env, a_h)
            env.step(a_r, a_h)
        states.append(_frame_state(env))
        if env.at_goal()[0] and not env.dead[0]:
            return states
        best = best or states
    return best


def _frame_state(env) -> dict:
    return {
        "human": env.human[0].tolist(),
        "boxes": env.boxes[0].tolist(),
        "goal": env.goal[0].tolist(),
        "dead": bool(env.dead[0]),
    }


def unit(key: str, uctx) -> dict:
    """One (method, box count, seed): train (ESR/AvE) and evaluate the robot."""
    cfg: GridworldConfig = uctx.config
    method, boxes, seed = key.split("/")
    k, s = int(boxes[5:]), int(seed[4:])
    make = grid_env(cfg, k)
    trains, agent = method, cfg.agent
    if method == "ave_mobility":  # AvE with ours, on the streams of "ave" (module docstring)
        trains, agent = "ave", replace(cfg.agent, ave_variant="mobility")
    out, info = train_or_not(trains, make, agent, cfg.loop, uctx, trains, k, s)
    robot = robot_for(trains, out)
    rng = np.random.default_rng(uctx.substream("eval", trains, k, s))
    result = {**evaluate(make, robot, cfg.loop.eval_episodes, cfg.eval_envs, rng), **info}
    if out is not None:  # the free/trapped diagnostics (train._diagnostics)
        result["diag_curve"] = out["diag_curve"]
    if method == "esr" and k == cfg.strip_obstacles and s == 0:
        result["episode"] = record_episode(make, robot, rng)
    return result


def run(ctx) -> dict:
    cfg: GridworldConfig = ctx.config
    seeds = range(cfg.n_seeds)
    keys = [f"{m}/boxes{k}/seed{s}" for k in cfg.obstacles for m in cfg.methods for s in seeds]
    out = run_units(ctx, keys, unit, size=cfg.loop.epochs)
    per: dict = {m: {} for m in cfg.methods}
    for m in cfg.methods:
        for k in cfg.obstacles:
            units = [out[f"{m}/boxes{k}/seed{s}"] for s in seeds]
            per[m][str(k)] = {
                "return": seed_summary([u["return"] for u in units]),
                "crushed": seed_summary([u["crushed"] for u in units]),
                "curves": [u.get("curve") for u in units],
                "mi_curves": [u.get("mi_curve") for u in units],
                "diag_curves": [u.get("diag_curve") for u in units],
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


# ---------------------------------------------------------------------------------------
# claims


def _returns(r, method, k) -> list[float]:
    return r["per"][method][str(k)]["return"]["values"]


def claim_beats_random(r):
    pairs = [(str(k), _returns(r, "esr", k), _returns(r, "random", k)) for k in r["obstacles"]]
    text, ok = beats_on_every(pairs)
    return "ESR − random: " + text, ok


def _margins(r, ave: str = "ave") -> list[float]:
    return [
        float(np.mean(_returns(r, "esr", k)) - np.mean(_returns(r, ave, k))) for k in r["obstacles"]
    ]


def claim_margin_grows(r):
    order = np.argsort(r["obstacles"])
    ks = np.asarray(r["obstacles"], float)[order]
    m = np.asarray(_margins(r))[order]
    slope = float(np.polyfit(ks, m, 1)[0]) if len(ks) > 1 else 0.0
    text = "ESR − AvE (paper code): " + ", ".join(f"{k:g}: {v:+.1f}" for k, v in zip(ks, m))
    text += f" (slope {slope:+.2f}/box)"
    if "ave_mobility" in r["per"]:  # ours, beside it; not part of the claim
        m2 = np.asarray(_margins(r, "ave_mobility"))[order]
        text += "; beside it, ESR − AvE (human mobility): " + ", ".join(
            f"{k:g}: {v:+.1f}" for k, v in zip(ks, m2)
        )
    # "grows" read as the paper means it: ESR ahead of AvE, and further ahead with more boxes
    return text, bool(slope > 0 and m[-1] > m[0] and m[-1] > 0)


def claim_ave_no_better(r):
    k = max(r["obstacles"])
    d, half = welch_diff_ci95(_returns(r, "ave", k), _returns(r, "random", k))
    text = f"AvE (paper code) − random at {k} boxes: {d:+.1f} ± {half:.1f}"
    if "ave_mobility" in r["per"]:  # ours, beside it; not part of the claim
        d2, half2 = welch_diff_ci95(_returns(r, "ave_mobility", k), _returns(r, "random", k))
        text += f" (AvE (human mobility): {d2:+.1f} ± {half2:.1f})"
    return text, bool(d - half <= 0)


# ---------------------------------------------------------------------------------------
# plots


def plot(results, ctx) -> None:
    from alignlab.core.plotting import plt

    ks = results["obstacles"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m in results["methods"]:
        rows = [results["per"][m][str(k)]["return"] for k in ks]
        mean = np.array([row["mean"] for row in rows])
        half = np.nan_to_num(np.array([row["ci95"] for row in rows], dtype=float))
        ls = "--" if m == "ave_mobility" else "-"
        ax.errorbar(
            ks, mean, yerr=half, marker="o", capsize=3, label=LABELS[m], color=COLORS[m], ls=ls
        )
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
        plot_diagnostics(results, ctx)

    if results.get("episode"):
        from ..gridworld_env import frame, strip

        size = results["size"]
        states = results["episode"]
        picks = story_frames(states)
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


def plot_diagnostics(results, ctx) -> None:
    """ESR's free/trapped diagnostics against epochs (train._diagnostics), one colour per box
    count, one line per seed: the estimate on free minus trapped/frozen humans (nats), the
    reward's standard deviation, and the share of buffer states with a free human."""
    from alignlab.core.plotting import plt

    from ..train import DIAGNOSTICS

    titles = {
        "mi_free_minus_trapped": ("nats", "ESR estimate: free − trapped/frozen human"),
        "reward_std": ("reward units", "std of ESR's reward"),
        "free_share": ("share", "buffer states with a free human"),
    }
    rows = [results["per"]["esr"][str(k)].get("diag_curves") or [] for k in results["obstacles"]]
    if not any(rows):
        return  # results from before the diagnostics
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(14, 3.5))
    for i, (k, curves) in enumerate(zip(results["obstacles"], rows, strict=True)):
        for j, curve in enumerate(c for c in curves if c):
            c = np.array([[np.nan if v is None else v for v in row] for row in curve], float)
            for col, ax in enumerate(axes, start=1):
                label = f"{k} boxes" if j == 0 else None
                ax.plot(c[:, 0], c[:, col], color=f"C{i}", alpha=0.6, marker=".", label=label)
    for ax, name in zip(axes, DIAGNOSTICS, strict=True):
        ax.set(xlabel="epoch", ylabel=titles[name][0], title=titles[name][1])
        ax.legend(fontsize=7)
    axes[0].axhline(0, color="k", lw=0.5)
    ctx.save_figure(fig, "gridworld_diagnostics")


def story_frames(states: list[dict], most: int = 12) -> list[int]:
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


register(
    Experiment(
        name="esr.gridworld",
        paper=PAPER,
        description="Obstacle gridworld: ESR vs AvE (paper code; ours beside it) vs random vs "
        "goal inference at 2-10 boxes",
        config=GridworldConfig,
        presets={
            "smoke": GridworldConfig(
                obstacles=(2, 5), n_seeds=2, loop=SMOKE_LOOP, agent=SMOKE_AGENT, eval_envs=4
            ),
            # chosen from the budget study (esr.budget; docs/esr.md): the authors' conv torso is
            # the only variant ahead of the random robot at 2 boxes at this budget (1x); its
            # ESR units cost 3.5x the MLP's on a CPU, so 3 seeds keep the experiment within
            # 15 min on 2 cores (GridworldConfig's defaults are the MLP settings the study
            # calls "current")
            "quick": GridworldConfig(
                n_seeds=3,
                agent=AgentConfig(hidden=(100, 100), repr_lr=1e-3, batch_size=128, torso="conv"),
            ),
            "paper": GridworldConfig(
                n_seeds=20,
                # the authors' conv nets: Conv16-Conv32 then one Linear(hidden_dim = 100)
                agent=AgentConfig(repr_dim=100, hidden=(100,), repr_lr=1e-4, torso="conv"),
                # the authors' order of updates (agents/base.py, Base.update)
                loop=replace(paper_loop(q_updates=100, buffer_epochs=3), schedule="paper"),
            ),
        },
        run=run,
        # work in progress, blocked on its claims: at the quick budget ESR is ahead of the
        # random robot at 2 boxes only and below it at 5-10 boxes, where its free-minus-trapped
        # estimate stays near 0 (at 5 boxes up to 8x the budget: docs/esr.md, "Why ESR fails
        # here" and the budget study); the claims use the paper's AvE
        wip=True,
        claims=[
            Claim(
                "esr_beats_random",
                "ESR beats the random robot at every obstacle count (Fig. 3)",
                claim_beats_random,
            ),
            Claim(
                "margin_grows",
                "ESR's margin over AvE (paper code) grows with the number of obstacles (Fig. 3)",
                claim_margin_grows,
            ),
            Claim(
                "ave_no_better_than_random",
                "At the largest obstacle count AvE (paper code) is no better than a random robot "
                "(Fig. 3)",
                claim_ave_no_better,
            ),
        ],
        plots=plot,
    )
)
