"""What several CMD experiments share: labels, the smoke sizes, training every (method, seed)
unit, the per-method summary across seeds, and the success plot."""

from __future__ import annotations

import numpy as np

from alignlab.core.stats import mean_ci95
from alignlab.core.units import run_units
from alignlab.rl import EpisodeDataset

from ..methods import METHODS, ActionSpec, MethodConfig
from ..train import EvalFn, LoopConfig, Unit, train_unit

PAPER = "Myers et al. 2024, Learning Temporal Distances (CMD), ICML 2024"
ALL_METHODS = tuple(METHODS)
LABELS = {"cmd2": "CMD-2", "cmd1": "CMD-1", "crl": "CRL", "gcbc": "GCBC", "td": "TD", "qrl": "QRL"}

SMOKE_LOOP = LoopConfig(steps=20, log_every=10, eval_every=10, checkpoint_every=10)
SMOKE_METHOD = MethodConfig(batch_size=32, hidden=(32,), repr_dim=16)


def train_methods(
    ctx,
    methods,
    datasets: dict[int, EpisodeDataset],
    spec: ActionSpec,
    cfg: MethodConfig,
    loop: LoopConfig,
    evaluate: EvalFn,
) -> dict:
    """Train every method on every seed's dataset (one unit each); per-method summaries."""
    units = {u.key: u for u in (Unit(m, s) for m in methods for s in datasets)}

    def train(key: str, uctx) -> dict:
        unit = units[key]
        return train_unit(uctx, unit, datasets[unit.seed], spec, cfg, loop, evaluate)

    out = run_units(ctx, list(units), train, size=loop.steps)
    return summarise(out, methods, list(datasets))


def summarise(units_out: dict, methods, seeds) -> dict:
    """Per method: final success per seed, their mean ± 95% CI, the curves and last losses."""
    per = {}
    for m in methods:
        finals = [units_out[Unit(m, s).key]["final_success"] for s in seeds]
        mean, half = mean_ci95(finals)
        per[m] = {
            "success": finals,
            "mean": mean,
            "ci95": half,
            "curves": [units_out[Unit(m, s).key]["curve"] for s in seeds],
            "losses": [units_out[Unit(m, s).key]["losses"] for s in seeds],
        }
    return per


def ci95(x: dict) -> float:
    """A summary's CI half-width as a float: results.json writes one seed's NaN as "nan"."""
    return float(x["ci95"])


def fmt(r: dict, m: str) -> str:
    x = r["methods"][m]
    return f"{LABELS[m]} {x['mean']:.2f} ± {ci95(x):.2f}"


def plot_success(results: dict, ctx, name: str, title: str) -> None:
    from alignlab.core.plotting import plt

    ms = results["methods"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(ms)
    a.bar(
        range(len(names)),
        [ms[m]["mean"] for m in names],
        yerr=[np.nan_to_num(ci95(ms[m])) for m in names],  # one seed: no interval
        capsize=4,
        color=["C0" if m.startswith("cmd") else "C7" for m in names],
    )
    a.set_xticks(range(len(names)), [LABELS[m] for m in names])
    a.set(ylabel="success rate", ylim=(0, 1.05), title=f"{title}: final success (95% CI)")
    for i, m in enumerate(names):
        curves = np.array(ms[m]["curves"], dtype=float)  # (seeds, evals, 2)
        mean = curves[:, :, 1].mean(0)
        b.plot(curves[0, :, 0], mean, "o-", color=f"C{i}", label=LABELS[m])
        if len(curves) > 1:
            b.fill_between(
                curves[0, :, 0],
                curves[:, :, 1].min(0),
                curves[:, :, 1].max(0),
                color=f"C{i}",
                alpha=0.15,
            )
    b.set(xlabel="gradient steps", ylabel="success rate", ylim=(0, 1.05), title="success vs steps")
    b.legend(fontsize=7)
    ctx.save_figure(fig, name)
