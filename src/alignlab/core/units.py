"""Independent units of work inside one run, in order or in forked worker processes.

An experiment that trains many small, independent models (one per method × setting × seed)
hands them to `run_units` as a list of keys and a function `fn(key, uctx) -> dict`.

- **Results.** A unit's result is recorded in the run's checkpoint when it finishes, so a
  resumed run skips finished units. Results go through JSON first, so a fresh and a resumed
  run return the same types.
- **Checkpoints inside a unit.** `uctx.checkpoint` is the unit's own folder
  (`units/<key>/checkpoint`): a unit that saves there mid-way and calls
  `uctx.checkpoint.load()` when it starts continues from that point after a kill. The unit's
  buffered metric lines and progress are saved with it. The folder is removed once the unit is
  recorded done.
- **Seeding.** A unit must draw every random number from streams named by its key
  (`uctx.substream(...)`, `core.seeding`), never from a stream shared with other units: then
  its numbers do not depend on which units run before it, or in which process.
- **Threads.** A unit runs on one torch thread, in order and in workers alike, so its results
  do not depend on `--workers`.
- **Workers.** Units run in forked processes, at most `ctx.workers` at a time (None: one per
  available core; 1: in order in this process; CUDA in use: in order, as CUDA does not survive
  a fork). A worker that dies is reported once its last messages have been read.
- **Metric lines** of a unit are kept until it finishes; the parent then appends them, each at
  `index * stride + step` (0 <= step <= stride) and tagged with `unit=<key>`, and only then
  records the unit as done. A resumed run drops the lines of units not recorded as done, so no
  unit's lines appear twice.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue as queue_lib
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignlab.core.checkpoint import Checkpointer
from alignlab.core.context import UNITS, Context, read_metrics
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_text, dumps_json
from alignlab.core.resources import available_cores, torch_threads


def unit_folder(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / UNITS / key.replace("/", "-")


class UnitCheckpointer(Checkpointer):
    """A unit's checkpoint, which also carries the unit's buffered metric lines and progress."""

    def __init__(self, owner: Path, uctx: UnitContext):
        super().__init__(owner)
        self.uctx = uctx

    def _state(self, state: dict) -> dict:
        return {**state, "__rows__": self.uctx.rows, "__progress__": self.uctx.progress_done}

    def load(self):
        ck = super().load()
        if ck is not None:
            self.uctx.rows = list(ck.state.pop("__rows__", []))
            self.uctx.progress_done = int(ck.state.pop("__progress__", 0))
            self.uctx.log(f"resuming from its checkpoint at step {ck.step}")
        return ck


class UnitContext(Context):
    """What a unit sees (the context interface of `core.context`)."""

    quiet = True

    def __init__(self, run: Context, key: str, progress: Callable[[int], None]):
        self.key, self.run = key, run
        self.config, self.seed, self.device = run.config, run.seed, run.device
        self.dir = unit_folder(run.dir, key)
        self.checkpoint = UnitCheckpointer(self.dir, self)
        self.rows: list[dict[str, Any]] = []
        self.progress_done = 0
        self._progress = progress
        self.resume = self.checkpoint.last_step() is not None

    @property
    def name(self) -> str:
        return self.key

    def log(self, message: str) -> None:
        """A line in the run's log.txt (appended whole, so workers never interleave)."""
        with open(self.run.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"[unit {self.key}] {message}\n")

    def log_metrics(self, step: int, **values: Any) -> None:
        self.rows.append({"step": int(step), **values})

    def advance(self, n: int = 1) -> None:
        """Report n more of the unit's `size` steps done (drives the progress bar)."""
        self.progress_done += n
        self._progress(n)

    def track(self, iterable, total=None, description=""):
        """Iterate, counting each item as progress when it starts, so a checkpoint saved in the
        loop's body records the step it is saved at."""
        for item in iterable:
            self.advance(1)
            yield item


def n_workers(requested: int | None, n_units: int) -> int:
    """How many units run at once (module docstring), at most n_units."""
    if n_units <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return 1  # CUDA does not survive a fork
    count = available_cores() if requested is None else requested
    return max(1, min(count, n_units))


def _saved_progress(run_dir: Path, key: str) -> int:
    meta = Checkpointer(unit_folder(run_dir, key)).meta()
    return 0 if meta is None else int(meta["state"].get("__progress__", 0))


