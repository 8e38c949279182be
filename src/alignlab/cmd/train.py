"""The shared offline training loop: sample -> update -> log -> evaluate -> checkpoint.

One *unit* is one method trained on one dataset with one seed. An experiment trains a list of
units in order inside one run; `train_units` checkpoints the unit in progress every
`checkpoint_every` steps (weights, Adam state, the sampling RNG, the curve so far) and every
finished unit's results, so a killed run resumed with `--resume` skips finished units, reloads
the unfinished one at its last checkpoint and ends with the same results.json.

Parallel units (`LoopConfig.workers`): units are independent, so with workers > 1 they train
in forked worker processes, one unit per process, at most `workers` at a time (0 = one per CPU
core). A worker checkpoints its unit under `units/<unit>/checkpoint` and sends its metric lines
and result back when the unit ends; the parent then records the unit as done in the run's
checkpoint and appends its metric lines. Results are identical to the sequential loop's (same
per-unit seeds), and a resumed run continues each unfinished unit from its own checkpoint.
With workers = 0 (auto), quiet runs (sweep workers) train units in order: sweeps already
parallelise across runs.

Determinism: each unit seeds torch (initialisation) and its own numpy sampling Generator from
(run seed, unit seed, method); evaluation draws from a Generator seeded by (unit, step), so no
evaluation randomness needs checkpointing. Metric lines carry a run-global step
(unit index * steps + step), which is what the core truncates to on resume.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue as queue_lib
import shutil
import signal
import time
import traceback
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.checkpoint import Checkpointer
from alignlab.core.units import n_workers as unit_workers
from alignlab.rl import EpisodeDataset, to_torch

from .methods import METHODS, ActionSpec, Method, MethodConfig


@dataclasses.dataclass
class LoopConfig:
    """How long and how often: gradient steps, logging, evaluation, checkpoints."""

    steps: int = 5000
    log_every: int = 250
    eval_every: int = 1000
    checkpoint_every: int = 1000
    # units trained at once in worker processes: 0 = one per CPU core, 1 = in order in this
    # process. Speed only: the results are the same for every value.
    workers: int = 0

    def validate(self):
        for name in ("steps", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per CPU core), got {self.workers}")


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
    todo = [(i, u) for i, u in enumerate(units) if u.key not in done]
    n_workers = unit_workers(loop.workers, len(todo), ctx.quiet)
    if n_workers > 1:
        _train_parallel(ctx, todo, n_workers, data, spec, method_cfg, loop, evaluate, finish, done)
        return {u.key: done[u.key] for u in units}
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


# ---- parallel units ------------------------------------------------------------------------


def unit_dir(run_dir, unit: Unit):
    return run_dir / "units" / unit.key.replace("/", "-")


class _WorkerContext:
    """What `_train_unit` needs from a RunContext, inside a worker process: progress goes to
    the parent through a queue, metric lines are kept for the parent to append, checkpoints go
    to the unit's own folder."""

    quiet = True

    def __init__(self, ctx, unit: Unit, messages, parent_pid: int):
        self.seed, self.unit, self.messages, self.parent_pid = ctx.seed, unit, messages, parent_pid
        self.checkpoint = Checkpointer(unit_dir(ctx.dir, unit))
        self.rows: list[dict[str, Any]] = []

    def track(self, iterable, total=None, description=""):
        pending = 0
        for item in iterable:
            yield item
            pending += 1
            if pending == 25:
                if os.getppid() != self.parent_pid:  # the parent died: stop, do not linger
                    os._exit(1)
                self.messages.put(("progress", self.unit.key, pending, None))
                pending = 0
        self.messages.put(("progress", self.unit.key, pending, None))

    def log_metrics(self, step: int, **values) -> None:
        self.rows.append({"step": int(step), **values})


