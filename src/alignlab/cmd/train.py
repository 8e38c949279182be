"""The shared offline training loop: sample -> update -> log -> evaluate -> checkpoint.

One *unit* is one method trained on one dataset with one seed. An experiment trains a list of
units in order inside one run; `train_units` checkpoints the unit in progress every
`checkpoint_every` steps (weights, Adam state, the sampling RNG, the curve so far) and every
finished unit's results, so a killed run resumed with `--resume` skips finished units, reloads
the unfinished one at its last checkpoint and ends with the same results.json.

Determinism: each unit seeds torch (initialisation) and its own numpy sampling Generator from
(run seed, unit seed, method); evaluation draws from a Generator seeded by (unit, step), so no
evaluation randomness needs checkpointing. Metric lines carry a run-global step
(unit index * steps + step), which is what the core truncates to on resume.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from alignlab.rl import EpisodeDataset, to_torch

from .methods import METHODS, ActionSpec, Method, MethodConfig


@dataclasses.dataclass
class LoopConfig:
    """How long and how often: gradient steps, logging, evaluation, checkpoints."""

    steps: int = 5000
    log_every: int = 250
    eval_every: int = 1000
    checkpoint_every: int = 1000

    def validate(self):
        for name in ("steps", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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


def unit_seed(run_seed: int, unit: Unit, *extra: int) -> list[int]:
    """A SeedSequence entropy list for (run seed, unit seed, method, *extra)."""
    return [run_seed, unit.seed, zlib.crc32(unit.method.encode()), *extra]


def make_method(name: str, obs_dim: int, spec: ActionSpec, cfg: MethodConfig, seed) -> Method:
    torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    return METHODS[name](obs_dim, spec, cfg)


def train_units(
    ctx,
    units: list[Unit],
    data: EpisodeDataset | Callable[[Unit], EpisodeDataset],
    spec: ActionSpec,
    method_cfg: MethodConfig | Callable[[Unit], MethodConfig],
    loop: LoopConfig,
    evaluate: EvalFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every unit in order (resuming from ctx.checkpoint); results keyed by unit.key.

    Each unit's result: "curve" [[step, success], ...] (when `evaluate`), "final_success",
    "losses" (the last logged losses) and whatever `finish(method)` returns.
    """
    ckpt = ctx.checkpoint.load()
    done: dict[str, dict] = dict(ckpt.state["done"]) if ckpt else {}
    for index, unit in enumerate(units):
        if unit.key in done:
            continue
        resume = ckpt if ckpt is not None and ckpt.state.get("current") == unit.key else None
        dataset = data(unit) if callable(data) else data
        cfg = method_cfg(unit) if callable(method_cfg) else method_cfg
        done[unit.key] = _train_unit(
            ctx, unit, index, dataset, spec, cfg, loop, evaluate, finish, resume, done
        )
        ctx.checkpoint.save((index + 1) * loop.steps, {}, {"done": done, "current": None})
    return {u.key: done[u.key] for u in units}


def _train_unit(ctx, unit, index, data, spec, cfg, loop, evaluate, finish, resume, done):
    obs_dim = data.obs.shape[1]
    method = make_method(unit.method, obs_dim, spec, cfg, unit_seed(ctx.seed, unit))
    rng = np.random.default_rng(unit_seed(ctx.seed, unit, 1))
    start, curve, losses = 0, [], {}
    if resume is not None:
        method.load_full_state(resume.tensors)
        rng.bit_generator.state = resume.state["rng"]
        start, curve, losses = resume.state["step"], resume.state["curve"], resume.state["losses"]
    base = index * loop.steps
    min_offset = 0 if cfg.goal_current else 1
    t0, t_sample, n_timed = time.perf_counter(), 0.0, 0
    steps = ctx.track(range(start, loop.steps), total=loop.steps - start, description=unit.key)
    for step in steps:
        ts = time.perf_counter()
        batch = to_torch(data.sample(cfg.batch_size, rng, cfg.gamma, min_offset=min_offset))
        t_sample += time.perf_counter() - ts
        losses = method.update(batch)
        n_timed += 1
        done_steps = step + 1
        if done_steps % loop.log_every == 0:
            elapsed = time.perf_counter() - t0
            ctx.log_metrics(
                base + done_steps,
                method=unit.method,
                seed=unit.seed,
                **losses,
                steps_per_s=n_timed / elapsed,
                sample_share=t_sample / elapsed,
            )
            t0, t_sample, n_timed = time.perf_counter(), 0.0, 0
        if evaluate is not None and (done_steps % loop.eval_every == 0 or done_steps == loop.steps):
            success = evaluate(method, np.random.default_rng(unit_seed(ctx.seed, unit, 2, step)))
            curve.append([done_steps, success])
            ctx.log_metrics(base + done_steps, method=unit.method, seed=unit.seed, success=success)
        if done_steps % loop.checkpoint_every == 0 and done_steps < loop.steps:
            state = {
                "done": done,
                "current": unit.key,
                "step": done_steps,
                "rng": rng.bit_generator.state,
                "curve": curve,
                "losses": losses,
            }
            ctx.checkpoint.save(base + done_steps, method.full_state(), state)
    out: dict[str, Any] = {"losses": losses}
    if evaluate is not None:
        out.update(curve=curve, final_success=curve[-1][1])
    if finish is not None:
        out.update(finish(method))
    return out
