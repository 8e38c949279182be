"""What an experiment's code sees: the run context, its sequential stages, and its units.

Every context offers the same few things, so training code takes "a context" and runs
unchanged in a whole run, in one stage of it, in a unit in a worker process, or under a
command-line entry point (`RunContext.standalone`, e.g. for torchrun):

    ctx.config, ctx.seed, ctx.device, ctx.quiet, ctx.resume, ctx.dir
    ctx.log(message)                    log.txt (and the console unless quiet)
    ctx.log_metrics(step, **values)     one line of metrics.jsonl
    ctx.track(iterable, total, desc)    iterate with a progress bar
    ctx.bar(total, desc)                a progress bar to drive by hand (console.Bar)
    ctx.checkpoint                      this context's own Checkpointer
    ctx.substream(*parts)               the SeedSequence of the stream (run seed, *parts)

Stages (`ctx.stage(name, steps)`) run one after another inside a run (a teacher, then each
student). Each has its own checkpoint folder (`stages/<name>/checkpoint`), kept after the
stage ends, so a finished stage's final state survives the next stage's checkpoints, and its
metric lines are numbered from an offset the run assigns: stage k's local steps 0..steps map
to offset_k + 0..steps, offset_{k+1} = offset_k + steps + 1, and each line is tagged with the
stage's name. A stage is reserved when it is created, trained in or not (a cached teacher
still holds its span), so a resumed run numbers every stage the same way.

On resume, metric lines after the last committed step are dropped: the newest of the run's
checkpoint and every stage's checkpoint (offset + step).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.checkpoint import Checkpointer
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_text
from alignlab.core.seeding import substream

STAGES = "stages"
UNITS = "units"


class Context:
    """The shared part of every context (module docstring). Subclasses set the attributes
    and define `log` and `log_metrics`."""

    config: Any
    seed: int
    device: str
    quiet: bool
    resume: bool
    dir: Path
    checkpoint: Checkpointer

    def log(self, message: str) -> None:
        raise NotImplementedError

    def log_metrics(self, step: int, **values: Any) -> None:
        raise NotImplementedError

    def bar(self, total: int | None, description: str = "", completed: int = 0):
        from alignlab.core.console import Bar

        return Bar(total, description or self.name, enabled=not self.quiet, completed=completed)

    def track(
        self, iterable: Iterable, total: int | None = None, description: str = ""
    ) -> Iterator:
        """Iterate with a progress bar (silent in quiet runs)."""
        with self.bar(total, description) as bar:
            for item in iterable:
                yield item
                bar.advance(1)

    def substream(self, *parts: object) -> np.random.SeedSequence:
        return substream(self.seed, *parts)

    @property
    def name(self) -> str:
        raise NotImplementedError


def plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """Metric values as plain numbers (0-d tensors and numpy scalars unwrapped)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


