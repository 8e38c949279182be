"""`alignlab reproduce`: every selected experiment on one seed or several, then the report.

Runs live in `OUT/runs/<preset>/seed<N>/<experiment>/`. A finished run is reused, an
unfinished one continues from its checkpoints, so the same command run again completes only
what is missing, and a multi-seed reproduction reuses the seed a one-seed one already ran.

By default the runs go one after another in this process, each with every core (its units in
parallel), so a seed's files are those of `reproduce --seed N`, whatever the other seeds.
`--workers N` (N > 1) or `--backend ray` run whole runs at once instead, as a sweep does
(`core.sweep`): on a process pool or Ray, the cores divided among them. Most experiments give
the same files at any thread count; the Gemma 2 teacher does not (its cache key holds the
thread count), so the gemma2 figures of a parallel reproduction differ from a sequential one's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.core import experiment as registry
from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.core.report import LeftOut, LoadedRun, build_report
from alignlab.core.resources import available_cores, check_count
from alignlab.core.run import RunOutcome, RunSpec, execute, run_status
from alignlab.core.sweep import BACKENDS, run_local, run_ray

WIP_REASON = "work in progress: its claims do not reproduce yet"
NEEDS_REASON = "its requirements are not met"
STUDY_REASON = "a study, hours long: run it with `alignlab run`"


def run_dir(out: Path, preset: str, seed: int, experiment: str) -> Path:
    return Path(out) / "runs" / preset / f"seed{seed}" / experiment


@dataclass
class Plan:
    experiments: list[registry.Experiment]
    left_out: list[LeftOut]

    @property
    def wip(self) -> list[str]:
        return [x.experiment for x in self.left_out if x.reason == WIP_REASON]


def plan(only: list[str] | None, preset: str, seeds: list[int], out: Path) -> Plan:
    """The experiments to run: those of the `only` systems, else every one not in progress.
    The rest are left out, to be named in the report."""
    systems = registry.implemented_systems()
    for s in only or []:
        if s not in systems:
            raise AlignlabError(
                f"Unknown system {s!r}.{did_you_mean(s, systems)} "
                f"Implemented systems: {', '.join(systems)}."
            )
    every = registry.experiments()
    exps = [e for e in every if e.system in only] if only else [e for e in every if not e.wip]
    exps = [e for e in exps if not e.study]

    def reason(e: registry.Experiment) -> str:
        if e.study:
            return STUDY_REASON
        return WIP_REASON if e.wip and not only else "not selected by --only"

    left_out = [
        LeftOut(e.name, reason(e), run_dir(out, preset, seeds[0], e.name))
        for e in every
        if e not in exps
    ]
    runnable = []
    for e in exps:  # an outside requirement missing (e.g. endpoints): left out, and why
        try:
            finished = all(run_status(run_dir(out, preset, s, e.name)) == "complete" for s in seeds)
            if e.preflight is not None and not finished:
                e.preflight(e.preset(preset))
        except AlignlabError as err:
            left_out.append(
                LeftOut(e.name, f"{NEEDS_REASON}: {err}", run_dir(out, preset, seeds[0], e.name))
            )
            continue
        runnable.append(e)
    return Plan(runnable, left_out)


@dataclass
class Reproduction:
    runs: list[LoadedRun]
    problems: list[str]


def reproduce(
    plan_: Plan,
    preset: str,
    seeds: list[int],
    out: Path,
    *,
    force: bool = False,
    device: str = "auto",
    threads: int | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    on_outcome: Callable[[str, int, RunOutcome], None] | None = None,
    on_failure: Callable[[str], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> Reproduction:
    """Run `plan_` on `seeds` and write the report to `out`.

    Runs go one after another unless `workers` > 1 or `backend` is "ray" (module docstring).
    One after another, `threads` and `workers` are each run's (`RunSpec`: torch threads and
    units at once). In parallel, `workers` is the number of runs at once (default for Ray: one
    per core, at most the runs) and `threads` each run's torch threads (default: the cores
    divided among them), as in `core.sweep`. A run that crashes is reported as a problem, and
    the other runs still finish.
    """
    if backend not in BACKENDS:
        raise AlignlabError(f"Unknown backend {backend!r}. Valid backends: {', '.join(BACKENDS)}.")
    check_count("threads", threads)
    check_count("workers", workers)
    jobs = [(e, s) for e in plan_.experiments for s in seeds]
    parallel = backend == "ray" or (len(seeds) > 1 and (workers or 1) > 1)
    if parallel:
        workers = workers or min(available_cores(), len(jobs))
        threads = threads or max(1, available_cores() // workers)
    specs = [
        RunSpec(
            experiment=e.name,
            preset=preset,
            seed=s,
            out=str(run_dir(out, preset, s, e.name).resolve()),
            resume=True,
            force=force,
            device=device,
            quiet=parallel,
            module=e.run.__module__,
            threads=threads,
            workers=1 if parallel else workers,
        )
        for e, s in jobs
    ]
    failures: list[str] = []
    dirs: list[Path] = []

    def record(spec: RunSpec, result: Any) -> None:
        if isinstance(result, BaseException):
            failures.append(
                f"{spec.experiment} (seed {spec.seed}) failed: {type(result).__name__}: "
                f"{result} (see {spec.out}/log.txt)"
            )
            if on_failure:
                on_failure(failures[-1])
            return
        dirs.append(result.dir)
        if on_outcome:
            on_outcome(spec.experiment, spec.seed, result)

    if not parallel:
        for spec in specs:
            if on_start:
                on_start(spec.experiment, spec.seed)
            try:
                result: Any = execute(spec)
            except (AlignlabError, KeyboardInterrupt):
                raise
            except Exception as e:  # one broken experiment must not hide the others' results
                result = e
            record(spec, result)
    else:
        from alignlab.core.console import Bar

        with Bar(len(specs), f"{len(plan_.experiments)} experiments × {len(seeds)} seeds") as bar:
            done = lambda: bar.advance(1)  # noqa: E731
            if backend == "ray":
                results = run_ray(specs, workers, address, done)
            else:
                results = run_local(specs, workers, done)
        for spec, result in zip(specs, results, strict=True):
            if isinstance(result, AlignlabError):
                raise result
            record(spec, result)
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    runs, problems = build_report(
        dirs,
        out,
        title=f"alignlab reproduce ({preset} preset, {seeds_text})",
        problems=failures,
        left_out=plan_.left_out,
    )
    return Reproduction(runs, problems)
