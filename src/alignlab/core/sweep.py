"""Sweeps: a grid of runs (seeds × overrides) on a local process pool or a Ray cluster.

Each grid cell is an ordinary run in `OUT/<overrides>/seed<N>/`. A finished cell is never
re-run, and an unfinished one continues from its checkpoint, so re-running a killed sweep
completes only the missing runs. The aggregate reports every numeric result as a mean with a
95% Student-t confidence interval across seeds, and curves (equal-length numeric lists) as
mean ± CI bands.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.claims import across_seeds
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, atomic_write_text
from alignlab.core.resources import available_cores, check_count
from alignlab.core.run import RunOutcome, RunSpec, execute, override_slug
from alignlab.core.stats import mean_ci95

BACKENDS = ("local", "ray")


def parse_seeds(text: str) -> list[int]:
    """'0-4' → [0,1,2,3,4]; '0,2,5' → [0,2,5]; '3' → [3]. Seeds are non-negative."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            seeds += range(int(lo), int(hi) + 1) if sep else [int(lo)]
    except ValueError:
        raise AlignlabError(
            f"--seeds {text!r}: expected non-negative seeds, as a range like 0-4 or a list "
            "like 0,1,2."
        ) from None
    if not seeds:
        raise AlignlabError(f"--seeds {text!r} names no seeds.")
    return sorted(set(seeds))


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets/quotes: 'a,[1,2],b' → ['a', '[1,2]', 'b']."""
    parts, depth, quote, cur = [], 0, None, ""
    for c in text:
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[({":
            depth += 1
        elif c in "])}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += c
    parts.append(cur)
    return [p.strip() for p in parts]


def expand_grid(sets: Iterable[str]) -> list[tuple[str, ...]]:
    """['lr=1,2', 'h=3'] → [('lr=1','h=3'), ('lr=2','h=3')]."""
    axes = []
    for item in sets:
        if "=" not in item:
            raise AlignlabError(f"--set {item!r}: expected key=value[,value...].")
        key, values = item.split("=", 1)
        axes.append([f"{key.strip()}={v}" for v in split_top_level(values)])
    return [tuple(combo) for combo in itertools.product(*axes)] if axes else [()]


@dataclass
class SweepResult:
    out: Path
    outcomes: list[RunOutcome]
    aggregate: dict[str, Any]


def plan(
    experiment: str,
    preset: str,
    seeds: list[int],
    combos: list[tuple[str, ...]],
    out: Path,
    **run_kw: Any,
) -> list[RunSpec]:
    specs = []
    for combo in combos:
        cell = out / (override_slug(combo) if combo else "base")
        for seed in seeds:
            specs.append(
                RunSpec(
                    experiment=experiment,
                    preset=preset,
                    seed=seed,
                    overrides=combo,
                    out=str((cell / f"seed{seed}").resolve()),
                    resume=True,  # a killed sweep continues where each run stopped
                    quiet=True,
                    **run_kw,
                )
            )
    return specs


def _worker_init(parent: int) -> None:
    """In each pool worker: leave Ctrl-C to the parent, and exit if the parent dies."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # orphaned (the sweep was killed): stop instead of running on

    threading.Thread(target=watch, daemon=True).start()


def _execute_in_worker(spec: RunSpec) -> RunOutcome:
    return execute(spec)  # the spec carries its thread count (`sweep`)


