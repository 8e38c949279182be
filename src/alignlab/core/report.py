"""Reports: each paper claim beside the measured figure, per system, with the runs' plots.

`build_report(run_dirs, out)` writes `out/report.html` (self-contained: plots embedded as
base64 PNG), `out/report.md` (plots linked relative to `out`) and `out/claims.json` (one
entry per claim of each experiment, with `system` and `experiment` keys and its per-seed
verdicts: `core.claims.across_seeds`). Unreadable run directories are listed as problems in
the report instead of stopping it.

Runs of one experiment on several seeds are reported together: each claim with its hold rate
("4/5 seeds") and its figures as mean ± 95% CI across the seeds, and a robustness table
(claim × seed), also written per system to `out/robustness/<system>.md` for the docs. A claim
counts as holding in the headline only if it holds on every seed it was run on.

A report hides nothing: experiments that were not run (`left_out`: work in progress, or not
selected) are named in the headline and in their system's row, with the reason and, where a
finished run of theirs exists, their claims as last measured, marked as not part of this
reproduction. Their claims do not enter the headline count or claims.json.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.core.claims import across_seeds, format_figure
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, atomic_write_text, read_json
from alignlab.core.run import config_of, run_status


@dataclass
class LeftOut:
    """An experiment the report covers without having run it."""

    experiment: str
    reason: str
    last_run: Path | None = None  # where a finished run of it may be found

    @property
    def system(self) -> str:
        return self.experiment.split(".", 1)[0]

    def loaded(self) -> LoadedRun | None:
        """Its last finished run, if there is one."""
        if self.last_run is None:
            return None
        try:
            return load_run(self.last_run)
        except ValueError:
            return None


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


def by_experiment(runs: list[LoadedRun]) -> dict[str, list[LoadedRun]]:
    """The runs grouped by experiment (in first-seen order), each group sorted by seed."""
    groups: dict[str, list[LoadedRun]] = {}
    for r in runs:
        groups.setdefault(r.experiment, []).append(r)
    return {e: sorted(rs, key=lambda r: r.meta.get("seed", 0)) for e, rs in groups.items()}


def experiment_claims(rs: list[LoadedRun]) -> list[dict[str, Any]]:
    """One experiment's claims across its runs (one per seed): `core.claims.across_seeds`."""
    ids = list(dict.fromkeys(c["id"] for r in rs for c in r.claims))
    out = []
    for cid in ids:
        per_seed = [
            (r.meta.get("seed"), str(r.dir), c) for r in rs for c in r.claims if c["id"] == cid
        ]
        entry = across_seeds(per_seed)
        if len(per_seed) < len(rs):  # a claim some runs lack (e.g. an older version's)
            entry["holds"] = False
            entry["hold_rate"] = f"{entry['held']}/{len(rs)} seeds (missing in some runs)"
        out.append(entry)
    return out


def all_claims(runs: list[LoadedRun]) -> list[dict[str, Any]]:
    """claims.json of a report: every experiment's claims across its seeds."""
    return [
        {"system": rs[0].system, "experiment": exp, **c}
        for exp, rs in by_experiment(runs).items()
        for c in experiment_claims(rs)
    ]


