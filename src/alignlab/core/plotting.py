"""matplotlib set up for files, not screens: the Agg backend and one house style.

Every figure of every system is drawn with this module's `plt` and saved with `save_figure`
(atomic PNG), so a figure looks the same whichever system plotted first in the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from alignlab.core.io import atomic_save_figure  # noqa: E402

plt.rcParams.update(
    {
        "figure.figsize": (6.0, 3.8),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 9,
    }
)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write `fig` as a PNG at `path` (atomically) and close it."""
    try:
        return atomic_save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


def log_axis(ax: Any, axis: str = "x") -> None:
    """A log axis labelled 2, 5, 10, 20 rather than 2×10⁰ at every minor tick."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_formatter(NullFormatter())


__all__ = ["plt", "save_figure", "log_axis"]
