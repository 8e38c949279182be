"""Meta-World `button-press-v3` trajectory pools, made by `mw_rollouts` in their own interpreter.

Yang et al. (CoRL 2024) run their method on Meta-World `button-press` too, with the features
`height`, `velocity` and `distance` (official code, USC-Lira/language-preference-learning,
`pref_learning/utils.py`: `mw_feature_aspects`), from pools of SAC policies. The pools here are
a simulation in their place: Meta-World's own scripted policy, `SawyerButtonPressV3Policy`,
perturbed per trajectory (a via point at a random height and distance, a random dwell, random
speed and action noise, and sometimes a hover instead of a press). The world, the
perturbations, the observation layout, the features and the measured feature statistics are
described in `alignlab.langfeedback.mw_rollouts`.

metaworld 3.1.1 pins mujoco 3.3.0 and fails under MuJoCo 4 (which this project's main venv
holds, for copac), so the rollouts run in a separate interpreter: this process itself when
`metaworld` imports here under a MuJoCo 3, else the python named by `ALIGNLAB_METAWORLD_PYTHON`
(`make setup` makes `.venv-mw`, and `make test` / `make reproduce` point the variable at it).
That interpreter runs `mw_rollouts.py` as a script; its pools are cached
(`alignlab.core.cache`) under a key of the config, n, seed, the script's `VERSION` and the
metaworld and mujoco versions that interpreter reports, as an npz of plain arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlab.core.cache import cached_folder, content_key
from alignlab.core.config import ConfigError, param, validate
from alignlab.core.errors import AlignlabError, MissingDependency
from alignlab.langfeedback import mw_rollouts
from alignlab.langfeedback.mw_rollouts import ENV_NAME, FEATURES, OBS_DIM, features

__all__ = [
    "ENV_NAME", "ENV_VAR", "FEATURES", "FIX", "OBS_DIM", "MWPool", "MetaWorldConfig",
    "available", "check_available", "features", "generate",
]  # fmt: skip

ENV_VAR = "ALIGNLAB_METAWORLD_PYTHON"
FIX = (
    "Meta-World needs metaworld==3.1.1 (which pins mujoco 3.3.0): `make setup` makes .venv-mw, "
    "or pip install 'alignlab[metaworld]' into a separate venv and set "
    f"{ENV_VAR} to its python"
)
SCRIPT = Path(mw_rollouts.__file__)
CACHE_KIND = "langfeedback-metaworld"
POOL_FILE = "pool.npz"
#: the lowest and highest hand z Meta-World allows in button-press-v3 (its hand_low/high)
HAND_Z = (0.05, 0.5)
TAIL = 2000  # characters of a failing subprocess's stderr that an error quotes

#: the fields that are (low, high) ranges of a uniform draw
RANGES = mw_rollouts.RANGES


@dataclass
class MetaWorldConfig:
    """The perturbations of Meta-World's scripted button-press policy (heights are the hand's
    absolute z in metres, distances from the hand to the button's observed position in metres,
    angles in radians off the button's front axis, durations in env steps of 0.0125 s)."""

    horizon: int = param(
        120, ge=2, le=mw_rollouts.MAX_HORIZON, help="steps per trajectory (Meta-World: <= 500)"
    )
    speed: tuple[float, ...] = param(
        (0.5, 1.0), gt=0, le=1, help="range of the scale of every command (1: the policy's)"
    )
    via_prob: float = param(1.0, ge=0, le=1, help="probability of a via point before all else")
    via_height: tuple[float, ...] = param((0.05, 0.25), help="range of the via point's height")
    via_distance: tuple[float, ...] = param(
        (0.14, 0.35), gt=0, help="range of the via point's distance from the button"
    )
    via_angle: tuple[float, ...] = param(
        (-1.3, 1.3), ge=-1.5, le=1.5, help="range of the via point's angle to the side"
    )
    via_dwell: tuple[int, ...] = param((0, 25), ge=0, help="range of the steps spent at the via")
    press_prob: float = param(
        0.7, ge=0, le=1, help="probability that the policy takes over (else a hover, no press)"
    )
    hover_height: tuple[float, ...] = param((0.05, 0.2), help="range of the hover point's height")
    hover_distance: tuple[float, ...] = param(
        (0.1, 0.3), gt=0, help="range of the hover point's distance from the button"
    )
    hover_angle: tuple[float, ...] = param(
        (-1.3, 1.3), ge=-1.5, le=1.5, help="range of the hover point's angle to the side"
    )
    noise: tuple[float, ...] = param(
        (0.0, 0.3), ge=0, help="range of the action noise's std (per axis, action units)"
    )

    def validate(self) -> None:
        for key in RANGES:
            r = getattr(self, key)
            if len(r) != 2 or not r[0] <= r[1]:
                raise ConfigError(key, f"must be a (low, high) pair with low <= high, got {r}")
        for key in ("via_height", "hover_height"):
            r = getattr(self, key)
            if not (HAND_Z[0] <= r[0] and r[1] <= HAND_Z[1]):
                raise ConfigError(key, f"must lie in the hand's z range {HAND_Z}, got {r}")

    def perturb(self) -> dict:
        """The perturbation ranges, as `mw_rollouts` takes them (JSON-serialisable)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()
                if k in mw_rollouts.DEFAULTS}  # fmt: skip


@dataclass
class MWPool:
    """N trajectories of T steps: `obs (N, T, 43) float32` (Meta-World's 39-d observation and
    the 4-d action taken on it), `feats (N, 3) float64` (`FEATURES`, means over time),
    `success (N,) bool` (pressed at some step), `params` (each trajectory's perturbation draws,
    arrays of length N, for diagnostics only), `dt` (seconds per step) and `versions`
    (metaworld and mujoco of the interpreter that made it)."""

    obs: np.ndarray
    feats: np.ndarray
    params: dict[str, np.ndarray]
    success: np.ndarray
    dt: float
    versions: dict[str, str]

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def horizon(self) -> int:
        return self.obs.shape[1]


def _in_process() -> bool:
    """metaworld imports here, under a MuJoCo 3."""
    try:
        import metaworld  # noqa: F401
        import mujoco
    except Exception:  # not installed, or broken under this MuJoCo
        return False
    return str(getattr(mujoco, "__version__", "")).startswith("3.")


#: What the rollout interpreter inherits of this process's environment: nothing that could point
#: it at our packages or libraries (PYTHONPATH, LD_LIBRARY_PATH) and no credentials.
CHILD_ENV = (
    "PATH", "HOME", "TMPDIR", "TEMP", "TMP", "LANG", "LC_ALL", "LC_CTYPE", "SYSTEMROOT",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MUJOCO_GL",
    "PYOPENGL_PLATFORM",
)  # fmt: skip
#: Seconds a rollout subprocess may take before it counts as hung (1,200 trajectories: ~1 min).
ROLLOUT_TIMEOUT = 3600


def _child_env() -> dict[str, str]:
    """The allow-listed part of this process's environment (`CHILD_ENV`)."""
    return {k: os.environ[k] for k in CHILD_ENV if k in os.environ}


