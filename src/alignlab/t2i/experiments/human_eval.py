"""t2i.human_eval: Imagen 3's side-by-side human evaluation (Sec. 3.1) with simulated raters.

Six models (`common.MODELS`), a full round robin per aspect and prompt set: 15 pairs x
2500 ratings per study (the report's number), uniform over prompts, sides shuffled, an
indifference option, each rater <= 2 % of a study. Overall preference, prompt-image alignment
and visual appeal (prompt hidden) on the GenAI-like and DrawBench-like sets; detailed
alignment against the reference render on the DOCCI-like set; counting on the GeckoNum-like
set. Elo from a Bradley-Terry fit with 99 % CIs from 1000 prompt-clustered bootstrap resamples.

The raters are SIMULATED: noisy oracles reading `world.perceive` (`alignlab.t2i.raters`).

Claims (the report's figures beside ours in docs/t2i.md):
- (4) alignment: `full` first on both sets, and `full@2k` above `short` with disjoint 99 %
  CIs on both (recaptioning; the report: Imagen 3 first, 1083 vs 1047 on GenAI-Bench);
- (5) detailed alignment: `full` first by >= 50 Elo (the report: +114 over the second);
- (6) appeal: `full@2k` above `raw` on both sets (data filtering);
- (7) counting: `full` most accurate, and its accuracy at 1 object >= 20 pp above its
  accuracy at 5 (the report: 58.6 vs 46.0 %; "5 X" 51.6 pp below "1 X").
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator
from alignlab.t2i import prompts as P
from alignlab.t2i.eval import elo as E
from alignlab.t2i.eval import measures as M
from alignlab.t2i.eval import sxs as S
from alignlab.t2i.experiments import common as C
from alignlab.t2i.raters import SimulatedRaters

SXS_SETS = ("genai", "drawbench")
SXS_ASPECTS = ("overall", "alignment", "appeal")


@dataclass
class HumanEvalConfig:
    models: C.ModelsConfig = param(factory=C.ModelsConfig, help="the data and the six models")
    n_prompts: int = param(200, ge=2, help="prompts of the GenAI- and DrawBench-like sets")
    n_docci: int = param(100, ge=2, help="DOCCI-like long prompts with reference renders")
    n_gecko: int = param(105, ge=5, help="GeckoNum-like prompts (numbers x 7 structures)")
    n_ratings: int = param(2500, ge=1, help="ratings per study (Sec. 3.1: 2500)")
    rater_noise: float = param(0.15, ge=0, help="mean Gumbel scale of a simulated rater")
    rater_band: float = param(0.05, ge=0, help="indifference band on the utility difference")
    n_boot: int = param(1000, ge=10, help="bootstrap resamples of the Elo CIs")
    level: float = param(0.99, gt=0, lt=1, help="CI level (Sec. 3.1: 99 %)")


def eval_sets(ctx, cfg) -> dict[str, list[P.Prompt]]:
    wc = C.world_config(cfg.models)
    n = {"genai": cfg.n_prompts, "drawbench": cfg.n_prompts, "docci": cfg.n_docci}
    n["gecko_num"] = cfg.n_gecko
    return {s: P.prompt_set(s, generator(ctx.seed, "t2i-prompts", s), k, wc) for s, k in n.items()}


def galleries(ctx, cfg, models, sets) -> dict[str, dict[str, np.ndarray]]:
    """set -> model -> images."""
    return {
        s: {m: C.gallery(ctx, cfg.models, models, m, ps, s) for m in C.MODELS}
        for s, ps in sets.items()
    }


def rated_studies(ctx, cfg, sets, gal, raters, aspects_sets) -> list[S.Rating]:
    """Every pair x aspect x set of `aspects_sets` rated by the simulated raters."""
    out: list[S.Rating] = []
    for aspects, set_names in aspects_sets:
        design = S.design_round_robin(
            C.MODELS,
            aspects,
            {s: list(range(len(sets[s]))) for s in set_names},
            n_ratings=cfg.n_ratings,
            rng=generator(ctx.seed, "t2i-design", *aspects, *set_names),
        )
        util = {
            (a, s, m): raters.utilities(a, sets[s], gal[s][m])
            for a in aspects
            for s in set_names
            for m in C.MODELS
        }
        rng = generator(ctx.seed, "t2i-ratings", *aspects, *set_names)

        def rate(rows, util=util, rng=rng):
            left = np.array([util[(r.aspect, r.set, r.model_a)][r.prompt_id] for r in rows])
            right = np.array([util[(r.aspect, r.set, r.model_b)][r.prompt_id] for r in rows])
            return raters.choose(left, right, [r.rater for r in rows], rng)

        out += S.run_study(design, rate)
    return out


def elo_tables(ctx, cfg, ratings) -> dict:
    tables = {}
    keys = sorted({(r.aspect, r.set) for r in ratings})
    for aspect, set_name in keys:
        rows = [r for r in ratings if r.aspect == aspect and r.set == set_name]
        ci = E.bootstrap_elo(
            rows, C.MODELS, cfg.n_boot, cfg.level, generator(ctx.seed, "t2i-boot", aspect, set_name)
        )
        tables[f"{aspect}/{set_name}"] = {
            **ci.to_dict(),
            "win_rate": E.win_rate_matrix(rows, C.MODELS).tolist(),
            "disjoint": {
                f"{a}|{b}": ci.disjoint(a, b) for a in C.MODELS for b in C.MODELS if a < b
            },
        }
    return tables


def counting(sets, gal, raters) -> dict:
    ps = sets["gecko_num"]
    out = {}
    for m in C.MODELS:
        counted = []
        for p, im in zip(ps, gal["gecko_num"][m]):
            (_, shape, colour, _n) = next(f for f in p.facts if f[0] == "count")
            counted.append(raters.count_objects(im, shape, colour))
        out[m] = M.counting_accuracy([p.number for p in ps], [p.structure for p in ps], counted)
    return out


def sample_grid(ctx, prompts: list[P.Prompt], gal: dict[str, np.ndarray], n: int = 8) -> None:
    """The first n GenAI-like prompts, one row per model (the same initial noise per column)."""
    from alignlab.core.plotting import plt

    n = min(n, len(prompts))
    fig, axes = plt.subplots(
        len(C.MODELS), n, figsize=(1.3 * n, 1.4 * len(C.MODELS)), squeeze=False
    )
    for i, m in enumerate(C.MODELS):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(gal[m][j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
            if i == 0:
                ax.set_title("\n".join(textwrap.wrap(prompts[j].text, 18)), fontsize=6)
    ctx.save_figure(fig, "samples")


def run(ctx) -> dict:
    cfg: HumanEvalConfig = ctx.config
    models = C.get_models(ctx, cfg.models)
    sets = eval_sets(ctx, cfg)
    gal = galleries(ctx, cfg, models, sets)
    raters = SimulatedRaters(
        noise=cfg.rater_noise, band=cfg.rater_band, seed=ctx.seed, wc=C.world_config(cfg.models)
    )
    ratings = rated_studies(
        ctx, cfg, sets, gal, raters, [(SXS_ASPECTS, SXS_SETS), (("detailed",), ("docci",))]
    )
    S.write_ratings(Path(ctx.dir) / "ratings.jsonl", ratings)
    sample_grid(ctx, sets["genai"], gal["genai"])
    ctx.log(f"human_eval: {len(ratings)} ratings written to ratings.jsonl")
    return {
        "elo": elo_tables(ctx, cfg, ratings),
        "counting": counting(sets, gal, raters),
        "n_ratings": len(ratings),
        "rater_share_max": max(
            max(S.rater_shares([r for r in ratings if r.study == st]).values())
            for st in dict.fromkeys(r.study for r in ratings)
        ),
    }


def _elo(r, aspect, set_name):
    e = r["elo"][f"{aspect}/{set_name}"]["elo"]
    return {m: v["elo"] for m, v in e.items()}


def _flat_elo(r, aspect):
    return {f"{s}/{m}": v for s in SXS_SETS for m, v in _elo(r, aspect, s).items()}


def c4(r):
    parts, ok = [], True
    for s in SXS_SETS:
        e = _elo(r, "alignment", s)
        first = max(e, key=e.get)
        first_alone = all(e["full"] > v for m, v in e.items() if m != "full")
        dis = r["elo"][f"alignment/{s}"]["disjoint"]
        d = dis.get("full@2k|short", dis.get("short|full@2k"))
        ok &= first_alone and e["full@2k"] > e["short"] and d
        parts.append(
            f"{s}: first {first} ({e[first]:.0f}); full@2k {e['full@2k']:.0f} vs short "
            f"{e['short']:.0f}, CIs {'disjoint' if d else 'overlap'}"
        )
    return "; ".join(parts), ok


def c5(r):
    e = _elo(r, "detailed", "docci")
    order = sorted(e, key=e.get, reverse=True)
    gap = e["full"] - max(v for m, v in e.items() if m != "full")
    return f"first {order[0]} ({e[order[0]]:.0f}), full's lead {gap:+.0f} Elo", order[
        0
    ] == "full" and gap >= 50


def c6(r):
    parts, ok = [], True
    for s in SXS_SETS:
        e = _elo(r, "appeal", s)
        ok &= e["full@2k"] > e["raw"]
        parts.append(f"{s}: full@2k {e['full@2k']:.0f} vs raw {e['raw']:.0f}")
    return "; ".join(parts), ok


def c7(r):
    c = r["counting"]
    acc = {m: v["overall"] for m, v in c.items()}
    best = max(acc, key=acc.get)
    alone = all(acc["full"] > v for m, v in acc.items() if m != "full")
    bn = c["full"]["by_number"]
    # the report: "5 X" prompts 51.6 pp below "1 X" (the largest number where 5 is absent)
    lo, hi = min(bn, key=int), ("5" if "5" in bn else max(bn, key=int))
    gap = bn[lo] - bn[hi]
    text = (
        f"best {best} ({acc[best]:.1f} %), full {acc['full']:.1f} %; full at {lo}: "
        f"{bn[lo]:.1f} %, at {hi}: {bn[hi]:.1f} % ({gap:+.1f} pp)"
    )
    return text, alone and gap >= 20


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    keys = list(r["elo"])
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), sharey=True)
    for ax, k in zip(np.atleast_1d(axes), keys):
        e = r["elo"][k]["elo"]
        ms = list(e)
        y = np.arange(len(ms))
        el = np.array([e[m]["elo"] for m in ms])
        err = np.array(
            [[e[m]["elo"] - e[m]["lo"] for m in ms], [e[m]["hi"] - e[m]["elo"] for m in ms]]
        )
        ax.errorbar(el, y, xerr=err, fmt="o", capsize=3)
        ax.set_yticks(y, ms)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("Elo (99 % CI)")
    ctx.save_figure(fig, "elo")

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, k in zip(np.atleast_1d(axes), keys):
        w = np.array(r["elo"][k]["win_rate"], dtype=float)
        ax.imshow(w, vmin=0, vmax=1, cmap="RdBu")
        ms = list(r["elo"][k]["elo"])
        ax.set_xticks(range(len(ms)), ms, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ms)), ms, fontsize=7)
        ax.set_title(k, fontsize=9)
        for i in range(len(ms)):
            for j in range(len(ms)):
                if i != j and np.isfinite(w[i, j]):
                    ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ctx.save_figure(fig, "win_rates")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m, v in r["counting"].items():
        bn = v["by_number"]
        ax.plot([int(k) for k in bn], list(bn.values()), marker="o", label=m)
    ax.set(xlabel="number in the prompt", ylabel="counting accuracy (%)", title="GeckoNum-like")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "counting")


register(
    Experiment(
        # work in progress: `full`'s prompt following falls short of t2i.train's bar at the
        # quick budget (docs/t2i.md), so the claims that rest on the models' outputs are not
        # counted yet; `alignlab reproduce --only t2i` runs them
        wip=True,
        name="t2i.human_eval",
        paper="Imagen Team 2024, Imagen 3 (arXiv 2408.07009), Sec. 3.1",
        description="SxS Elo of six models on four aspects with simulated raters; counting",
        config=HumanEvalConfig,
        presets={
            "smoke": HumanEvalConfig(
                models=C.smoke_models(), n_prompts=4, n_docci=3, n_gecko=7, n_ratings=40, n_boot=20
            ),
            "quick": HumanEvalConfig(),
            "paper": HumanEvalConfig(
                models=C.paper_models(), n_prompts=1600, n_docci=1000, n_gecko=560
            ),
        },
        run=run,
        claims=[
            Claim(
                "alignment",
                "alignment Elo: `full` first on both sets, `full@2k` above `short` with disjoint "
                "99 % CIs (bar: Imagen 3 first, 1083 vs 1047 on GenAI-Bench, Sec. 3.1)",
                c4,
                figure=lambda r: _flat_elo(r, "alignment"),
            ),
            Claim(
                "detailed_alignment",
                "detailed alignment Elo: `full` first by >= 50 (the report: +114 over the "
                "second on DOCCI)",
                c5,
                figure=lambda r: _elo(r, "detailed", "docci"),
            ),
            Claim(
                "appeal",
                "visual appeal Elo: `full@2k` above `raw` on both sets (threshold-free)",
                c6,
                figure=lambda r: _flat_elo(r, "appeal"),
            ),
            Claim(
                "counting",
                "counting: `full` most accurate, and >= 20 pp more accurate at the smallest "
                "number than at the largest (the report: 58.6 vs 46.0 %, 51.6 pp)",
                c7,
                figure=lambda r: {m: v["overall"] for m, v in r["counting"].items()},
            ),
        ],
        plots=plot,
    )
)
