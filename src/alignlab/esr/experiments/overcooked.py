"""esr.overcooked: Cramped Room, Coordination Ring and Asymmetric Advantages with a scripted
noisy human; the team's and the human's delivered reward with ESR, AvE and random assistants
(the table on p. 9), beside the human alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator
from alignlab.core.stats import seed_summary
from alignlab.core.units import run_units

from ..agent import AgentConfig
from ..overcooked import LAYOUTS
from ..overcooked_human import AssistedOvercooked
from ..train import LoopConfig, evaluate, robot_for, rollout
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

OVERCOOKED_METHODS = ("esr", "ave", "random")


@dataclass
class OvercookedConfig:
    layouts: tuple[str, ...] = param(
        LAYOUTS, choices=LAYOUTS, nonempty=True, distinct=True, help="kitchens, one setting each"
    )
    methods: tuple[str, ...] = param(
        OVERCOOKED_METHODS,
        choices=OVERCOOKED_METHODS,
        nonempty=True,
        distinct=True,
        help="robots to compare",
    )
    n_seeds: int = param(3, ge=1, help="units (seeds) per method and layout")
    horizon: int = param(200, ge=1, help="steps per episode")
    human_epsilon: float = param(0.1, ge=0, le=1, help="scripted human: P(uniform random action)")
    human_temperature: float = param(
        0.0,
        ge=0,
        help="scripted human: its target tile drawn from softmax(-path cost / temperature), in "
        "moves; the stand-in for the paper's sampled BC human (0: the deterministic cheapest)",
    )
    agent: AgentConfig = param(
        factory=lambda: AgentConfig(repr_lr=1e-3, batch_size=128, gamma=0.8, target_entropy=0.9),
        help="the assistant's hyperparameters",
    )
    loop: LoopConfig = param(
        factory=lambda: LoopConfig(
            epochs=80, num_envs=8, warmup_epochs=10, eval_episodes=32, log_every=5
        ),
        help="experience and updates per unit",
    )
    eval_envs: int = param(16, ge=1, help="environments per evaluation batch")


def unit(key: str, uctx) -> dict:
    """One (method, layout, seed): train (ESR/AvE) and evaluate the robot."""
    cfg: OvercookedConfig = uctx.config
    method, layout, seed = key.split("/")
    s = int(seed[4:])

    def make(n: int) -> AssistedOvercooked:
        return AssistedOvercooked(layout, n, cfg.horizon, cfg.human_epsilon, cfg.human_temperature)

    out, info = train_or_not(method, make, cfg.agent, cfg.loop, uctx, method, layout, s)
    rng = np.random.default_rng(uctx.substream("eval", method, layout, s))
    stats = evaluate(make, robot_for(method, out), cfg.loop.eval_episodes, cfg.eval_envs, rng)
    return {**stats, **info}


class IdleRobot:
    """The robot that never acts: the reference for the human alone."""

    def begin(self, env) -> None:
        pass

    def act(self, env, obs, rng) -> np.ndarray:
        return np.full(env.num_envs, env.noop_robot_action)

    def observe_human(self, env, human_action) -> None:
        pass


def run(ctx) -> dict:
    cfg: OvercookedConfig = ctx.config
    seeds = range(cfg.n_seeds)
    keys = [f"{m}/{lay}/seed{s}" for lay in cfg.layouts for m in cfg.methods for s in seeds]
    out = run_units(ctx, keys, unit, size=cfg.loop.epochs)
    # the human alone, the robot idle (not a method: the reference for "with / without")
    alone = {}
    for layout in cfg.layouts:
        env = AssistedOvercooked(
            layout, cfg.eval_envs, cfg.horizon, cfg.human_epsilon, cfg.human_temperature
        )
        stats = rollout(env, IdleRobot(), generator(ctx.seed, "alone", layout))["stats"]
        alone[layout] = {k: float(v.mean()) for k, v in stats.items()}
    per: dict = {m: {} for m in cfg.methods}
    for m in cfg.methods:
        for layout in cfg.layouts:
            units = [out[f"{m}/{layout}/seed{s}"] for s in seeds]
            per[m][layout] = {
                "team": seed_summary([u["return"] for u in units]),
                "human": seed_summary([u["human_return"] for u in units]),
                "curves": [u.get("curve") for u in units],
                "mi_curves": [u.get("mi_curve") for u in units],
            }
    for m in cfg.methods:
        ctx.log(
            f"{LABELS[m]}: "
            + ", ".join(f"{lay} {per[m][lay]['team']['mean']:.1f}" for lay in cfg.layouts)
        )
    return {"layouts": list(cfg.layouts), "methods": list(cfg.methods), "per": per, "alone": alone}


def claim_raises_team_reward(r):
    def team(method: str, layout: str) -> list[float]:
        return r["per"][method][layout]["team"]["values"]

    pairs = [(lay, team("esr", lay), team("random", lay)) for lay in r["layouts"]]
    text, ok = beats_on_every(pairs)  # as in the gridworld: the 95% CI of the difference > 0
    return "ESR − random team reward: " + text, ok


def plot(results, ctx) -> None:
    from alignlab.core.plotting import plt

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
                loop=SMOKE_LOOP,
                agent=SMOKE_AGENT,
                eval_envs=4,
            ),
            "quick": OvercookedConfig(),
            "paper": OvercookedConfig(
                n_seeds=5,
                horizon=400,
                human_temperature=1.0,  # a sampled human, as the paper's BC network
                agent=AgentConfig(
                    hidden=(64, 64),
                    policy_lr=1e-5,
                    repr_lr=3e-5,
                    gamma=0.8,
                    tau=1e-5,
                    target_entropy=0.9,
                    batch_size=256,
                ),
                loop=paper_loop(q_updates=30, buffer_epochs=5),
            ),
        },
        run=run,
        # work in progress, blocked on its claim: at the quick budget ESR's robot gets in the
        # scripted human's way, so the team's reward falls below the random robot's
        # (docs/esr.md, "Why ESR fails here")
        wip=True,
        claims=[
            Claim(
                "esr_raises_team_reward",
                "ESR raises the team's delivered reward over the random robot on every layout "
                "(table, p. 9)",
                claim_raises_team_reward,
            ),
        ],
        plots=plot,
    )
)
