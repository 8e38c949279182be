"""Reports: each paper claim beside the measured figure, per system, with the runs' plots.

`build_report(run_dirs, out)` writes `out/report.html` (self-contained: plots embedded as
base64 PNG), `out/report.md` (plots linked relative to `out`) and `out/claims.json` (every
claim of every run, with `system` and `experiment` keys). Unreadable run directories are
listed as problems in the report instead of stopping it.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, atomic_write_text, read_json
from alignlab.core.run import config_of, run_status


@dataclass
class LoadedRun:
    dir: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    results: dict[str, Any]
    claims: list[dict[str, Any]]
    plots: list[Path] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return self.meta["experiment"]

    @property
    def system(self) -> str:
        return self.meta.get("system") or self.experiment.split(".", 1)[0]


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a finished run; raises ValueError naming what is missing or corrupt."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    status = run_status(run_dir)  # also checks the types of run.json, config and claims
    if status in ("missing", "foreign"):
        raise ValueError(f"{run_dir}: not an alignlab run directory (no alignlab run.json)")
    if status == "corrupt":
        raise ValueError(
            f"{run_dir}: corrupt run (unreadable or malformed run.json, config.yaml, "
            "results.json or claims.json)"
        )
    if status != "complete":
        raise ValueError(f"{run_dir}: unfinished run (status: {status}); resume it with --resume")
    return LoadedRun(
        dir=run_dir,
        meta=read_json(run_dir / "run.json"),
        config=config_of(run_dir),
        results=read_json(run_dir / "results.json"),
        claims=read_json(run_dir / "claims.json"),
        plots=sorted((run_dir / "plots").glob("*.png")),
    )


def all_claims(runs: list[LoadedRun]) -> list[dict[str, Any]]:
    return [
        {"system": r.system, "experiment": r.experiment, "run": str(r.dir), **c}
        for r in runs
        for c in r.claims
    ]


def _measured(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "—" if x is None else str(x)


def _descriptions() -> dict[str, Any]:
    from alignlab.core import experiment as registry

    return {e.name: e for e in registry.experiments()}


def build_report(
    run_dirs: list[str | Path],
    out: str | Path,
    title: str = "alignlab report",
    problems: list[str] | None = None,
) -> tuple[list[LoadedRun], list[str]]:
    """Write report.html, report.md and claims.json to `out`; returns (runs, problems).

    `problems` are listed in the report beside the unreadable run directories.
    """
    out = Path(out)
    runs, problems = [], list(problems or [])
    for d in run_dirs:
        try:
            runs.append(load_run(d))
        except ValueError as e:
            problems.append(str(e))
    if not runs:
        raise AlignlabError("No report written: no readable run.\n" + "\n".join(problems))
    registry = _descriptions()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "claims.json", all_claims(runs))
    atomic_write_text(out / "report.md", _markdown(runs, problems, out, registry, title))
    atomic_write_text(out / "report.html", _html(runs, problems, registry, title))
    return runs, problems


def _by_system(runs: list[LoadedRun]) -> dict[str, list[LoadedRun]]:
    groups: dict[str, list[LoadedRun]] = {}
    for r in runs:
        groups.setdefault(r.system, []).append(r)
    return groups


def _summary_rows(runs: list[LoadedRun]) -> list[tuple[str, int, int]]:
    return [
        (system, sum(c["holds"] for r in rs for c in r.claims), sum(len(r.claims) for r in rs))
        for system, rs in _by_system(runs).items()
    ]


def _run_line(r: LoadedRun) -> str:
    wall = r.meta.get("wall_s")
    wall_s = f", {wall:.1f} s" if isinstance(wall, (int, float)) else ""
    return f"preset `{r.meta.get('preset')}`, seed {r.meta.get('seed')}{wall_s}, run `{r.dir}`"


def _markdown(runs, problems, out: Path, registry, title: str) -> str:
    md = [f"# {title}", ""]
    n_hold = sum(h for _, h, _ in _summary_rows(runs))
    n_all = sum(n for _, _, n in _summary_rows(runs))
    md += [f"**{n_hold}/{n_all} claims hold** across {len(runs)} runs.", ""]
    md += ["| system | claims holding |", "|---|---|"]
    md += [f"| {s} | {h}/{n} |" for s, h, n in _summary_rows(runs)]
    if problems:
        md += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    for system, rs in _by_system(runs).items():
        md += ["", f"## {system}", ""]
        for r in rs:
            exp = registry.get(r.experiment)
            md += [f"### {r.experiment}", ""]
            if exp is not None:
                md += [f"{exp.description} ({exp.paper})", ""]
            md += [_run_line(r), ""]
            md += ["| claim | paper's statement | measured | holds |", "|---|---|---|---|"]
            for c in r.claims:
                mark = "✅" if c["holds"] else "❌"
                stmt = c["statement"].replace("|", "\\|")
                meas = _measured(c["measured"]).replace("|", "\\|")
                md.append(f"| {c['id']} | {stmt} | {meas} | {mark} |")
            details = [c for c in r.claims if c.get("detail")]
            for c in details:
                md += ["", f"<details><summary>{c['id']}: detail</summary>", ""]
                md += ["```", str(c["detail"]), "```", "</details>"]
            for p in r.plots:
                rel = os.path.relpath(p, out)
                md += ["", f"![{r.experiment}: {p.stem}]({rel})"]
            md.append("")
    return "\n".join(md) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.3em .6em;
vertical-align:top;text-align:left}th{background:#f3f3f3}.ok{color:#0a7a2f;font-weight:bold}
.no{color:#b00020;font-weight:bold}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
code{background:#f5f5f5;padding:0 .2em}pre{background:#f7f7f7;padding:.5em;overflow:auto}
.plots{display:flex;flex-wrap:wrap;gap:.5em}.plots img{max-width:48%}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _html(runs, problems, registry, title: str) -> str:
    e = html.escape
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"]
    h.append(f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>")
    rows = _summary_rows(runs)
    n_hold, n_all = sum(r[1] for r in rows), sum(r[2] for r in rows)
    h.append(f"<p><b>{n_hold}/{n_all} claims hold</b> across {len(runs)} runs.</p>")
    h.append("<table><tr><th>system</th><th>claims holding</th></tr>")
    h += [f"<tr><td>{e(s)}</td><td>{hh}/{n}</td></tr>" for s, hh, n in rows]
    h.append("</table>")
    if problems:
        h.append("<h2>Problems</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    for system, rs in _by_system(runs).items():
        h.append(f"<h2>{e(system)}</h2>")
        for r in rs:
            exp = registry.get(r.experiment)
            h.append(f"<h3>{e(r.experiment)}</h3>")
            if exp is not None:
                h.append(f"<p>{e(exp.description)} <i>({e(exp.paper)})</i></p>")
            h.append(f"<p><small>{e(_run_line(r).replace('`', ''))}</small></p>")
            h.append(
                "<table><tr><th>claim</th><th>paper's statement</th><th>measured</th>"
                "<th>holds</th></tr>"
            )
            for c in r.claims:
                mark = (
                    "<span class=ok>✓ holds</span>"
                    if c["holds"]
                    else "<span class=no>✗ fails</span>"
                )
                detail = (
                    f"<details><summary>detail</summary><pre>{e(str(c['detail']))}</pre></details>"
                    if c.get("detail")
                    else ""
                )
                h.append(
                    f"<tr><td>{e(c['id'])}</td><td>{e(c['statement'])}</td>"
                    f"<td>{e(_measured(c['measured']))}{detail}</td><td>{mark}</td></tr>"
                )
            h.append("</table>")
            if r.plots:
                h.append("<div class=plots>" + "".join(_img(p) for p in r.plots) + "</div>")
    h.append("</body></html>")
    return "\n".join(h)
