"""Execution knobs: how many cores this process may use, torch threads, worker processes.

These are speed settings, never science: they are given on the command line (`--threads`,
`--workers`), recorded in run.json, and left out of a run's identity, so changing them never
forces a re-run. Defaults: a run uses one torch thread per available core and one unit worker
per core (`core.units`); a sweep splits the cores between its runs, so it never runs more
threads than there are cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from alignlab.core.errors import AlignlabError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_count(name: str, value: int | None) -> None:
    """`--threads` / `--workers`: None (automatic) or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise AlignlabError(f"--{name} must be a positive integer (or left out), got {value!r}.")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