def _worker_main(ctx, index, unit, dataset, spec, cfg, loop, evaluate, finish, messages, parent):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    try:
        wctx = _WorkerContext(ctx, unit, messages, parent)
        ckpt = wctx.checkpoint.load()
        resume = ckpt if ckpt is not None and ckpt.state.get("current") == unit.key else None
        if resume is not None:
            messages.put(("resumed", unit.key, resume.state["step"], None))
        out = _train_unit(wctx, unit, index, dataset, spec, cfg, loop, evaluate, finish, resume, {})
        messages.put(("done", unit.key, out, wctx.rows))
    except BaseException:
        messages.put(("error", unit.key, traceback.format_exc(), None))
        raise SystemExit(1) from None


def _train_parallel(ctx, todo, n_workers, data, spec, method_cfg, loop, evaluate, finish, done):
    """Train the `todo` units in forked workers, at most n_workers at a time (module docstring)."""
    mp = multiprocessing.get_context("fork")
    messages = mp.Queue()
    pending = list(todo)
    running: dict[str, tuple[int, Unit, Any]] = {}
    last_step = ctx.checkpoint.last_step() or 0
    if ctx.quiet:
        bar = None
    else:  # steps still to run: a resumed unit continues from its own checkpoint's step
        left = 0
        for index, unit in todo:
            saved = Checkpointer(unit_dir(ctx.dir, unit)).last_step()
            left += loop.steps - (0 if saved is None else saved - index * loop.steps)
        bar = _Bar(left, len(todo))
    try:
        while pending or running:
            while pending and len(running) < n_workers:
                index, unit = pending.pop(0)
                dataset = data(unit) if callable(data) else data  # built here, shared by fork
                cfg = method_cfg(unit) if callable(method_cfg) else method_cfg
                args = (ctx, index, unit, dataset, spec, cfg, loop, evaluate, finish)
                proc = mp.Process(target=_worker_main, args=(*args, messages, os.getpid()))
                proc.start()
                running[unit.key] = (index, unit, proc)
            try:
                kind, key, payload, rows = messages.get(timeout=1.0)
            except queue_lib.Empty:
                dead = [k for k, (_, _, p) in running.items() if p.exitcode not in (None, 0)]
                if dead:
                    code = running[dead[0]][2].exitcode
                    raise AlignlabError(
                        f"the worker training {dead[0]} died (exit code {code})"
                    ) from None
                continue
            if kind == "progress":
                if bar is not None:
                    bar.advance(payload)
            elif kind == "resumed":
                ctx.log(f"{key}: resuming from its checkpoint at step {payload}")
            elif kind == "error":
                raise AlignlabError(f"training {key} failed in its worker:\n{payload}")
            else:  # done: record it in the run's checkpoint, then append its metric lines
                index, unit, proc = running.pop(key)
                proc.join()
                done[key] = payload
                last_step = max(last_step, (index + 1) * loop.steps)
                ctx.checkpoint.save(last_step, {}, {"done": done, "current": None})
                for row in rows:
                    ctx.log_metrics(**row)
                shutil.rmtree(unit_dir(ctx.dir, unit), ignore_errors=True)
                if bar is not None:
                    bar.unit_done()
        shutil.rmtree(ctx.dir / "units", ignore_errors=True)  # every unit's folder is gone
    finally:
        for _, _, proc in running.values():
            proc.terminate()
        for _, _, proc in running.values():
            proc.join()
        if bar is not None:
            bar.close()


class _Bar:
    """One progress bar over all units' gradient steps."""

    def __init__(self, total: int, n_units: int):
        from alignlab.core.console import progress

        self.n_units, self.n_done = n_units, 0
        self.progress = progress()
        self.progress.start()
        self.task = self.progress.add_task(self._label(), total=total)

    def _label(self) -> str:
        return f"units {self.n_done}/{self.n_units} (parallel)"

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def unit_done(self) -> None:
        self.n_done += 1
        self.progress.update(self.task, description=self._label())

    def close(self) -> None:
        self.progress.stop()
