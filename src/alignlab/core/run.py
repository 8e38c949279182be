"""One run: a directory, seeding, a metrics log, checkpoints, progress, and the results.

Layout of a run directory (ARCHITECTURE.md):

    config.yaml     experiment, preset, seed, overrides and the full resolved config
    run.json        status (running/complete/failed), timings, versions: not deterministic
    metrics.jsonl   one JSON object a line, each with a "step"
    results.json    what the run function returned: deterministic for a seed and preset
    claims.json     [{id, statement, measured, holds, detail?}, ...]
    plots/*.png     figures drawn from results.json
    checkpoint/     tensors.safetensors + state.json (the newest checkpoint only)
    log.txt         human-readable log

Every file is written atomically. A finished run is not run again unless `force`; an
unfinished one continues from its last checkpoint when `resume` is set.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import shutil
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab import __version__
from alignlab.core import config as cfglib
from alignlab.core.claims import evaluate_claims
from alignlab.core.errors import AlignlabError
from alignlab.core.experiment import Experiment
from alignlab.core.io import atomic_write_json, atomic_write_text, dumps_json, read_json

DEVICES = ("cpu", "cuda", "auto")
RUN_FILES = ("config.yaml", "run.json", "results.json", "claims.json")
LOCK = ".lock"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the run's numpy Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # torch is a core dependency, but the maths of some systems is numpy-only
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise AlignlabError(f"Unknown device {device!r}. Valid devices: {', '.join(DEVICES)}.")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise AlignlabError("--device cuda was asked for but torch sees no CUDA device.")
    return "cpu"


# ---------------------------------------------------------------------------------------
# checkpoints


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Any]  # name -> torch.Tensor
    state: dict[str, Any]  # JSON state of the training loop


class Checkpointer:
    """The newest checkpoint of a run: `checkpoint/{tensors.safetensors,state.json}`.

    `save` writes a new folder beside the old one and swaps them, so a crash at any point
    leaves one complete checkpoint. The run's RNG states (python, numpy Generator, torch)
    are saved with it and restored by `load`, so a resumed run continues the same stream.
    """

    def __init__(self, run_dir: Path, ctx: RunContext | None = None):
        self.dir = run_dir / "checkpoint"
        self.ctx = ctx

    def last_step(self) -> int | None:
        """The step of the newest checkpoint, without loading it; None if there is none."""
        d = self._readable_dir()
        return None if d is None else int(read_json(d / "state.json")["step"])

    def _readable_dir(self) -> Path | None:
        for d in (self.dir, self.dir.with_name("checkpoint.old")):
            if (d / "state.json").is_file():
                return d
        return None

    def save(self, step: int, tensors: dict[str, Any] | None = None, state: dict | None = None):
        import torch
        from safetensors.torch import save_file

        tensors = {
            k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
            .detach()
            .cpu()
            .contiguous()
            for k, v in (tensors or {}).items()
        }
        tensors["__rng__.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"__rng__.cuda.{i}"] = st
        meta = {"step": int(step), "state": state or {}, "rng": self._rng_state()}
        tmp = self.dir.with_name("checkpoint.tmp")
        old = self.dir.with_name("checkpoint.old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "tensors.safetensors"))
        atomic_write_text(tmp / "state.json", dumps_json(meta))
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self) -> Checkpoint | None:
        """The newest checkpoint, with RNG states restored; None if there is none."""
        d = self._readable_dir()
        if d is None:
            return None
        import torch
        from safetensors.torch import load_file

        try:
            meta = read_json(d / "state.json")
            tensors = load_file(str(d / "tensors.safetensors"))
        except Exception as e:
            raise AlignlabError(f"Checkpoint in {d} is unreadable ({e}); use --force.") from e
        torch.set_rng_state(tensors.pop("__rng__.torch"))
        cuda = [tensors.pop(k) for k in sorted(tensors) if k.startswith("__rng__.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        self._restore_rng(meta["rng"])
        return Checkpoint(step=meta["step"], tensors=tensors, state=meta["state"])

    def _rng_state(self) -> dict[str, Any]:
        py = random.getstate()
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        out = {
            "python": [py[0], list(py[1]), py[2]],
            "numpy_global": [name, keys.tolist(), pos, has_gauss, gauss],
        }
        if self.ctx is not None:
            out["numpy"] = self.ctx.rng.bit_generator.state
        return out

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "numpy_global" in rng:
            name, keys, pos, has_gauss, gauss = rng["numpy_global"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if self.ctx is not None and "numpy" in rng:
            self.ctx.rng.bit_generator.state = rng["numpy"]


# ---------------------------------------------------------------------------------------
# the context handed to an experiment's run function


@dataclass
class RunContext:
    experiment: Experiment
    config: Any
    preset: str
    seed: int
    dir: Path
    device: str = "cpu"
    resume: bool = False
    quiet: bool = False
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self):
        self.checkpoint = Checkpointer(self.dir, self)
        self._t0 = time.perf_counter()

    def log(self, message: str) -> None:
        stamp = f"[{time.perf_counter() - self._t0:8.2f}s] "
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(stamp + message + "\n")
        if not self.quiet:
            from alignlab.core.console import console

            console.print(f"[dim]{self.experiment.name}[/] {message}")

    def log_metrics(self, step: int, **values: Any) -> None:
        """Append one line to metrics.jsonl (flushed, so a crash loses at most this line)."""
        line = json.dumps({"step": int(step), **_floats(values)})
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)

    def track(
        self, iterable: Iterable, total: int | None = None, description: str = ""
    ) -> Iterator:
        """Iterate with a rich progress bar (silent in sweeps' worker processes)."""
        if self.quiet:
            yield from iterable
            return
        from alignlab.core.console import progress

        with progress() as bar:
            task = bar.add_task(description or self.experiment.name, total=total)
            for item in iterable:
                yield item
                bar.advance(task)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png (atomically) and close it."""
        import matplotlib.pyplot as plt

        path = self.dir / "plots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
        plt.close(fig)
        return path


def _floats(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


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


def _truncate_metrics(run_dir: Path, last_step: int | None) -> None:
    """On resume, drop metric lines written after the checkpoint we continue from."""
    rows = [] if last_step is None else [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    path = run_dir / "metrics.jsonl"
    if path.exists() or rows:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------
# executing a run


@dataclass(frozen=True)
class RunSpec:
    """Everything that identifies a run; picklable, so sweeps can ship it to workers."""

    experiment: str
    preset: str = "quick"
    seed: int = 0
    overrides: tuple[str, ...] = ()  # "key=value" strings
    out: str | None = None
    resume: bool = False
    force: bool = False
    device: str = "cpu"
    quiet: bool = False
    module: str | None = None  # module to import first (where the experiment is registered)

    def default_dir(self) -> Path:
        slug = f"{self.preset}-seed{self.seed}"
        if self.overrides:
            slug += "-" + override_slug(self.overrides)
        return Path("runs") / self.experiment / slug


def override_slug(overrides: Iterable[str]) -> str:
    text = ",".join(overrides)
    return "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in text)[:120]


@dataclass
class RunOutcome:
    dir: Path
    results: dict[str, Any]
    claims: list[dict[str, Any]]
    skipped: bool  # True when a finished run was found and not re-run
    wall_s: float


def resolve_config(exp: Experiment, preset: str, overrides: Iterable[str]) -> Any:
    cfg = exp.preset(preset)
    cfg = cfglib.apply_overrides(cfg, list(overrides))
    cfglib.validate(cfg)
    return cfg


def run_status(run_dir: Path) -> str:
    """The state of a run directory.

    'missing' (no directory, or an empty one), 'foreign' (a non-empty folder that is not an
    alignlab run), 'corrupt' (an alignlab run with unreadable files), 'running', 'failed' or
    'complete'. A run directory is recognised by its run.json, which is written first.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(p.name != LOCK for p in run_dir.iterdir()):
        return "missing"
    if not (run_dir / "run.json").exists():
        return "foreign"
    try:
        meta = read_json(run_dir / "run.json")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return "corrupt"
    if not isinstance(meta, dict) or "alignlab" not in meta or "experiment" not in meta:
        return "foreign"
    status = meta.get("status")
    if status not in ("running", "failed", "complete"):
        return "corrupt"
    if status == "complete":
        try:
            results, claims = (read_json(run_dir / n) for n in ("results.json", "claims.json"))
            config_of(run_dir)
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, ValueError):
            return "corrupt"
        if not isinstance(results, dict) or not valid_claims(claims):
            return "corrupt"
    return status