def default_workers() -> int:
    """Rollout processes: one per available core, at most 4 (the pools do not depend on it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _tail(text: str) -> str:
    text = (text or "").strip()
    return text if len(text) <= TAIL else "..." + text[-TAIL:]


@functools.lru_cache(maxsize=8)
def _versions(python: str) -> tuple[tuple[str, str], ...]:
    """What `python` reports for `mw_rollouts.py --versions` (memoised per interpreter)."""
    try:
        proc = subprocess.run(
            [python, str(SCRIPT), "--versions"],
            check=False, capture_output=True, text=True, env=_child_env(), timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MissingDependency(f"{FIX} ({ENV_VAR}={python!r} could not run: {e})") from e
    try:
        if proc.returncode != 0:
            raise ValueError(_tail(proc.stderr))
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
        return tuple(sorted((str(k), str(v)) for k, v in versions.items()))
    except (ValueError, IndexError) as e:
        raise MissingDependency(
            f"{FIX} ({ENV_VAR}={python!r} could not report the versions of metaworld and "
            f"mujoco: {e})"
        ) from e


def _resolve() -> tuple[str | None, dict[str, str]]:
    """(python, versions): the interpreter to run the script with (None: this process) and
    its metaworld / mujoco versions; AlignlabError naming the fix when there is none."""
    if _in_process():
        return None, mw_rollouts.versions()
    python = os.environ.get(ENV_VAR, "").strip()
    if not python:
        raise MissingDependency(f"{FIX} ({ENV_VAR} is not set, and metaworld does not import here)")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise MissingDependency(f"{FIX} ({ENV_VAR}={python!r} is not an executable file)")
    versions = dict(_versions(python))
    if not versions.get("mujoco", "").startswith("3."):
        raise MissingDependency(f"{FIX} ({python} has mujoco {versions.get('mujoco')})")
    return python, versions


def check_available() -> None:
    """None if a Meta-World interpreter is available, else the AlignlabError naming the fix."""
    _resolve()


def available() -> bool:
    try:
        _resolve()
    except AlignlabError:
        return False
    return True


def _cache_key(n: int, seed: int, cfg: MetaWorldConfig, versions: dict[str, str]) -> str:
    spec = {
        "env": ENV_NAME, "script": mw_rollouts.VERSION, "n": n, "seed": seed,
        "horizon": cfg.horizon, "perturb": cfg.perturb(),
        # every package the rollouts' numbers depend on, as the interpreter reports them
        "versions": {k: versions.get(k) for k in sorted(versions)},
    }  # fmt: skip
    return content_key(spec)


def _run(
    python: str | None, n: int, seed: int, cfg: MetaWorldConfig, out: Path, workers: int
) -> None:
    """Write the pool to `out` (npz) in this process or by `python mw_rollouts.py`."""
    if python is None:
        pool = mw_rollouts.rollout(n, seed, cfg.horizon, cfg.perturb(), workers)
        mw_rollouts.save(out, pool)
        return
    cmd = [
        python, str(SCRIPT), "--n", str(n), "--seed", str(seed), "--horizon", str(cfg.horizon),
        "--out", str(out), "--workers", str(workers), "--perturb", json.dumps(cfg.perturb()),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, env=_child_env(),
            timeout=ROLLOUT_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AlignlabError(
            f"Meta-World rollouts by {python} took over {ROLLOUT_TIMEOUT} s and were stopped"
        ) from None
    if proc.returncode != 0:
        raise AlignlabError(
            f"Meta-World rollouts failed ({python} {SCRIPT.name}, exit {proc.returncode}):\n"
            f"{_tail(proc.stderr)}"
        )
    if not out.is_file():
        raise AlignlabError(f"Meta-World rollouts by {python} exited 0 but wrote no {out.name}")


def _load(path: Path, n: int, cfg: MetaWorldConfig) -> MWPool:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    pool = MWPool(
        obs=data["obs"],
        feats=data["feats"],
        params={k[len("param_") :]: v for k, v in data.items() if k.startswith("param_")},
        success=data["success"],
        dt=float(data["dt"]),
        versions={"metaworld": str(data["metaworld"]), "mujoco": str(data["mujoco"])},
    )
    want = {
        "obs": ((n, cfg.horizon, OBS_DIM), np.float32), "feats": ((n, len(FEATURES)), np.float64),
        "success": ((n,), np.bool_),
    }  # fmt: skip
    for name, (shape, dtype) in want.items():
        a = getattr(pool, name)
        if a.shape != shape or a.dtype != dtype:
            raise AlignlabError(
                f"{path}: {name} is {a.dtype}{list(a.shape)}, expected "
                f"{np.dtype(dtype)}{list(shape)}"
            )
    return pool


def generate(
    n: int, seed: int, cfg: MetaWorldConfig | None = None, workers: int | None = None
) -> MWPool:
    """`n` perturbed scripted trajectories of pool `seed` (identical for any number of rollout
    processes `workers`, by default `default_workers()`),
    from the cache when they were made before; AlignlabError when no Meta-World interpreter is
    available (naming the fix) or when the rollouts fail (quoting their stderr). A failure
    leaves nothing in the cache."""
    cfg = MetaWorldConfig() if cfg is None else cfg
    validate(cfg)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    python, versions = _resolve()

    def build(tmp: Path) -> None:
        _run(python, n, seed, cfg, tmp / POOL_FILE, workers or default_workers())
        _load(tmp / POOL_FILE, n, cfg)  # never cache a malformed pool

    folder, _ = cached_folder(CACHE_KIND, _cache_key(n, seed, cfg, versions), build)
    pool = _load(folder / POOL_FILE, n, cfg)
    made_by = {k: versions.get(k) for k in pool.versions}
    if pool.versions != made_by:
        raise AlignlabError(
            f"{folder}: made with {pool.versions}, but the interpreter reports {made_by}"
        )
    return pool