def _claims_by_experiment(claims: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in claims:
        groups.setdefault(c["experiment"], []).append(c)
    return groups


def seed_label(seeds: list[int]) -> str:
    """[0, 1, 2, 3, 4] → 'seeds 0–4'; [0, 2] → 'seeds 0, 2'; [3] → 'seed 3'."""
    seeds = sorted(set(seeds))
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


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
    left_out: list[LeftOut] | None = None,
) -> tuple[list[LoadedRun], list[str]]:
    """Write report.html, report.md and claims.json to `out`; returns (runs, problems).

    `problems` are listed in the report beside the unreadable run directories; `left_out`
    experiments are named with their reason and last measured claims (module docstring).
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
    left = None if left_out is None else [(x, x.loaded()) for x in left_out]
    out.mkdir(parents=True, exist_ok=True)
    claims = all_claims(runs)  # each experiment's claims across its seeds, computed once
    atomic_write_json(out / "claims.json", claims)
    blocks = _blocks(runs, claims, problems, registry, title, left)
    atomic_write_text(out / "report.md", _markdown(blocks, out))
    atomic_write_text(out / "report.html", _html(blocks, title))
    if any(len(rs) > 1 for rs in by_experiment(runs).values()):
        by_exp = _claims_by_experiment(claims)
        for system, rs in _by_system(runs).items():
            path = out / "robustness" / f"{system}.md"
            atomic_write_text(path, robustness_markdown(rs, by_exp))
    return runs, problems


def robustness_markdown(runs: list[LoadedRun], claims: dict[str, list[dict[str, Any]]]) -> str:
    """One system's robustness tables (claim × seed, one table per experiment), as Markdown:
    the docs' "Robustness" section. `claims`: each experiment's claims across its seeds."""
    lead = (
        "Each claim on each seed (✅ holds, ❌ fails) with the claim's figure on that seed, and "
        "its hold rate; written by `alignlab reproduce --seeds ... --docs docs`."
    )
    blocks: list[tuple] = [("p", lead, False)]
    for exp, rs in by_experiment(runs).items():
        meta = rs[0].meta
        cs = claims[exp]
        blocks += [
            ("p", f"{exp} ({meta.get('preset')} preset, {seed_label(_seeds(rs))})", True),
            _robustness_table(rs, cs),
            *_failure_details(cs),
        ]
    return _markdown(blocks, Path("."))


def _seeds(rs: list[LoadedRun]) -> list[int]:
    return [r.meta.get("seed") for r in rs]


def _by_system(runs: list[LoadedRun]) -> dict[str, list[LoadedRun]]:
    groups: dict[str, list[LoadedRun]] = {}
    for r in runs:
        groups.setdefault(r.system, []).append(r)
    return groups


def _summary_rows(runs: list[LoadedRun], claims, left) -> list[tuple[str, str, str]]:
    """(system, claims holding in the runs, experiments left out) per system, in run order."""
    left = left or []
    by_system = _by_system(runs)
    rows = []
    for system in dict.fromkeys([*by_system, *(x.system for x, _ in left)]):
        rs = by_system.get(system, [])
        mine = [c for c in claims if c["system"] == system]
        held, total = sum(c["holds"] for c in mine), len(mine)
        outs = [_left_label(x, run) for x, run in left if x.system == system]
        rows.append((system, f"{held}/{total}" if rs else "—", "; ".join(outs) or "—"))
    return rows


def _left_label(x: LeftOut, run: LoadedRun | None) -> str:
    if run is None:
        return f"{x.experiment} (never run here)"
    held = sum(c["holds"] for c in run.claims)
    return f"{x.experiment} (last measured {held}/{len(run.claims)})"


def _headline(runs: list[LoadedRun], claims, left) -> str:
    n_hold, n_all = sum(c["holds"] for c in claims), len(claims)
    n_exp = len(by_experiment(runs))
    seeds = sorted({r.meta.get("seed") for r in runs})
    if len(seeds) == 1 and n_exp == len(runs):
        text = f"{n_hold}/{n_all} claims hold in the {n_exp} experiments run"
    else:
        text = (
            f"{n_hold}/{n_all} claims hold on every seed run ({seed_label(seeds)}) in the "
            f"{n_exp} experiments run (a claim counts only if it holds on every seed; the "
            "others show their hold rate)"
        )
    if left is None:  # a report of given run folders: no statement about coverage
        return text + "."
    if not left:
        return text + "; every registered experiment was run."
    reasons: dict[str, list[str]] = {}
    for x, run in left:
        reasons.setdefault(x.reason, []).append(_left_label(x, run))
    parts = [f"{reason}: {', '.join(names)}" for reason, names in reasons.items()]
    return (
        text
        + f". {len(left)} experiments were not run and are not counted — "
        + "; ".join(parts)
        + "."
    )


def _run_line(r: LoadedRun) -> str:
    wall = r.meta.get("wall_s")
    wall_s = f", {wall:.1f} s" if isinstance(wall, (int, float)) else ""
    return f"preset {r.meta.get('preset')}, seed {r.meta.get('seed')}{wall_s}, run {r.dir}"


def _seeds_line(rs: list[LoadedRun]) -> str:
    walls = [r.meta.get("wall_s") for r in rs]
    wall = ""
    if all(isinstance(w, (int, float)) for w in walls):
        wall = f", {sum(walls) / len(walls):.1f} s per seed"
    where = os.path.commonpath([str(r.dir) for r in rs])
    return f"preset {rs[0].meta.get('preset')}, {seed_label(_seeds(rs))}{wall}, runs under {where}"


# ---------------------------------------------------------------------------------------
# the report as blocks, rendered once as Markdown and once as HTML
#   ("h", level, text)  ("p", text, bold)  ("small", text)  ("list", items)
#   ("table", header, rows): a bool cell is a claim's verdict
#   ("details", summary, text)  ("plots", experiment, paths)


def _blocks(runs, claims, problems, registry, title: str, left) -> list[tuple]:
    out: list[tuple] = [("h", 1, title), ("p", _headline(runs, claims, left), True)]
    out.append(
        ("table", ("system", "claims holding", "not run"), _summary_rows(runs, claims, left))
    )
    if problems:
        out += [("h", 2, "Problems"), ("list", problems)]
    by_exp = _claims_by_experiment(claims)
    for system, rs in _by_system(runs).items():
        out.append(("h", 2, system))
        for exp, ers in by_experiment(rs).items():
            out.append(("h", 3, exp))
            if len(ers) == 1:
                out += _run_blocks(ers[0], registry)
            else:
                out += _seeds_blocks(ers, by_exp[exp], registry)
    if left:
        out.append(("h", 2, "Not run in this reproduction"))
        for x, run in left:
            out += [("h", 3, x.experiment), ("p", f"Not run: {x.reason}.", False)]
            if run is None:
                out.append(("p", "No finished run of it in this output folder.", False))
            else:
                note = "Its claims as last measured (not part of this reproduction):"
                out += [("p", note, True), *_run_blocks(run, registry)]
    return out


def _run_blocks(r: LoadedRun, registry) -> list[tuple]:
    exp = registry.get(r.experiment)
    out = [("p", f"{exp.description} ({exp.paper})", False)] if exp is not None else []
    out.append(("small", _run_line(r)))
    rows = [(c["id"], c["statement"], _measured(c["measured"]), c["holds"]) for c in r.claims]
    out.append(("table", ("claim", "paper's statement", "measured", "holds"), rows))
    out += [
        ("details", f"{c['id']}: detail", str(c["detail"])) for c in r.claims if c.get("detail")
    ]
    if r.plots:
        out.append(("plots", r.experiment, r.plots))
    return out


def _seeds_blocks(rs: list[LoadedRun], claims: list[dict[str, Any]], registry) -> list[tuple]:
    """One experiment run on several seeds: claims with hold rates, the robustness table, the
    failing seeds' figures, and the first seed's plots."""
    exp = registry.get(rs[0].experiment)
    out = [("p", f"{exp.description} ({exp.paper})", False)] if exp is not None else []
    out.append(("small", _seeds_line(rs)))
    rows = [
        (c["id"], c["statement"], _measured(c["measured"]), c["hold_rate"], c["holds"])
        for c in claims
    ]
    header = ("claim", "paper's statement", "measured (mean ± 95% CI)", "hold rate", "holds")
    out += [("table", header, rows), ("p", "Robustness (claim × seed)", True)]
    out += [_robustness_table(rs, claims), *_failure_details(claims)]
    if rs[0].plots:
        seed = rs[0].meta.get("seed")
        out += [("small", f"plots of seed {seed}"), ("plots", rs[0].experiment, rs[0].plots)]
    return out


def _robustness_table(rs: list[LoadedRun], claims: list[dict[str, Any]]) -> tuple:
    header = ("claim", *(f"seed {s}" for s in _seeds(rs)), "mean ± 95% CI", "hold rate")
    rows = []
    for c in claims:
        by_seed = {s["seed"]: s for s in c["seeds"]}
        cells = []
        for seed in _seeds(rs):
            s = by_seed.get(seed)
            cells.append("—" if s is None else ("✅ " if s["holds"] else "❌ ") + _compact(s))
        mean = format_figure(c["figure"]) if c.get("figure") else "—"
        rows.append((c["id"], *cells, mean, c["hold_rate"]))
    return ("table", header, rows)


def _compact(seed_entry: dict[str, Any]) -> str:
    """A seed's figure in a few characters: '0.865' or 'CMD-2 0.99, CRL 0.37' (without a
    figure: the start of its measured text)."""
    f = seed_entry.get("figure")
    if f is None:
        text = _measured(seed_entry["measured"])
        return text if len(text) <= 40 else text[:39] + "…"
    if isinstance(f, dict):
        return ", ".join(f"{k} {v:.3g}" for k, v in f.items())
    return f"{f:.3g}"


def _failure_details(claims: list[dict[str, Any]]) -> list[tuple]:
    """The measured text of every claim on every seed where it fails."""
    out = []
    for c in claims:
        lines = [
            f"seed {s['seed']}: {_measured(s['measured'])}" for s in c["seeds"] if not s["holds"]
        ]
        if lines:
            out.append(("details", f"{c['id']}: the seeds where it fails", "\n".join(lines)))
    return out


def _markdown(blocks: list[tuple], out: Path) -> str:
    def cell(x) -> str:
        return ("✅" if x else "❌") if isinstance(x, bool) else str(x).replace("|", "\\|")

    md: list[str] = []
    for kind, *a in blocks:
        if kind == "h":
            md += [f"{'#' * a[0]} {a[1]}", ""]
        elif kind in ("p", "small"):
            md += [f"**{a[0]}**" if kind == "p" and a[1] else a[0], ""]
        elif kind == "list":
            md += [f"- {item}" for item in a[0]] + [""]
        elif kind == "table":
            md += ["| " + " | ".join(a[0]) + " |", "|" + "---|" * len(a[0])]
            md += ["| " + " | ".join(cell(x) for x in row) + " |" for row in a[1]] + [""]
        elif kind == "details":
            md += [f"<details><summary>{a[0]}</summary>", "", "```", a[1], "```", "</details>", ""]
        elif kind == "plots":
            md += [f"![{a[0]}: {p.stem}]({os.path.relpath(p, out)})\n" for p in a[1]]
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


def _html(blocks: list[tuple], title: str) -> str:
    e = html.escape

    def cell(x) -> str:
        if isinstance(x, bool):
            return "<span class=ok>✓ holds</span>" if x else "<span class=no>✗ fails</span>"
        return e(str(x))

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"]
    h.append(f"<style>{_CSS}</style></head><body>")
    for kind, *a in blocks:
        if kind == "h":
            h.append(f"<h{a[0]}>{e(a[1])}</h{a[0]}>")
        elif kind == "p":
            h.append(f"<p><b>{e(a[0])}</b></p>" if a[1] else f"<p>{e(a[0])}</p>")
        elif kind == "small":
            h.append(f"<p><small>{e(a[0])}</small></p>")
        elif kind == "list":
            h.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in a[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(x)}</th>" for x in a[0])
            rows = "".join(
                "<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>" for r in a[1]
            )
            h.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "details":
            h.append(f"<details><summary>{e(a[0])}</summary><pre>{e(a[1])}</pre></details>")
        elif kind == "plots":
            h.append("<div class=plots>" + "".join(_img(p) for p in a[1]) + "</div>")
    h.append("</body></html>")
    return "\n".join(h)


ROBUSTNESS_BEGIN = (
    "<!-- robustness: generated by `alignlab reproduce --seeds ... --docs`; do not edit -->"
)
ROBUSTNESS_END = "<!-- robustness: end -->"


def update_docs(robustness_dir: str | Path, docs_dir: str | Path) -> list[Path]:
    """Write each `robustness_dir/<system>.md` into `docs_dir/<system>.md` between the
    robustness markers (a "## Robustness" section is appended to a page that has none).
    Pages of systems without a docs page are skipped. Returns the pages written."""
    written = []
    for table in sorted(Path(robustness_dir).glob("*.md")):
        page = Path(docs_dir) / table.name
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        body = f"{ROBUSTNESS_BEGIN}\n{table.read_text(encoding='utf-8').strip()}\n{ROBUSTNESS_END}"
        if ROBUSTNESS_BEGIN in text and ROBUSTNESS_END in text:
            head, rest = text.split(ROBUSTNESS_BEGIN, 1)
            text = head + body + rest.split(ROBUSTNESS_END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n## Robustness\n\n" + body + "\n"
        atomic_write_text(page, text)
        written.append(page)
    return written
