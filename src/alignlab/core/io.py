"""Atomic files and folders, and JSON conversion: a crash never leaves a partial write.

- `atomic_write_bytes/text/json(path, ...)`: a temporary file in the same folder, fsynced,
  then renamed over `path` (POSIX rename is atomic: readers see the old file or the new one).
- `atomic_folder(path)`: a context manager yielding a private temporary sibling folder to fill;
  on success every file in it is fsynced and the folder renamed into place (an existing one is
  moved aside first and removed after, or kept when `replace=False`, e.g. a cache another
  process completed meanwhile); on failure the temporary folder is removed and `path` is as it
  was. Checkpoints, caches, HF and SAELens folders are written this way.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask is process-wide and has no getter
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's files are 0600
_DIR_MODE = 0o777 & ~_UMASK  # what mkdir() would give; mkdtemp's folders are 0700


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in `path` durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, x: Any) -> None:
    atomic_write_text(path, dumps_json(x))


def atomic_save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically (the figure is left open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(folder)


@contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Fill the yielded temporary folder; it becomes `path` when the block ends without error.

    replace=True: an existing `path` is renamed to `.<name>.old` and removed once the new
    folder is in place (a crash in between leaves it there, complete). replace=False: if
    `path` exists when the block ends (another process finished first), it is kept and the
    new folder discarded. Either way a failure inside the block leaves `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, _DIR_MODE)
        yield tmp
        _fsync_tree(tmp)
        if not replace:
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.exists():
                    raise  # a real failure, not another process having finished first
        else:
            old = old_folder(path)
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                if old.exists():
                    os.replace(old, path)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def old_folder(path: str | os.PathLike) -> Path:
    """Where `atomic_folder` keeps the previous version of `path` while it swaps them."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def to_jsonable(x: Any, nonfinite_as_text: bool = True) -> Any:
    """numpy, dataclasses, tuples, Fractions and objects with `to_dict()` → plain JSON types.

    Standard JSON has no NaN or infinity: they become the strings "nan", "inf", "-inf" (read
    them back with float()). With nonfinite_as_text=False they stay floats, for files only
    Python reads back (checkpoint state), where json writes NaN/Infinity and reads them as
    floats again."""
    rec = lambda v: to_jsonable(v, nonfinite_as_text)  # noqa: E731
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return rec(x.to_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return rec(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): rec(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rec(v) for v in x]
    if isinstance(x, np.ndarray):
        return rec(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return str(x) if nonfinite_as_text and not math.isfinite(x) else x
    if isinstance(x, Fraction):
        return str(x)
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # torch tensors
        return rec(x.detach().cpu().numpy())
    return x


def dumps_json(x: Any, nonfinite_as_text: bool = True) -> str:
    return json.dumps(to_jsonable(x, nonfinite_as_text), indent=2, ensure_ascii=False) + "\n"


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
