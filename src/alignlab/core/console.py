"""The shared rich consoles and the one progress bar every long loop uses."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)  # progress, logs and errors
stdout = Console()  # tables and summaries: what a user may pipe or save


class _Status(ProgressColumn):
    """A task's free-text `status` field (rates, the last loss), empty when it has none."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("status", "")))


def progress() -> Progress:
    """A rich Progress in the house style; its `status` field is free text after the count."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Status(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class Bar:
    """One progress bar, silent when `enabled` is False (quiet runs, sweep workers, DDP ranks
    other than 0).

    It draws without rich's refresh thread: worker processes are forked while a bar is shown,
    and a fork taken while another thread holds the console's lock can deadlock the child.
    Redraws are throttled to ten a second instead.
    """

    def __init__(
        self, total: int | None, description: str, enabled: bool = True, completed: int = 0
    ):
        self._progress = None
        self._last = 0.0
        if not enabled:
            return
        self._progress = progress()
        self._progress.live.auto_refresh = False
        self._progress.start()
        self._task = self._progress.add_task(
            description, total=total, completed=completed, status=""
        )
        self._progress.refresh()

    def advance(self, n: float = 1, status: str | None = None) -> None:
        if self._progress is None:
            return
        fields = {} if status is None else {"status": status}
        self._progress.update(self._task, advance=n, **fields)
        self._refresh()

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)
            self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 0.1:
            self._last = now
            self._progress.refresh()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