def valid_claims(claims: Any) -> bool:
    """claims.json's shape: a list of {id, statement, measured, holds: bool, ...}."""
    return isinstance(claims, list) and all(
        isinstance(c, dict)
        and {"id", "statement", "measured", "holds"} <= set(c)
        and isinstance(c["holds"], bool)
        for c in claims
    )


class RunLock:
    """An exclusive lock on a run directory, so two processes never write one run."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise AlignlabError(
                f"{self.path.parent} is being written by another process; wait for it to "
                "finish or stop it first."
            ) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock


def execute(spec: RunSpec) -> RunOutcome:
    """Run (or find already finished) one experiment run; returns its results and claims."""
    from alignlab.core import experiment as registry

    if spec.module:
        import importlib

        importlib.import_module(spec.module)
    exp = registry.get(spec.experiment)
    cfg = resolve_config(exp, spec.preset, spec.overrides)  # bad input fails before any write
    if not isinstance(spec.seed, int) or spec.seed < 0:
        raise AlignlabError(f"--seed must be a non-negative integer, got {spec.seed!r}.")
    device = resolve_device(spec.device)
    run_dir = Path(spec.out) if spec.out else spec.default_dir()
    header = {
        "experiment": exp.name,
        "preset": spec.preset,
        "seed": spec.seed,
        "overrides": list(spec.overrides),
        "config": cfglib.to_dict(cfg),
    }
    if run_dir.exists() and not run_dir.is_dir():
        raise AlignlabError(f"--out {run_dir} is a file, not a directory.")
    status = run_status(run_dir)
    if status == "foreign":
        raise AlignlabError(
            f"{run_dir} is not empty and is not an alignlab run; choose another --out."
        )
    if status != "missing" and not spec.force:
        _check_same_run(run_dir, header)
        if status == "complete":
            return RunOutcome(
                run_dir,
                read_json(run_dir / "results.json"),
                read_json(run_dir / "claims.json"),
                skipped=True,
                wall_s=0.0,
            )
        if status == "corrupt" or not spec.resume:
            raise AlignlabError(
                f"{run_dir} holds an unfinished run (status: {status}). "
                + ("Pass --resume to continue it or " if status != "corrupt" else "Pass ")
                + "--force to start over."
            )
    with RunLock(run_dir):
        return _execute_locked(exp, spec, cfg, device, run_dir, header, status)


def _execute_locked(exp, spec, cfg, device, run_dir, header, status) -> RunOutcome:
    if spec.force:
        _clear_run_files(run_dir)
    resuming = status in ("running", "failed") and spec.resume and not spec.force
    meta = _meta(exp, spec, device)
    atomic_write_json(run_dir / "run.json", meta)  # first: it marks the folder as a run
    atomic_write_text(run_dir / "config.yaml", cfglib.dump_yaml(header))
    # stale outputs of an earlier attempt must not survive into this one
    for name in ("results.json", "claims.json"):
        (run_dir / name).unlink(missing_ok=True)
    rng = seed_everything(spec.seed)
    ctx = RunContext(exp, cfg, spec.preset, spec.seed, run_dir, device, resuming, spec.quiet, rng)
    if resuming:
        last = ctx.checkpoint.last_step()
        _truncate_metrics(run_dir, last)
        ctx.log(f"resuming from step {last}" if last is not None else "restarting (no checkpoint)")
    else:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        results = exp.run(ctx)
        if not isinstance(results, dict):
            raise TypeError(f"{exp.name}: run() must return a dict, got {type(results).__name__}")
        results = json.loads(dumps_json(results))  # what is on disk is what claims see
        atomic_write_json(run_dir / "results.json", results)
        claims = evaluate_claims(exp.claims, results)
        atomic_write_json(run_dir / "claims.json", claims)
        if exp.plots is not None:
            exp.plots(results, ctx)
    except BaseException as e:
        meta.update(status="failed", error=f"{type(e).__name__}: {e}")
        atomic_write_json(run_dir / "run.json", meta)
        with open(run_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        raise
    wall = time.perf_counter() - t0
    meta.update(status="complete", finished=_now(), wall_s=round(wall, 3))
    atomic_write_json(run_dir / "run.json", meta)
    n_hold = sum(c["holds"] for c in claims)
    ctx.log(f"done in {wall:.1f}s; {n_hold}/{len(claims)} claims hold")
    return RunOutcome(run_dir, results, claims, skipped=False, wall_s=wall)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _meta(exp: Experiment, spec: RunSpec, device: str) -> dict[str, Any]:
    return {
        "experiment": exp.name,
        "system": exp.system,
        "paper": exp.paper,
        "preset": spec.preset,
        "seed": spec.seed,
        "status": "running",
        "started": _now(),
        "device": device,
        "alignlab": __version__,
        "python": platform.python_version(),
        "argv": sys.argv,
    }


def _check_same_run(run_dir: Path, header: dict[str, Any]) -> None:
    try:
        old = config_of(run_dir)
    except (OSError, ValueError):
        raise AlignlabError(
            f"{run_dir} has no readable config.yaml; it is corrupt. Use --force to start over."
        ) from None
    keys = ("experiment", "preset", "seed", "config")
    diff = [k for k in keys if old.get(k) != header[k]]
    if diff:
        raise AlignlabError(
            f"{run_dir} holds a different run (it differs in: {', '.join(diff)}). "
            "Choose another --out, or pass --force to overwrite it."
        )


def _clear_run_files(run_dir: Path) -> None:
    """Remove what a run writes, and nothing else: files a user put beside it stay."""
    for name in (*RUN_FILES, "metrics.jsonl", "log.txt"):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("plots", "checkpoint", "checkpoint.old", "checkpoint.tmp", "units"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def config_of(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict; ValueError if it is not one."""
    import yaml

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"config.yaml is not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("config.yaml is not a mapping")
    return data
