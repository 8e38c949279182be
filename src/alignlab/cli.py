"""The `alignlab` command: list, run, sweep, reproduce, report."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from alignlab.core import experiment as registry
from alignlab.core.config import PRESETS
from alignlab.core.console import console, stdout
from alignlab.core.errors import AlignlabError, did_you_mean

app = typer.Typer(
    help="alignlab: ten 2024 research systems on human-AI interaction and alignment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="smoke | quick | paper")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key: key=value (repeatable)."),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu | cuda | auto")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="Torch threads per run (default: one per core). A speed knob, except for the "
        "Gemma 2 teacher, whose weights depend on it."
    ),
]
UnitWorkersOpt = Annotated[
    int | None,
    typer.Option(help="Units trained at once in worker processes (default: one per core)."),
]


RESUME_HINTS = {
    "run": "pass --resume to continue the run.",
    "sweep": "run the same sweep again to finish the missing runs.",
    "reproduce": "run the same command again to continue.",
}


def error(message: str) -> None:
    """One red 'error:' line; the message is printed verbatim (no rich markup)."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def friendly(fn):
    """Turn AlignlabError into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AlignlabError as e:
            error(str(e))
            raise typer.Exit(2) from None
        except OSError as e:  # unwritable --out, disk full, ...
            error(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            hint = RESUME_HINTS.get(fn.__name__, "")
            console.print(f"[yellow]interrupted[/]; {hint}" if hint else "[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise AlignlabError(
            f"Unknown preset {preset!r}.{did_you_mean(preset, PRESETS)} "
            f"Valid presets: {', '.join(PRESETS)}."
        )


def _claims_table(claims: list[dict], title: str = "claims", hold_rates: bool = False) -> Table:
    """One run's claims (✓/✗), or with `hold_rates` claims across seeds (a report's entries)."""
    table = Table(title=title, show_lines=False)
    table.add_column("claim")
    table.add_column("measured (mean ± 95% CI)" if hold_rates else "measured", overflow="fold")
    table.add_column("hold rate" if hold_rates else "holds")
    for c in claims:
        m = c["measured"]
        m = f"{m:.4g}" if isinstance(m, float) else str(m)
        verdict = c["hold_rate"] if hold_rates else ("✓" if c["holds"] else "✗")
        table.add_row(c["id"], m, f"[green]{verdict}[/]" if c["holds"] else f"[red]{verdict}[/]")
    return table


@app.command("list")
@friendly
def list_experiments() -> None:
    """Every registered experiment, its paper and a one-line description."""
    table = Table(title="alignlab experiments")
    table.add_column("experiment", style="bold")
    table.add_column("paper")
    table.add_column("description")
    for exp in registry.experiments():
        wip = " [yellow](work in progress)[/]" if exp.wip else ""
        table.add_row(exp.name + wip, exp.paper, exp.description)
    stdout.print(table)


@app.command()
@friendly
def run(
    experiment: Annotated[str, typer.Argument(help="e.g. drmdp.table4")],
    preset: PresetOpt = "quick",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an unfinished run.")] = False,
    force: Annotated[bool, typer.Option(help="Re-run even if finished.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    workers: UnitWorkersOpt = None,
) -> None:
    """One run: a run directory, a progress bar, a summary with the claims table."""
    from alignlab.core.run import RunSpec, execute

    _check_preset(preset)
    spec = RunSpec(
        experiment=experiment,
        preset=preset,
        seed=seed,
        overrides=tuple(set_ or ()),
        out=str(out) if out else None,
        resume=resume,
        force=force,
        device=device,
        threads=threads,
        workers=workers,
    )
    outcome = execute(spec)
    if outcome.skipped:
        console.print(f"[yellow]{outcome.dir} is already finished[/]; pass --force to re-run.")
    stdout.print(_claims_table(outcome.claims, f"{experiment} ({preset}, seed {seed})"))
    console.print(f"run directory: [bold]{outcome.dir}[/]")


@app.command()
@friendly
def sweep(
    experiment: Annotated[str, typer.Argument(help="e.g. drmdp.horizon")],
    seeds: Annotated[str, typer.Option(help="e.g. 0-4 or 0,2,7")] = "0-2",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Grid axis: key=v1,v2 (repeatable)."),
    ] = None,
    preset: PresetOpt = "quick",
    backend: Annotated[str, typer.Option(help="local (process pool) | ray")] = "local",
    workers: Annotated[
        int | None, typer.Option(help="Runs at once (default: one per core, at most the runs).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch threads per run (default: the cores divided among the runs)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address; default starts a local Ray.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Sweep directory.")] = None,
    force: Annotated[bool, typer.Option(help="Re-run finished runs too.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """A grid of runs (seeds × --set values) with a mean ± 95% CI aggregate and plots."""
    from alignlab.core.sweep import aggregate_markdown, parse_seeds
    from alignlab.core.sweep import sweep as do_sweep

    _check_preset(preset)
    result = do_sweep(
        experiment,
        parse_seeds(seeds),
        set_ or [],
        preset=preset,
        out=out,
        backend=backend,
        workers=workers,
        address=address,
        device=device,
        force=force,
        threads=threads,
    )
    skipped = sum(o.skipped for o in result.outcomes)
    stdout.print(
        aggregate_markdown(result.aggregate, max_metrics=15),
        markup=False,
        highlight=False,
        soft_wrap=True,  # valid Markdown when piped to a file
    )
    console.print(
        f"{len(result.outcomes)} runs ({skipped} already finished, reused); "
        f"aggregate in [bold]{result.out}[/]/aggregate.md"
    )


@app.command()
@friendly
def reproduce(
    preset: PresetOpt = "quick",
    only: Annotated[
        list[str] | None, typer.Option(help="Only these systems (repeatable), e.g. drmdp.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/reproduce"),
    seeds: Annotated[
        str,
        typer.Option(
            "--seeds",
            "--seed",
            help="Seeds, e.g. 0, 0-4 or 0,2,7: every experiment runs once per seed, and each "
            "claim is reported with its hold rate across them.",
        ),
    ] = "0",
    force: Annotated[bool, typer.Option(help="Re-run finished runs too.")] = False,
    device: DeviceOpt = "auto",
    strict: Annotated[bool, typer.Option(help="Exit 1 if any claim fails (on any seed).")] = False,
    threads: ThreadsOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Units trained at once in each run (default one per core); with several "
            "seeds, N > 1 runs N whole runs at once instead, the cores divided among them."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="local (this process, or a pool with --workers N) | ray")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address; default starts a local Ray.")
    ] = None,
    docs: Annotated[
        Path | None,
        typer.Option(
            help="Several seeds: write each system's robustness tables into "
            "DOCS/<system>.md, between its robustness markers."
        ),
    ] = None,
) -> None:
    """Run every experiment's preset on one seed or several; write report.html, report.md
    and claims.json (with per-seed verdicts and hold rates).

    Work-in-progress experiments are left out unless --only names their system; the report
    names each one left out, with its claims as last measured in OUT when a run exists."""
    from alignlab.core.reproduce import plan
    from alignlab.core.reproduce import reproduce as do_reproduce
    from alignlab.core.sweep import parse_seeds

    _check_preset(preset)
    seed_list = parse_seeds(seeds)
    if docs is not None and len(seed_list) < 2:
        raise AlignlabError(
            "--docs writes the robustness tables, which need several seeds (e.g. --seeds 0-4)."
        )
    if docs is not None and not docs.is_dir():
        raise AlignlabError(f"--docs {docs}: no such folder (the docs pages live there).")
    the_plan = plan(only, preset, seed_list, out)
    if the_plan.wip:
        console.print(
            "[yellow]left out (work in progress, claims not reproduced yet):[/] "
            f"{', '.join(the_plan.wip)}; include with "
            + " ".join(sorted({f"--only {x.split('.')[0]}" for x in the_plan.wip}))
        )

    def outcome(name, seed, o) -> None:
        note = " (finished earlier, reused)" if o.skipped else f" in {o.wall_s:.1f} s"
        stdout.print(_claims_table(o.claims, f"{name}, seed {seed}{note}"))

    result = do_reproduce(
        the_plan, preset, seed_list, out, force=force, device=device, threads=threads,
        workers=workers, backend=backend, address=address, on_outcome=outcome,
        on_failure=error,
        on_start=lambda name, seed: console.rule(f"[bold]{name}[/] ({preset}, seed {seed})"),
    )  # fmt: skip
    from alignlab.core.report import all_claims, by_experiment, seed_label

    claims = all_claims(result.runs)
    if len(seed_list) > 1:
        for exp in the_plan.experiments:
            rows = [c for c in claims if c["experiment"] == exp.name]
            if rows:
                title = f"{exp.name} ({seed_label(seed_list)})"
                stdout.print(_claims_table(rows, title, hold_rates=True))
    n_hold = sum(c["holds"] for c in claims)
    n_exp = len(by_experiment(result.runs))
    every = " on every seed" if len(seed_list) > 1 else ""
    skipped = (
        f"; {len(the_plan.left_out)} left out (named in the report)" if the_plan.left_out else ""
    )
    stdout.print(
        f"[bold]{n_hold}/{len(claims)} claims hold{every}[/] in the {n_exp} experiments run"
        f"{skipped}; report: {out / 'report.html'}, {out / 'report.md'}"
    )
    if docs is not None:
        from alignlab.core.report import update_docs

        for page in update_docs(out / "robustness", docs):
            console.print(f"robustness tables written into {page}")
    if result.problems:
        raise AlignlabError("; ".join(result.problems))
    if strict and n_hold < len(claims):
        raise typer.Exit(1)


@app.command()
@friendly
def show(
    experiment: Annotated[str, typer.Argument(help="e.g. cmd.stitching")],
) -> None:
    """An experiment's config: every field, its value in each preset, its constraint and help."""
    from alignlab.core.config import describe

    exp = registry.get(experiment)
    wip = " (work in progress)" if exp.wip else ""
    lines = [f"{exp.name}{wip}: {exp.description}", exp.paper, "", "config (--set KEY=VALUE):"]
    for row in describe({p: exp.preset(p) for p in PRESETS}):
        if row["group"]:
            lines += ["", f"{row['key']}.*  {row['help']}"]
            continue
        rule = f", {row['constraint']}" if row["constraint"] else ""
        lines.append(f"  {row['key']} ({row['type']}{rule}): {row['help']}")
        values = row["values"]
        if len({repr(v) for v in values.values()}) == 1:
            lines.append(f"      all presets: {_short(values[PRESETS[0]])}")
        else:
            lines.append("      " + " | ".join(f"{p} {_short(values[p])}" for p in PRESETS))
    if exp.claims:
        lines += ["", "claims:"] + [f"  {c.id}: {c.statement}" for c in exp.claims]
    stdout.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@app.command()
@friendly
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("report"),
) -> None:
    """The reproduce report (HTML + Markdown + claims.json) from existing run directories."""
    from alignlab.core.report import build_report

    runs, problems = build_report(run_dirs, out)
    n = sum(len(r.claims) for r in runs)
    n_hold = sum(c["holds"] for r in runs for c in r.claims)
    console.print(f"{len(runs)} runs, {n_hold}/{n} claims hold; report: {out / 'report.html'}")
    if problems:
        for p in problems:
            error(p)
        raise typer.Exit(2)


def main() -> None:
    app(prog_name="alignlab")


if __name__ == "__main__":
    sys.exit(main())
