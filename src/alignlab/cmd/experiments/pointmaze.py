"""cmd.pointmaze: the one-way vortex pointmaze from random walks, success vs gradient steps.

Work in progress, blocked: at the CPU budget of a few thousand gradient steps the claim does
not hold. With the learned actor CMD-2 ends at 0.84 and CRL at 0.88 (0.915 vs 0.918 at 8000
steps, and no separation on a map scaled to +-30 either), while the notebook trains 500k steps
(docs/cmd.md, "cmd.pointmaze").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register

from ..methods import METHODS, ActionSpec, MethodConfig
from ..pointmaze import PointMaze, featurize
from ..train import LoopConfig, episode_dataset
from .common import (
    ALL_METHODS,
    PAPER,
    SMOKE_LOOP,
    SMOKE_METHOD,
    fmt,
    plot_success,
    train_methods,
)


@dataclass
class PointmazeConfig:
    methods: tuple[str, ...] = param(
        ALL_METHODS, choices=METHODS, nonempty=True, distinct=True, help="methods to compare"
    )
    n_seeds: int = param(2, ge=1, help="seeds per method, each with its own dataset")
    n_trajectories: int = param(1000, ge=1, help="random-walk trajectories in each dataset")
    n_directions: int = param(16, ge=2, help="the candidate action set: unit directions")
    n_eval_episodes: int = param(200, ge=1, help="evaluation episodes per evaluation")
    max_steps: int = param(100, ge=1, help="steps allowed per evaluation episode")
    features: bool = param(True, help="the notebook's tanh position features (featurize)")
    # the notebook's shared settings: gamma 0.8, Adam 1e-3, 64 x 3 swish MLPs, a learned actor
    # with BC coefficient 0.01 (GCBC is its own policy)
    method: MethodConfig = param(
        factory=lambda: MethodConfig(
            gamma=0.8,
            lr=1e-3,
            hidden=(64, 64, 64),
            activation="swish",
            goal_current=True,
            actor=True,
        ),
        help="hyperparameters shared by all methods",
    )
    loop: LoopConfig = param(
        factory=lambda: LoopConfig(steps=3000, eval_every=500), help="each unit's training loop"
    )


def run_pointmaze(ctx) -> dict:
    cfg: PointmazeConfig = ctx.config
    env = PointMaze()
    spec = ActionSpec.directions(cfg.n_directions)
    datasets = {}
    for s in range(cfg.n_seeds):
        eps = env.random_walk_dataset(
            np.random.default_rng(ctx.substream(s, 11)), cfg.n_trajectories
        )
        if cfg.features:
            eps = [{**e, "obs": featurize(e["obs"])} for e in eps]
        datasets[s] = episode_dataset(eps, spec)

    def evaluate(method, rng) -> float:
        act = method.act
        if cfg.features:
            act = lambda obs, goal: method.act(featurize(obs), featurize(goal))  # noqa: E731
        return env.evaluate(act, cfg.n_eval_episodes, rng, cfg.max_steps)

    methods = train_methods(ctx, cfg.methods, datasets, spec, cfg.method, cfg.loop, evaluate)
    oracle = env.evaluate(env.oracle_policy(), cfg.n_eval_episodes, np.random.default_rng(ctx.seed))
    return {"methods": methods, "oracle_success": oracle}


def claim_pointmaze(r: dict) -> tuple:
    ms = r["methods"]
    need = ("cmd2", "crl", "gcbc")
    if not all(m in ms for m in need):
        return "methods missing", False
    holds = ms["cmd2"]["mean"] > max(ms["crl"]["mean"], ms["gcbc"]["mean"])
    return "; ".join(fmt(r, m) for m in ms), holds


register(
    Experiment(
        name="cmd.pointmaze",
        # blocked: the claim does not hold at the CPU budget (module docstring, docs/cmd.md)
        wip=True,
        paper=PAPER,
        description="One-way vortex pointmaze from random walks: success vs gradient steps",
        config=PointmazeConfig,
        presets={
            "smoke": PointmazeConfig(
                n_seeds=1,
                n_trajectories=50,
                n_eval_episodes=10,
                max_steps=20,
                method=SMOKE_METHOD,
                loop=SMOKE_LOOP,
            ),
            "quick": PointmazeConfig(),
            "paper": PointmazeConfig(
                n_seeds=5,
                n_trajectories=2000,
                n_eval_episodes=1500,
                method=dataclasses.replace(
                    PointmazeConfig().method, hidden=(256, 256, 256), repr_dim=256
                ),
                loop=LoopConfig(steps=100_000, eval_every=5000, checkpoint_every=5000),
            ),
        },
        run=run_pointmaze,
        claims=[
            Claim(
                "cmd_beats_crl_gcbc",
                "CMD reaches a higher final success rate than CRL and GCBC on the pointmaze "
                "(notebook 'Pointmaze training curves')",
                claim_pointmaze,
            )
        ],
        plots=lambda r, ctx: plot_success(r, ctx, "pointmaze", "pointmaze"),
    )
)
