"""Independent units of work inside one run, in order or in forked worker processes.

An experiment that trains many small, independent models (one per method x setting x seed)
hands them to `run_units` as a list of keys and a function `fn(key, unit_ctx) -> dict`. A
unit's result is recorded in the run's checkpoint when it finishes, so a killed run resumed
with `--resume` skips finished units and reruns the unfinished ones from their start: with
each unit seeded from its key, the final results are the same as an uninterrupted run's.

Workers: units run in forked processes, at most `workers` at a time (0 = one per CPU core,
except in quiet runs, i.e. sweep workers, which already fill the cores: there 1). A unit's
metric lines are kept until it finishes and then appended by the parent, each at
`index * stride + step`, so the core's truncation on resume (to the checkpoint's last step)
drops nothing that a finished unit logged.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_lib
import signal
import traceback
from collections.abc import Callable
from typing import Any

import torch

from alignlab.core.errors import AlignlabError


class UnitContext:
    """What a unit sees: its key, buffered metric lines, and a progress callback."""

    def __init__(self, key: str, progress: Callable[[int], None]):
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self._progress = progress

    def log_metrics(self, step: int, **values: Any) -> None:
        self.rows.append({"step": int(step), **values})

    def advance(self, n: int = 1) -> None:
        """Report n more of the unit's `size` steps done (drives the progress bar)."""
        self._progress(n)


def n_workers(requested: int, n_units: int, quiet: bool) -> int:
    """How many units run at once (module docstring), at most n_units."""
    if n_units <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return 1  # CUDA does not survive a fork
    if requested == 0:
        if quiet:
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        requested = cores or 1
    return max(1, min(requested, n_units))


def run_units(
    ctx,
    keys: list[str],
    fn: Callable[[str, UnitContext], dict[str, Any]],
    size: int,
    stride: int | None = None,
    workers: int = 0,
    description: str = "units",
) -> dict[str, dict[str, Any]]:
    """Run `fn(key, unit_ctx)` for every key not finished in ctx's checkpoint; results by key.

    `size` is each unit's number of progress steps (`unit_ctx.advance`); `stride` (default
    `size`) separates the units' metric steps. With workers > 1 a unit must not rely on state
    shared with the parent after the fork, and its torch threads are set to 1.
    """
    if len(set(keys)) != len(keys):
        raise ValueError("unit keys must be unique")
    stride = size if stride is None else stride
    ckpt = ctx.checkpoint.load()
    done: dict[str, dict] = dict(ckpt.state["done"]) if ckpt else {}
    todo = [(i, k) for i, k in enumerate(keys) if k not in done]
    last = [ckpt.step if ckpt else 0]

    def finish(index: int, key: str, result: dict, rows: list[dict]) -> None:
        done[key] = result
        last[0] = max(last[0], (index + 1) * stride)
        ctx.checkpoint.save(last[0], {}, {"done": done})
        for row in rows:
            ctx.log_metrics(index * stride + row.pop("step"), unit=key, **row)

    bar = _Bar(None if ctx.quiet else size * len(todo), len(todo), description)
    try:
        count = n_workers(workers, len(todo), ctx.quiet)
        if count > 1:
            _parallel(todo, fn, count, finish, bar)
        else:
            for index, key in todo:
                uctx = UnitContext(key, bar.advance)
                try:
                    result = fn(key, uctx)
                except AlignlabError:
                    raise
                except Exception as e:  # the same error as a worker's, naming the unit
                    raise AlignlabError(f"unit {key} failed: {type(e).__name__}: {e}") from e
                finish(index, key, result, uctx.rows)
                bar.unit_done()
    finally:
        bar.close()
    return {k: done[k] for k in keys}


def _worker(fn, key, messages, parent) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    torch.set_num_threads(1)
    pending = [0]

    def progress(n: int) -> None:
        pending[0] += n
        if pending[0] >= 10:
            if os.getppid() != parent:  # the parent died: stop, do not linger
                os._exit(1)
            messages.put(("progress", key, pending[0], None))
            pending[0] = 0

    try:
        uctx = UnitContext(key, progress)
        out = fn(key, uctx)
        messages.put(("progress", key, pending[0], None))
        messages.put(("done", key, out, uctx.rows))
    except BaseException:
        messages.put(("error", key, traceback.format_exc(), None))
        raise SystemExit(1) from None


def _parallel(todo, fn, count, finish, bar) -> None:
    mp = multiprocessing.get_context("fork")
    messages = mp.Queue()
    pending = list(todo)
    running: dict[str, tuple[int, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < count:
                index, key = pending.pop(0)
                proc = mp.Process(target=_worker, args=(fn, key, messages, os.getpid()))
                proc.start()
                running[key] = (index, proc)
            try:
                kind, key, payload, rows = messages.get(timeout=1.0)
            except queue_lib.Empty:
                dead = [k for k, (_, p) in running.items() if p.exitcode not in (None, 0)]
                if dead:
                    code = running[dead[0]][1].exitcode
                    raise AlignlabError(
                        f"the worker running {dead[0]} died (exit code {code})"
                    ) from None
                continue
            if kind == "progress":
                bar.advance(payload)
            elif kind == "error":
                raise AlignlabError(f"unit {key} failed in its worker:\n{payload}")
            else:
                index, proc = running.pop(key)
                proc.join()
                finish(index, key, payload, rows)
                bar.unit_done()
    finally:
        for _, proc in running.values():
            proc.terminate()
        for _, proc in running.values():
            proc.join()


class _Bar:
    """One progress bar over every unit's steps; silent when total is None (quiet runs)."""

    def __init__(self, total: int | None, n_units: int, description: str):
        self.n_units, self.n_done, self.description = n_units, 0, description
        self.progress = None
        if total:
            from alignlab.core.console import progress

            self.progress = progress()
            self.progress.start()
            self.task = self.progress.add_task(self._label(), total=total)

    def _label(self) -> str:
        return f"{self.description} {self.n_done}/{self.n_units}"

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def unit_done(self) -> None:
        self.n_done += 1
        if self.progress is not None:
            self.progress.update(self.task, description=self._label())

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