def run_local(specs: list[RunSpec], workers: int, on_done: Callable[[], None]) -> list:
    """Run specs in a spawn-started process pool; returns outcomes or exceptions, in order.

    Ctrl-C cancels the queued runs and stops the running ones at once; they stay unfinished
    on disk, and the same sweep run again continues them.
    """
    results: list[Any] = [None] * len(specs)
    if workers <= 1:
        for i, spec in enumerate(specs):
            try:
                results[i] = execute(spec)
            except Exception as e:
                results[i] = e
            on_done()
        return results
    import multiprocessing as mp

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        futures = {pool.submit(_execute_in_worker, s): i for i, s in enumerate(specs)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as e:
                results[i] = e
            on_done()
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def run_ray(
    specs: list[RunSpec], workers: int, address: str | None, on_done: Callable[[], None]
) -> list:
    try:
        import ray
    except ImportError:
        raise AlignlabError(
            "--backend ray needs Ray: pip install 'alignlab[ray]' (or use --backend local)."
        ) from None
    threads = max(1, specs[0].threads or 1) if specs else 1  # each run's torch threads
    started_here = not ray.is_initialized()
    if started_here:
        kw: dict[str, Any] = dict(
            include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = workers * threads  # a local Ray started in-process
            # its workers see the driver's import path, so experiments registered in the
            # user's own modules (not only alignlab's) can run there too
            path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            kw["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        ray.init(**kw)
    try:
        remote = ray.remote(num_cpus=threads)(_execute_in_worker)
        refs = {remote.remote(s): i for i, s in enumerate(specs)}
        results: list[Any] = [None] * len(specs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[refs[ref]] = ray.get(ref)
                except Exception as e:  # RayTaskError wraps the worker's exception
                    results[refs[ref]] = getattr(e, "cause", None) or e
                on_done()
        return results
    finally:
        if started_here:
            ray.shutdown()


def sweep(
    experiment: str,
    seeds: list[int],
    sets: list[str] | None = None,
    preset: str = "quick",
    out: str | Path | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    force: bool = False,
    module: str | None = None,
    show_progress: bool = True,
    threads: int | None = None,
) -> SweepResult:
    """Run the grid (seeds × `sets`) and aggregate it. `workers` runs at once (default: one
    per available core, at most one per run); each run gets `threads` torch threads (default:
    the cores divided among the workers, so the sweep never runs more threads than cores) and
    trains its units in order (the sweep's workers already fill the cores)."""
    from alignlab.core import experiment as registry
    from alignlab.core.run import resolve_config

    if backend not in BACKENDS:
        raise AlignlabError(f"Unknown backend {backend!r}. Valid backends: {', '.join(BACKENDS)}.")
    check_count("workers", workers)
    check_count("threads", threads)
    exp = registry.get(experiment)
    sets = list(sets or [])
    combos, seen = [], set()
    for combo in expand_grid(sets):  # validate every cell before any run starts
        key = repr(resolve_config(exp, preset, combo))
        if key not in seen:  # `--set n=20,20` is one cell, not two runs in one folder
            seen.add(key)
            combos.append(combo)
    out = Path(out) if out else Path("runs") / "sweeps" / f"{experiment}-{preset}"
    workers = workers or min(available_cores(), len(combos) * len(seeds))
    threads = threads or max(1, available_cores() // workers)
    module = module or exp.run.__module__
    specs = plan(
        experiment, preset, seeds, combos, out, device=device, force=force, module=module,
        threads=threads, workers=1,
    )  # fmt: skip

    from alignlab.core.console import Bar

    with Bar(len(specs), f"sweep {experiment}", enabled=show_progress) as bar:
        on_done = lambda: bar.advance(1)  # noqa: E731
        if backend == "ray":
            results = run_ray(specs, workers, address, on_done)
        else:
            results = run_local(specs, workers, on_done)
    failed = [(s, r) for s, r in zip(specs, results, strict=True) if isinstance(r, BaseException)]
    if failed:
        lines = "\n".join(f"  {s.out}: {type(e).__name__}: {e}" for s, e in failed)
        raise AlignlabError(
            f"{len(failed)} of {len(specs)} runs failed:\n{lines}\n"
            "Re-run the same sweep to retry only the unfinished runs."
        )
    agg = aggregate(experiment, preset, specs, results)
    write_aggregate(out, agg)
    return SweepResult(out, results, agg)


# ---------------------------------------------------------------------------------------
# aggregation


def flatten_numeric(x: Any, prefix: str = "") -> tuple[dict[str, float], dict[str, list[float]]]:
    """Numeric leaves of a results dict: scalars and equal-length numeric lists (curves)."""
    scalars: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    if isinstance(x, dict):
        for k, v in x.items():
            s, c = flatten_numeric(v, f"{prefix}{k}.")
            scalars.update(s)
            curves.update(c)
    elif isinstance(x, bool) or (isinstance(x, (int, float)) and math.isfinite(x)):
        scalars[prefix[:-1]] = float(x)
    elif (
        isinstance(x, list)
        and len(x) > 1
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
    ):
        curves[prefix[:-1]] = [float(v) for v in x]
    return scalars, curves


def aggregate(
    experiment: str, preset: str, specs: list[RunSpec], outcomes: list[RunOutcome]
) -> dict[str, Any]:
    cells: dict[tuple[str, ...], list[tuple[RunSpec, RunOutcome]]] = {}
    for spec, outcome in zip(specs, outcomes, strict=True):
        cells.setdefault(spec.overrides, []).append((spec, outcome))
    out_cells = []
    for combo, runs in cells.items():
        flat = [flatten_numeric(o.results) for _, o in runs]
        metrics = {}
        for key in flat[0][0]:
            values = [s[key] for s, _ in flat if key in s]
            if len(values) == len(runs):
                m, h = mean_ci95(values)
                metrics[key] = {"mean": m, "ci95": h, "values": values}
        curves = {}
        for key, first in flat[0][1].items():
            ys = [c.get(key) for _, c in flat]
            if all(y is not None and len(y) == len(first) for y in ys):
                arr = np.asarray(ys)
                stats_ = [mean_ci95(list(arr[:, j])) for j in range(arr.shape[1])]
                curves[key] = {"mean": [m for m, _ in stats_], "ci95": [h for _, h in stats_]}
        ids = dict.fromkeys(c["id"] for _, o in runs for c in o.claims)
        claims = {  # each claim across the cell's seeds, as a multi-seed report gives it
            cid: across_seeds(
                [(s.seed, str(o.dir), c) for s, o in runs for c in o.claims if c["id"] == cid]
            )
            for cid in ids
        }
        out_cells.append(
            {
                "overrides": list(combo),
                "seeds": [s.seed for s, _ in runs],
                "runs": [str(o.dir) for _, o in runs],
                "metrics": metrics,
                "curves": curves,
                "claims": claims,
            }
        )
    return {"experiment": experiment, "preset": preset, "cells": out_cells}


def _fmt(m: float, h: float) -> str:
    return f"{m:.4g}" if math.isnan(h) else f"{m:.4g} ± {h:.2g}"


def aggregate_markdown(agg: dict[str, Any], max_metrics: int = 40) -> str:
    lines = [f"# Sweep of {agg['experiment']} ({agg['preset']} preset)", ""]
    lines.append("Mean ± half-width of the 95% confidence interval across seeds.\n")
    for cell in agg["cells"]:
        title = ", ".join(cell["overrides"]) or "base config"
        lines += [
            f"## {title} (seeds {cell['seeds']})",
            "",
            "| metric | mean ± 95% CI |",
            "|---|---|",
        ]
        for key, m in list(cell["metrics"].items())[:max_metrics]:
            lines.append(f"| {key} | {_fmt(m['mean'], m['ci95'])} |")
        if cell["claims"]:
            lines += ["", "| claim | holds in |", "|---|---|"]
            for cid, c in cell["claims"].items():
                lines.append(f"| {cid}: {c['statement']} | {c['held']}/{c['n_seeds']} seeds |")
        lines.append("")
    return "\n".join(lines)


def write_aggregate(out: Path, agg: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "aggregate.json", agg)
    atomic_write_text(out / "aggregate.md", aggregate_markdown(agg))
    plot_aggregate(out, agg)


def plot_aggregate(out: Path, agg: dict[str, Any], max_plots: int = 12) -> None:
    """One figure per curve (mean ± CI band per grid cell)."""
    from alignlab.core.plotting import plt, save_figure

    curves = agg["cells"][0]["curves"]

    def informative(key: str) -> bool:
        """Worth a plot: it varies across seeds, or there is only one seed to show."""
        ci = [h for cell in agg["cells"] for h in cell["curves"].get(key, {}).get("ci95", [])]
        return all(math.isnan(h) for h in ci) or any(h > 0 for h in ci if not math.isnan(h))

    # a curve "k.y" is drawn against its sibling "k.x" when the results give one
    keys = [k for k in curves if not (k.endswith(".x") and k[:-2] + ".y" in curves)]
    keys = [k for k in keys if informative(k)][:max_plots]
    for key in keys:
        fig, ax = plt.subplots()
        for cell in agg["cells"]:
            if key not in cell["curves"]:
                continue
            m = np.asarray(cell["curves"][key]["mean"])
            h = np.nan_to_num(np.asarray(cell["curves"][key]["ci95"]))
            xkey = key[:-2] + ".x" if key.endswith(".y") else ""
            xs = cell["curves"].get(xkey, {}).get("mean")
            x = np.asarray(xs) if xs is not None and len(xs) == len(m) else np.arange(len(m))
            label = ", ".join(cell["overrides"]) or "base"
            ax.plot(x, m, label=label)
            ax.fill_between(x, m - h, m + h, alpha=0.2)
        ax.set_title(f"{agg['experiment']}: {key} (mean ± 95% CI)")
        ax.set_xlabel(xkey if xkey in curves else "index")
        ax.legend(fontsize=7)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        save_figure(fig, out / "plots" / f"{name}.png")
