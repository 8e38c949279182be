"""Content-addressed artifacts: built once into a temporary folder, renamed into place.

An artifact (a trained teacher, an extracted corpus, a tokenizer) lives in
`cache_dir()/<kind>/<key>/`, where `key` is a hash of everything its bytes depend on
(`content_key`). `cached_folder` returns the folder if it is complete, and otherwise builds it
with the given function in a private temporary sibling and renames it into place: a crash
never leaves a partial artifact, and when two processes (sweep workers) build the same
artifact at once, the first complete one is kept.

A folder is complete when its marker file exists (written last by the builder, or by
`cached_folder` itself when the builder returns).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignlab.core.io import atomic_folder

MARKER = ".complete"


def cache_dir() -> Path:
    """$ALIGNLAB_CACHE if set, else $XDG_CACHE_HOME/alignlab, else ~/.cache/alignlab."""
    if os.environ.get("ALIGNLAB_CACHE"):
        return Path(os.environ["ALIGNLAB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "alignlab"


def content_key(spec: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable description of what an artifact depends on."""
    text = json.dumps(spec, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def artifact_dir(kind: str, key: str, root: str | os.PathLike | None = None) -> Path:
    """Where the artifact (kind, key) lives, built or not."""
    return (Path(root) if root is not None else cache_dir()) / kind / key


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MARKER).is_file()


def cached_folder(
    kind: str,
    key: str,
    build: Callable[[Path], None],
    *,
    root: str | os.PathLike | None = None,
) -> tuple[Path, bool]:
    """(folder, built): the complete artifact (kind, key), built by `build(tmp_folder)` if it
    is not there yet. `built` is True when this call ran `build` (another process may still have
    put its own identical artifact in place first, which is then kept)."""
    folder = artifact_dir(kind, key, root)
    if is_complete(folder):
        return folder, False
    if folder.exists():  # incomplete (written by something else): never reused
        shutil.rmtree(folder)
    with atomic_folder(folder, replace=False) as tmp:
        build(tmp)
        (tmp / MARKER).write_text(key + "\n", encoding="utf-8")
    return folder, True
