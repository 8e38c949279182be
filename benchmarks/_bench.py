"""Shared reporting for the benchmarks: the machine's load and this process's peak memory.

The benchmarks run as `python benchmarks/x.py`, so `sys.path` holds this folder and
`import _bench` finds this file.

    stats = _bench.RunStats()          # at the start of the run
    ...                                 # the measurements
    print(stats.line())                 # beside the speed figures
    result["machine"].update(stats.report())
"""

from __future__ import annotations

import os
import resource
import sys
import time


def peak_rss_mb() -> float:
    """This process's peak RSS in MB (2**20 bytes): VmHWM of /proc/self/status (Linux), else
    ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, kB on Linux
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class RunStats:
    """The load average at start and now, process CPU seconds per wall second since start
    (about the thread count on a quiet machine; lower when other work shares the cores), and
    the peak RSS so far."""

    def __init__(self) -> None:
        self.load_start = os.getloadavg()
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def report(self) -> dict:
        wall = time.perf_counter() - self.wall0
        return {
            "load_avg_start": list(self.load_start),
            "load_avg_end": list(os.getloadavg()),
            "cpu_per_wall": (time.process_time() - self.cpu0) / wall if wall > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
        }

    def line(self, report: dict | None = None) -> str:
        r = report or self.report()
        s, e, cpu = r["load_avg_start"], r["load_avg_end"], r["cpu_per_wall"]
        return (
            f"load average {s[0]:.2f} at start, {e[0]:.2f} now; "
            f"{'n/a' if cpu is None else f'{cpu:.2f}'} CPU s per wall s; "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
