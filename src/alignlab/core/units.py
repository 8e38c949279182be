"""Independent units of work inside one run, in order or in forked worker processes.

An experiment that trains many small, independent models (one per method x setting x seed)
hands them to `run_units` as a list of keys and a function `fn(key, unit_ctx) -> dict`. A
unit's result is recorded in the run's checkpoint when it finishes, so a killed run resumed
with `--resume` skips finished units and reruns the unfinished ones from their start: with
each unit seeded from its key, the final results are the same as an uninterrupted run's.

Workers: units run in forked processes, at most `workers` at a time (0 = one per CPU core,
except in quiet runs, i.e. sweep workers, which already fill the cores: there 1). A unit's
metric lines are kept until it finishes; the parent then appends them, each at
`index * stride + step` (0 <= step <= stride) and tagged with the unit's key, and only then
records the unit as done. A resumed run first drops the lines of units not recorded as done
(written just before a crash), so no unit's lines appear twice.
Results go through JSON before they are recorded, so a fresh and a resumed run return the
same types.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue as queue_lib
import signal
import traceback
from collections.abc import Callable
from typing import Any

import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_text, dumps_json


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
    _drop_unfinished_rows(ctx, set(keys) - set(done))

    def finish(index: int, key: str, result: dict, rows: list[dict]) -> None:
        bad = [r["step"] for r in rows if not 0 <= r["step"] <= stride]
        if bad:
            raise AlignlabError(f"unit {key} logged steps {bad[:3]} outside [0, {stride}]")
        for row in rows:  # the lines first: a crash before the save reruns the unit
            ctx.log_metrics(index * stride + row.pop("step"), unit=key, **row)
        done[key] = json.loads(dumps_json(result))
        last[0] = max(last[0], (index + 1) * stride)
        ctx.checkpoint.save(last[0], {}, {"done": done})

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


def _drop_unfinished_rows(ctx, unfinished: set[str]) -> None:
    """Remove metric lines of units that are not recorded as done (a crash between writing a
    unit's lines and saving the checkpoint), so their rerun does not log them twice."""
    path = ctx.dir / "metrics.jsonl"
    if not unfinished or not path.exists():
        return
    rows = ctx.metrics()
    keep = [r for r in rows if r.get("unit") not in unfinished]
    if len(keep) < len(rows):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


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
        # pickled here, so an unpicklable result fails this unit instead of the queue's
        # feeder thread (which would only print it and leave the parent waiting)
        payload = pickle.dumps((out, uctx.rows))
        messages.put(("progress", key, pending[0], None))
        messages.put(("done", key, payload, None))
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
                # a worker that exited (even with 0) and sent nothing more is dead: the queue
                # is empty, so its "done" cannot still be on the way
                dead = [k for k, (_, p) in running.items() if p.exitcode is not None]
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
                out, rows = pickle.loads(payload)  # our own worker's bytes, never a file
                finish(index, key, out, rows)
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
            # no refresh thread: workers are forked while the bar runs, and a fork taken while
            # another thread holds a lock (the console's) can deadlock the child
            self.progress.live.auto_refresh = False
            self.progress.start()
            self.task = self.progress.add_task(self._label(), total=total)

    def _label(self) -> str:
        return f"{self.description} {self.n_done}/{self.n_units}"

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)
            self.progress.refresh()

    def unit_done(self) -> None:
        self.n_done += 1
        if self.progress is not None:
            self.progress.update(self.task, description=self._label())
            self.progress.refresh()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
