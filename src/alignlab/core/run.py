"""One run: a directory, seeding, a metrics log, checkpoints, progress, and the results.

Layout of a run directory (ARCHITECTURE.md):

    config.yaml     experiment, preset, seed, overrides and the full resolved config
    run.json        status (running/complete/failed), timings, threads, workers, versions:
                    not deterministic
    metrics.jsonl   one JSON object a line, each with a "step"; timings are the keys ending
                    in _per_s, _time_s or _time_frac
    results.json    what the run function returned: deterministic for a seed and preset
    claims.json     [{id, statement, measured, holds, detail?}, ...]
    plots/*.png     figures drawn from results.json
    checkpoint/     tensors.safetensors + state.json (the newest checkpoint only)
    stages/<name>/checkpoint/   each sequential stage's own (core.context)
    units/<key>/checkpoint/     each unfinished unit's own (core.units)
    log.txt         human-readable log

Every file is written atomically. A finished run is not run again unless `force`; an
unfinished one continues from its last checkpoints when `resume` is set. The execution knobs
(`threads`, `workers`) are not part of a run's identity: changing them never forces a re-run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab import __version__
from alignlab.core import config as cfglib
from alignlab.core.checkpoint import FOLDER, simulate_crash_now
from alignlab.core.claims import evaluate_claims
from alignlab.core.context import STAGES, UNITS, RunContext, prepare_metrics
from alignlab.core.errors import AlignlabError
from alignlab.core.experiment import Experiment
from alignlab.core.io import atomic_write_json, atomic_write_text, dumps_json, old_folder, read_json
from alignlab.core.resources import available_cores, check_count, torch_threads
from alignlab.core.seeding import seed_everything

DEVICES = ("cpu", "cuda", "auto")
RUN_FILES = ("config.yaml", "run.json", "results.json", "claims.json")
LOCK = ".lock"
#: metric keys that measure wall-clock speed: they differ between runs of the same seed
TIMING_SUFFIXES = ("_per_s", "_time_s", "_time_frac")


def is_timing(key: str) -> bool:
    """Whether a metrics.jsonl key is a timing (not reproducible), by its name's suffix."""
    return key.endswith(TIMING_SUFFIXES)


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
    # execution knobs (core.resources): not part of the run's identity
    threads: int | None = None  # torch threads (None: one per available core)
    workers: int | None = None  # units at once (None: one per available core)

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
    cfg = cfglib.apply_overrides(cfg, list(overrides))  # validated, overrides or not
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
    check_count("threads", spec.threads)
    check_count("workers", spec.workers)
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
    if exp.preflight is not None:  # a missing outside requirement also fails before any write
        exp.preflight(cfg)  # (a finished run is reused without it)
    with RunLock(run_dir):
        return _execute_locked(exp, spec, cfg, device, run_dir, header, status)


def _execute_locked(exp, spec, cfg, device, run_dir, header, status) -> RunOutcome:
    if spec.force:
        _clear_run_files(run_dir)
    resuming = status in ("running", "failed") and spec.resume and not spec.force
    threads = spec.threads or available_cores()
    meta = _meta(exp, spec, device, threads)
    atomic_write_json(run_dir / "run.json", meta)  # first: it marks the folder as a run
    atomic_write_text(run_dir / "config.yaml", cfglib.dump_yaml(header))
    # stale outputs of an earlier attempt must not survive into this one
    for name in ("results.json", "claims.json"):
        (run_dir / name).unlink(missing_ok=True)
    if not resuming:  # a fresh start: no checkpoint of an earlier attempt may be picked up
        _clear_state(run_dir)
    rng = seed_everything(spec.seed)
    ctx = RunContext(
        exp, cfg, spec.preset, spec.seed, run_dir, device, resuming, spec.quiet, rng,
        threads=threads, workers=spec.workers,
    )  # fmt: skip
    last = prepare_metrics(run_dir, resuming)
    if resuming:
        ctx.log(f"resuming from step {last}" if last is not None else "restarting (no checkpoint)")
    t0 = time.perf_counter()
    try:
        with torch_threads(threads):
            results = exp.run(ctx)
        if not isinstance(results, dict):
            raise TypeError(f"{exp.name}: run() must return a dict, got {type(results).__name__}")
        simulate_crash_now("before the results are written")  # a test hook; no-op otherwise
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


def _meta(exp: Experiment, spec: RunSpec, device: str, threads: int) -> dict[str, Any]:
    return {
        "experiment": exp.name,
        "system": exp.system,
        "paper": exp.paper,
        "preset": spec.preset,
        "seed": spec.seed,
        "status": "running",
        "started": _now(),
        "device": device,
        "threads": threads,
        "workers": spec.workers,
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


def _clear_state(run_dir: Path) -> None:
    """Remove the checkpoints of an earlier attempt (the run's, its stages' and units')."""
    for path in (run_dir / FOLDER, old_folder(run_dir / FOLDER), run_dir / STAGES, run_dir / UNITS):
        shutil.rmtree(path, ignore_errors=True)


def _clear_run_files(run_dir: Path) -> None:
    """Remove what a run writes, and nothing else: files a user put beside it stay."""
    for name in (*RUN_FILES, "metrics.jsonl", "log.txt"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "plots", ignore_errors=True)
    _clear_state(run_dir)


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
