"""cmd.stitching: grid maze, data only A -> B and B -> C; success on held-out A -> C tasks of
CMD-2, CMD-1, CRL, GCBC, TD and QRL over seeds (notes, "Scaled-down settings")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register

from ..maze import stitching_dataset, stitching_maze, stitching_tasks
from ..methods import METHODS, ActionSpec, MethodConfig
from ..train import LoopConfig, episode_dataset
from .common import (
    ALL_METHODS,
    LABELS,
    PAPER,
    SMOKE_LOOP,
    SMOKE_METHOD,
    ci95,
    fmt,
    plot_success,
    train_methods,
)


def epsilon_greedy(act, n_actions: int, epsilon: float, rng: np.random.Generator):
    """Evaluation policy shared by every method: the method's greedy action, replaced with
    probability `epsilon` by a uniform action (discrete action indices).

    Why: value-based methods separate actions by little (one grid step is about
    log(1/gamma) ~ 0.2 nats at gamma 0.8), so a greedy policy with a single wrong cell loops
    between two cells for ever; a little exploration breaks such loops. It applies to all
    methods alike (GCBC included) with one fixed epsilon, so it favours none.
    """
    if epsilon <= 0:
        return act

    def policy(obs, goal):
        a = np.asarray(act(obs, goal)).copy()
        explore = rng.random(len(a)) < epsilon
        a[explore] = rng.integers(n_actions, size=int(explore.sum()))
        return a

    return policy


@dataclass
class StitchingConfig:
    methods: tuple[str, ...] = param(
        ALL_METHODS, choices=METHODS, nonempty=True, distinct=True, help="methods to compare"
    )
    # 4 seeds: the claim compares 95% t-CIs, whose half-width is 4.30 sd / sqrt(3) at 3 seeds
    # but 3.18 sd / 2 at 4
    n_seeds: int = param(4, ge=1, help="seeds per method, each with its own dataset")
    obs_mode: str = param("onehot", choices=("onehot", "xy"), help="grid cells: one-hot or coords")
    slip: float = param(0.0, ge=0, le=1, help="probability that a move is a uniform action")
    n_per_leg: int = param(200, ge=1, help="walkers per leg (A -> B, B -> C)")
    epsilon: float = param(0.2, ge=0, le=1, help="walkers' random-move probability")
    n_eval_tasks: int = param(200, ge=1, help="held-out A -> C tasks per evaluation")
    max_steps: int = param(100, ge=1, help="steps allowed per evaluation task")
    act_epsilon: float = param(0.1, ge=0, le=1, help="eval: all methods' epsilon (epsilon_greedy)")
    # goal_current: goals from the k >= 0 occupancy, the one for which d_SD is a quasimetric and
    # the CMD-2 target f(g, a_g, g) - f(s, a, g) is >= 0 on positives. bc_coef: the behaviour
    # prior added to every method's action scores (Method.act)
    method: MethodConfig = param(
        factory=lambda: MethodConfig(gamma=0.8, lr=1e-3, goal_current=True, bc_coef=0.3),
        help="hyperparameters shared by all methods",
    )
    # CMD-2 plateaus by ~1000 steps; CMD-1 still moves between 0.7 and 0.95 up to 2000
    loop: LoopConfig = param(
        factory=lambda: LoopConfig(steps=2000, eval_every=500), help="each unit's training loop"
    )


def run_stitching(ctx) -> dict:
    cfg: StitchingConfig = ctx.config
    maze = stitching_maze(slip=cfg.slip, obs_mode=cfg.obs_mode)
    spec = ActionSpec.discrete_actions(maze.action_space.n)
    datasets = {  # one dataset per seed, shared by the methods
        s: episode_dataset(
            stitching_dataset(
                maze, ctx.substream("data", s), n_per_leg=cfg.n_per_leg, epsilon=cfg.epsilon
            ),
            spec,
        )
        for s in range(cfg.n_seeds)
    }

    def evaluate(method, rng) -> float:
        tasks = stitching_tasks(maze, rng, cfg.n_eval_tasks)
        policy = epsilon_greedy(method.act, spec.candidates.shape[0], cfg.act_epsilon, rng)
        return maze.evaluate(policy, tasks, rng, cfg.max_steps)

    methods = train_methods(ctx, cfg.methods, datasets, spec, cfg.method, cfg.loop, evaluate)
    oracle_rng = np.random.default_rng(ctx.seed)
    oracle = maze.evaluate(
        maze.oracle_policy(), stitching_tasks(maze, oracle_rng, cfg.n_eval_tasks), oracle_rng
    )
    return {"methods": methods, "oracle_success": oracle}


def beats(r: dict, winners, losers) -> tuple:
    """Every winner's CI lies above every loser's CI (Student-t 95%, across seeds)."""
    ms = r["methods"]
    present = [m for m in (*winners, *losers) if m in ms]
    holds = all(
        ms[w]["mean"] - ci95(ms[w]) > ms[lo]["mean"] + ci95(ms[lo])
        for w in winners
        if w in ms
        for lo in losers
        if lo in ms
    ) and all(m in ms for m in (*winners, *losers))
    return "; ".join(fmt(r, m) for m in present), holds


def success_rates(r: dict) -> dict:
    """Each method's mean success over the experiment's own seeds."""
    return {LABELS[m]: x["mean"] for m, x in r["methods"].items()}


register(
    Experiment(
        name="cmd.stitching",
        paper=PAPER,
        description="Stitching: success on held-out A -> C tasks from A -> B, B -> C data",
        config=StitchingConfig,
        presets={
            "smoke": StitchingConfig(
                n_seeds=2, n_per_leg=20, n_eval_tasks=20, method=SMOKE_METHOD, loop=SMOKE_LOOP
            ),
            "quick": StitchingConfig(),
            "paper": StitchingConfig(
                n_seeds=5,
                method=dataclasses.replace(
                    StitchingConfig().method, hidden=(512, 512, 512, 512), repr_dim=64
                ),
                loop=LoopConfig(steps=100_000, eval_every=10_000, checkpoint_every=5000),
            ),
        },
        run=run_stitching,
        claims=[
            Claim(
                "cmd_stitches",
                "CMD (both variants) beats CRL and GCBC on stitching, outside the 95% CIs "
                "(notes: 'CMD and QRL should succeed, CRL and GCBC should degrade')",
                lambda r: beats(r, ("cmd2", "cmd1"), ("crl", "gcbc")),
                figure=success_rates,
            ),
        ],
        plots=lambda r, ctx: plot_success(r, ctx, "stitching", "A → C"),
    )
)