def run_units(
    ctx: Context,
    keys: list[str],
    fn: Callable[[str, UnitContext], dict[str, Any]],
    size: int,
    stride: int | None = None,
    description: str = "units",
    workers: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run `fn(key, unit_ctx)` for every key not finished in ctx's checkpoint; results by key.

    `size` is each unit's number of progress steps (`uctx.advance`/`uctx.track`); `stride`
    (default `size`) separates the units' metric steps. `workers` overrides `ctx.workers`.
    """
    if len(set(keys)) != len(keys):
        raise ValueError("unit keys must be unique")
    folders = {unit_folder(ctx.dir, k) for k in keys}
    if len(folders) != len(keys):
        raise ValueError("unit keys must stay distinct with '/' read as '-'")
    stride = size if stride is None else stride
    ckpt = ctx.checkpoint.load()
    done: dict[str, dict] = dict(ckpt.state["done"]) if ckpt else {}
    for k in done:  # a unit recorded done just before a crash may still have its folder
        shutil.rmtree(unit_folder(ctx.dir, k), ignore_errors=True)
    todo = [(i, k) for i, k in enumerate(keys) if k not in done]
    last = [ckpt.step if ckpt else 0]
    _drop_unfinished_rows(ctx, set(keys) - set(done))

    def finish(index: int, key: str, result: dict, rows: list[dict]) -> None:
        bad = [r["step"] for r in rows if not 0 <= r["step"] <= stride]
        if bad:
            raise AlignlabError(f"unit {key} logged steps {bad[:3]} outside [0, {stride}]")
        for row in rows:  # the lines first: a crash before the save reruns the unit
            row = dict(row)
            ctx.log_metrics(index * stride + row.pop("step"), unit=key, **row)
        done[key] = json.loads(dumps_json(result))
        last[0] = max(last[0], (index + 1) * stride)
        ctx.checkpoint.save(last[0], {}, {"done": done})
        shutil.rmtree(unit_folder(ctx.dir, key), ignore_errors=True)

    resumed = sum(min(size, _saved_progress(ctx.dir, k)) for _, k in todo)
    bar = ctx.bar(size * len(todo), description, completed=resumed)
    label = lambda n: f"{description} {n}/{len(todo)}"  # noqa: E731
    bar.describe(label(0))
    count = n_workers(ctx.workers if workers is None else workers, len(todo))
    try:
        if count > 1:
            _parallel(ctx, todo, fn, count, finish, bar, label)
        else:
            for n, (index, key) in enumerate(todo):
                uctx = UnitContext(ctx, key, bar.advance)
                try:
                    with torch_threads(1):
                        result = fn(key, uctx)
                except AlignlabError:
                    raise
                except Exception as e:  # the same error as a worker's, naming the unit
                    raise AlignlabError(f"unit {key} failed: {type(e).__name__}: {e}") from e
                finish(index, key, result, uctx.rows)
                bar.describe(label(n + 1))
    finally:
        bar.close()
    units_dir = Path(ctx.dir) / UNITS
    if units_dir.is_dir() and not any(units_dir.iterdir()):
        units_dir.rmdir()
    return {k: done[k] for k in keys}


def _drop_unfinished_rows(ctx: Context, unfinished: set[str]) -> None:
    """Remove metric lines of units that are not recorded as done (a crash between writing a
    unit's lines and saving the checkpoint), so their rerun does not log them twice."""
    path = Path(ctx.dir) / "metrics.jsonl"
    if not unfinished or not path.exists():
        return
    rows = read_metrics(ctx.dir)
    keep = [r for r in rows if r.get("unit") not in unfinished]
    if len(keep) < len(rows):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _worker(ctx, fn, key, messages, parent) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    import torch

    torch.set_num_threads(1)
    pending, sent = [0], [time.monotonic()]

    def progress(n: int) -> None:
        pending[0] += n
        now = time.monotonic()
        if now - sent[0] > 0.2:
            if os.getppid() != parent:  # the parent died: stop, do not linger
                os._exit(1)
            messages.put(("progress", key, pending[0]))
            pending[0], sent[0] = 0, now

    try:
        uctx = UnitContext(ctx, key, progress)
        out = fn(key, uctx)
        # pickled here, so an unpicklable result fails this unit instead of the queue's
        # feeder thread (which would only print it and leave the parent waiting)
        payload = pickle.dumps((out, uctx.rows))
        messages.put(("progress", key, pending[0]))
        messages.put(("done", key, payload))
    except BaseException:
        messages.put(("error", key, traceback.format_exc()))
        raise SystemExit(1) from None


def _parallel(ctx, todo, fn, count, finish, bar, label) -> None:
    mp = multiprocessing.get_context("fork")
    messages = mp.Queue()
    pending = list(todo)
    running: dict[str, tuple[int, Any]] = {}
    n_done = 0

    def handle(kind: str, key: str, payload: Any) -> None:
        nonlocal n_done
        if kind == "progress":
            bar.advance(payload)
        elif kind == "error":
            raise AlignlabError(f"unit {key} failed in its worker:\n{payload}")
        else:
            index, proc = running.pop(key)
            proc.join()
            out, rows = pickle.loads(payload)  # our own worker's bytes, never a file
            finish(index, key, out, rows)
            n_done += 1
            bar.describe(label(n_done))

    try:
        while pending or running:
            while pending and len(running) < count:
                index, key = pending.pop(0)
                proc = mp.Process(target=_worker, args=(ctx, fn, key, messages, os.getpid()))
                proc.start()
                running[key] = (index, proc)
            try:
                handle(*messages.get(timeout=1.0))
                continue
            except queue_lib.Empty:
                pass
            if not any(p.exitcode is not None for _, p in running.values()):
                continue
            # A worker has exited: its last messages may still be in the pipe. Read them all
            # before deciding that it died without reporting.
            while True:
                try:
                    handle(*messages.get(timeout=0.5))
                except queue_lib.Empty:
                    break
            dead = [(k, p.exitcode) for k, (_, p) in running.items() if p.exitcode is not None]
            if dead:
                key, code = dead[0]
                raise AlignlabError(f"the worker running unit {key} died (exit code {code})")
    finally:
        for _, proc in running.values():
            proc.terminate()
        for _, proc in running.values():
            proc.join()
