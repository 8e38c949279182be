"""The shared offline training loop of one unit: sample -> update -> log -> evaluate -> checkpoint.

A *unit* is one method trained on one dataset with one seed (`Unit(method, seed)`, key
`unit.key`). An experiment hands its units to `alignlab.core.units.run_units`, which runs
them in order or in forked workers (`--workers`), one torch thread each, records each finished
unit's result in the run's checkpoint and appends its metric lines. `train_unit` is the body
of one unit: it checkpoints into the unit's own folder (`uctx.checkpoint`) every
`checkpoint_every` steps (the weights, Adam's state, the sampling Generator, the curve and the
last losses), so a unit killed mid-way continues from its last checkpoint and ends with the
same result.

Determinism: a unit seeds torch (initialisation) and its numpy sampling Generator from the
streams (run seed, unit seed, method[, 1]) of `core.seeding`; each evaluation draws from the
stream (run seed, unit seed, method, 2, step), so no evaluation randomness needs
checkpointing. The unit's metric lines carry its local step 0..steps; the core places them at
unit index * steps + step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from alignlab.core.config import param
from alignlab.core.seeding import seed_torch
from alignlab.rl import EpisodeDataset, to_torch

from .methods import METHODS, ActionSpec, Method, MethodConfig


@dataclasses.dataclass
class LoopConfig:
    """How long and how often: gradient steps, logging, evaluation, checkpoints."""

    steps: int = param(5000, ge=1, help="gradient steps per unit")
    log_every: int = param(250, ge=1, help="steps between metric lines of losses and speed")
    eval_every: int = param(1000, ge=1, help="steps between evaluations (and at the last step)")
    checkpoint_every: int = param(1000, ge=1, help="steps between a unit's own checkpoints")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One training job: `method` on the experiment's data with seed `seed`."""

    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/seed{self.seed}"


EvalFn = Callable[[Method, np.random.Generator], float]
FinishFn = Callable[[Method], dict[str, Any]]


def episode_dataset(episodes: list[dict[str, np.ndarray]], spec: ActionSpec) -> EpisodeDataset:
    """The dataset a unit samples: episodes' "obs" and "actions", the actions in the networks'
    encoding (one-hot for discrete actions)."""
    return EpisodeDataset.from_episodes(
        [{"obs": e["obs"], "action": spec.encode(e["actions"])} for e in episodes]
    )


def make_method(
    name: str, obs_dim: int, spec: ActionSpec, cfg: MethodConfig, seed: int, *stream: object
) -> Method:
    """`METHODS[name]`, its weights initialised from the stream (seed, *stream)."""
    seed_torch(seed, *stream)
    return METHODS[name](obs_dim, spec, cfg)


def train_unit(
    uctx,
    unit: Unit,
    data: EpisodeDataset,
    spec: ActionSpec,
    cfg: MethodConfig,
    loop: LoopConfig,
    evaluate: EvalFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """Train one unit in its unit context `uctx` (module docstring), resuming from its own
    checkpoint when it has one.

    The result: "losses" (the last logged losses), "curve" [[step, success], ...] and
    "final_success" (when `evaluate`), and whatever `finish(method)` returns.
    """
    method = make_method(
        unit.method, data.obs.shape[1], spec, cfg, uctx.seed, unit.seed, unit.method
    )
    rng = np.random.default_rng(uctx.substream(unit.seed, unit.method, 1))
    start, curve, losses = 0, [], {}
    ck = uctx.checkpoint.load()
    if ck is not None:
        ck.restore(
            modules={"method": method},
            optimizers={"method": method.optimizer},
            generators={"sampler": rng},
        )
        start, curve, losses = ck.step, ck.state["curve"], ck.state["losses"]
    min_offset = 0 if cfg.goal_current else 1
    t0, t_sample, n_timed = time.perf_counter(), 0.0, 0
    for step in uctx.track(range(start, loop.steps)):
        ts = time.perf_counter()
        batch = to_torch(data.sample(cfg.batch_size, rng, cfg.gamma, min_offset=min_offset))
        t_sample += time.perf_counter() - ts
        losses = method.update(batch)
        n_timed += 1
        done = step + 1
        if done % loop.log_every == 0:
            elapsed = time.perf_counter() - t0
            uctx.log_metrics(
                done,
                method=unit.method,
                seed=unit.seed,
                **losses,
                steps_per_s=n_timed / elapsed,
                sample_time_frac=t_sample / elapsed,
            )
            t0, t_sample, n_timed = time.perf_counter(), 0.0, 0
        if evaluate is not None and (done % loop.eval_every == 0 or done == loop.steps):
            eval_rng = np.random.default_rng(uctx.substream(unit.seed, unit.method, 2, step))
            success = evaluate(method, eval_rng)
            curve.append([done, success])
            uctx.log_metrics(done, method=unit.method, seed=unit.seed, success=success)
        if done % loop.checkpoint_every == 0 and done < loop.steps:
            uctx.checkpoint.save(
                done,
                state={"curve": curve, "losses": losses},
                modules={"method": method},
                optimizers={"method": method.optimizer},
                generators={"sampler": rng},
            )
    out: dict[str, Any] = {"losses": losses}
    if evaluate is not None:
        out.update(curve=curve, final_success=curve[-1][1])
    if finish is not None:
        out.update(finish(method))
    return out
