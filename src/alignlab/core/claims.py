"""Claims: a paper's statement, a check over an experiment's results, the measured figure.

A claim's `check(results)` returns `(measured, holds)` or `(measured, holds, detail)`:
`measured` is the figure shown beside the paper's statement (a number or a short string),
`holds` a bool, and `detail` an optional longer explanation (e.g. disagreements listed).
The statement names the paper's (or the notes') figure or threshold the check applies.

A claim may also name its headline numbers with `figure(results)`: a float, or a dict of
named floats (e.g. one success rate per method). They are stored in claims.json, and a report
over several seeds gives each as a mean ± 95% CI across the seeds (`across_seeds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignlab.core.stats import mean_ci95


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str  # the paper's statement, with its section/table and its threshold
    check: Callable[[dict[str, Any]], tuple]
    figure: Callable[[dict[str, Any]], float | dict[str, float]] | None = None

    def evaluate(self, results: dict[str, Any]) -> dict[str, Any]:
        """One entry of claims.json. A check that crashes is a claim that does not hold."""
        try:
            measured, holds, *rest = self.check(results)
            figure = None if self.figure is None else _figure(self.figure(results))
        except Exception as e:  # a broken check must show up in the report, not vanish
            return {
                "id": self.id,
                "statement": self.statement,
                "measured": None,
                "holds": False,
                "detail": f"check failed: {type(e).__name__}: {e}",
            }
        entry = {
            "id": self.id,
            "statement": self.statement,
            "measured": measured,
            "holds": bool(holds),
        }
        if figure is not None:
            entry["figure"] = figure
        if rest and rest[0]:
            entry["detail"] = rest[0]
        return entry


def _figure(x: Any) -> float | dict[str, float]:
    if isinstance(x, dict):
        return {str(k): float(v) for k, v in x.items()}
    return float(x)


def evaluate_claims(claims: list[Claim], results: dict[str, Any]) -> list[dict[str, Any]]:
    return [c.evaluate(results) for c in claims]


def across_seeds(per_seed: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """One claim measured on several seeds: `per_seed` holds (seed, run dir, claims.json
    entry) for each seed. Returns the claim's entry of a report's claims.json:

    `holds` only if it holds on every seed; `held`/`n_seeds`/`hold_rate` ("4/5 seeds");
    `figure` as {name: {mean, ci95, values}} when every seed measured the same names;
    `measured` (the one seed's figure, or the figures' means ± CIs); `seeds`, the per-seed
    verdicts with their measured figures.
    """
    first = per_seed[0][2]
    seeds = []
    for seed, run, c in per_seed:
        row = {"seed": seed, "run": run, "measured": c["measured"], "holds": c["holds"]}
        row.update({k: c[k] for k in ("figure", "detail") if k in c})
        seeds.append(row)
    held = sum(s["holds"] for s in seeds)
    entry: dict[str, Any] = {
        "id": first["id"],
        "statement": first["statement"],
        "holds": held == len(seeds),
        "held": held,
        "n_seeds": len(seeds),
        "hold_rate": f"{held}/{len(seeds)} seed{'s' if len(seeds) > 1 else ''}",
    }
    figure = _figure_summary([s.get("figure") for s in seeds])
    if figure is not None:
        entry["figure"] = figure
    if len(seeds) == 1:
        entry["measured"] = first["measured"]
        entry["run"] = per_seed[0][1]
        if "detail" in first:
            entry["detail"] = first["detail"]
    elif figure:
        entry["measured"] = format_figure(figure)
    elif len({repr(s["measured"]) for s in seeds}) == 1:
        entry["measured"] = first["measured"]  # the same on every seed
    else:
        entry["measured"] = f"differs by seed (see the {len(seeds)} seeds)"
    entry["seeds"] = seeds
    return entry


def _figure_summary(figures: list[Any]) -> dict[str, dict[str, Any]] | None:
    """{name: {mean, ci95, values}} across seeds (a plain float is named ""); None unless every
    seed gave the same names."""
    if any(f is None for f in figures):
        return None
    named = [f if isinstance(f, dict) else {"": f} for f in figures]
    if any(list(n) != list(named[0]) for n in named):
        return None
    out = {}
    for name in named[0]:
        values = [n[name] for n in named]
        if not all(math.isfinite(v) for v in values):
            out[name] = {"mean": math.nan, "ci95": math.nan, "values": values}
            continue
        mean, half = mean_ci95(values)
        out[name] = {"mean": mean, "ci95": half, "values": values}
    return out


def format_figure(figure: dict[str, dict[str, Any]]) -> str:
    """'0.803 ± 0.051' or 'CMD-2 0.9803 ± 0.0076; CRL 0.341 ± 0.026' (mean ± 95% CI across
    seeds, the mean to the CI's two significant digits)."""

    def one(s: dict[str, Any]) -> str:
        m, h = s["mean"], s["ci95"]
        if not math.isfinite(h):
            return f"{m:.4g}"
        if h == 0 or not math.isfinite(m):
            return f"{m:.4g} ± 0"
        decimals = max(0, 1 - math.floor(math.log10(h)))  # the CI's two significant digits
        return f"{m:.{decimals}f} ± {h:.{decimals}f}"

    return "; ".join(f"{name} {one(s)}".strip() for name, s in figure.items())