class RunContext(Context):
    """The context of one run (ARCHITECTURE.md, "The experiment protocol")."""

    def __init__(
        self,
        experiment: Any,
        config: Any,
        preset: str,
        seed: int,
        dir: Path,
        device: str = "cpu",
        resume: bool = False,
        quiet: bool = False,
        rng: np.random.Generator | None = None,
        threads: int | None = None,
        workers: int | None = None,
        name: str | None = None,
    ):
        self.experiment, self.config, self.preset, self.seed = experiment, config, preset, seed
        self.dir, self.device, self.resume, self.quiet = Path(dir), device, resume, quiet
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.threads, self.workers = threads, workers
        self._name = name or getattr(experiment, "name", "run")
        self.checkpoint = Checkpointer(self.dir, self.rng)
        self._next_offset = 0
        self._stages: set[str] = set()
        self._t0 = time.perf_counter()

    @property
    def name(self) -> str:
        return self._name

    @classmethod
    def standalone(
        cls,
        out: str | Path,
        name: str,
        config: Any,
        seed: int = 0,
        device: str = "cpu",
        resume: bool = False,
        quiet: bool = False,
    ) -> RunContext:
        """A context for a command-line entry point (no registered experiment): `out` gets
        log.txt, metrics.jsonl and checkpoint/, prepared for a fresh start or a resume."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        prepare_metrics(out, resume)
        return cls(None, config, "cli", seed, out, device, resume, quiet, name=name)

    def log(self, message: str) -> None:
        stamp = f"[{time.perf_counter() - self._t0:8.2f}s] "
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(stamp + message + "\n")
        if not self.quiet:
            from alignlab.core.console import console

            console.print(f"[dim]{self.name}[/] {message}", highlight=False)

    def log_metrics(self, step: int, **values: Any) -> None:
        """Append one line to metrics.jsonl (flushed, so a crash loses at most this line)."""
        line = json.dumps({"step": int(step), **plain_values(values)})
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png (atomically) and close it."""
        from alignlab.core.plotting import save_figure

        return save_figure(fig, self.dir / "plots" / f"{name}.png")

    def stage(self, name: str, steps: int) -> Stage:
        """The next sequential stage of this run (module docstring), spanning steps + 1
        metric steps."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"stage name {name!r}: non-empty, no '/', not starting with '.'")
        if name in self._stages:
            raise ValueError(f"stage {name!r} is created twice in one run")
        if steps < 0:
            raise ValueError(f"stage {name!r}: steps must be >= 0, got {steps}")
        self._stages.add(name)
        stage = Stage(self, name, self._next_offset)
        self._next_offset += int(steps) + 1
        return stage


class StageCheckpointer(Checkpointer):
    """A stage's checkpoint: it also records the stage's offset, which makes its steps
    comparable with the run's (`last_committed_step`)."""

    def __init__(self, owner: Path, rng: np.random.Generator, offset: int):
        super().__init__(owner, rng)
        self.offset = offset

    def _state(self, state: dict) -> dict:
        return {**state, "__offset__": self.offset}


class Stage(Context):
    """One sequential stage of a run (module docstring)."""

    def __init__(self, run: RunContext, name: str, offset: int):
        self.run, self.stage_name, self.offset = run, name, offset
        self.config, self.seed, self.device = run.config, run.seed, run.device
        self.quiet, self.resume, self.dir = run.quiet, run.resume, run.dir
        self.checkpoint = StageCheckpointer(run.dir / STAGES / name, run.rng, offset)

    @property
    def name(self) -> str:
        return f"{self.run.name}:{self.stage_name}"

    def log(self, message: str) -> None:
        self.run.log(f"{self.stage_name}: {message}")

    def log_metrics(self, step: int, **values: Any) -> None:
        self.run.log_metrics(self.offset + int(step), stage=self.stage_name, **values)


# ---------------------------------------------------------------------------------------
# metric lines on resume


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a crash
    return rows


def _stage_step(folder: Path) -> int | None:
    meta = Checkpointer(folder).meta()
    return None if meta is None else int(meta["state"].get("__offset__", 0)) + int(meta["step"])


def last_committed_step(run_dir: Path) -> int | None:
    """The newest step saved by the run's checkpoint or any stage's (offset + step)."""
    steps = [Checkpointer(run_dir).last_step()]
    stages = Path(run_dir) / STAGES
    if stages.is_dir():
        steps += [_stage_step(d) for d in sorted(stages.iterdir()) if d.is_dir()]
    steps = [s for s in steps if s is not None]
    return max(steps) if steps else None


def prepare_metrics(run_dir: Path, resume: bool) -> int | None:
    """A fresh run starts with no metric lines; a resumed one keeps those up to the last
    committed step (returned; None when nothing was committed)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not resume:
        path.unlink(missing_ok=True)
        return None
    last = last_committed_step(run_dir)
    rows = [] if last is None else [r for r in read_metrics(run_dir) if r["step"] <= last]
    if path.exists() or rows:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return last


def require_context(ctx: Any) -> Context:
    if not isinstance(ctx, Context):
        raise AlignlabError(f"expected a run, stage or unit context, got {type(ctx).__name__}")
    return ctx
