"""t2i.auto_eval: Imagen 3's automatic metrics and their validation against raters (Sec. 3.2,
App. C.1), with FD and CMMD (Table 1's measures) in the CLIP-like evaluator's feature space.

The evaluators are SIMULATIONS trained only on held-out renders (`alignlab.t2i.evaluators`):
a CLIP-like dual encoder (CLIPScore form), a VQA model P(yes | image, question), VQAScore-like
(the whole prompt as one question) and Gecko-like (the mean over the prompt's atomic
questions). The raters' verdicts come from the same simulated alignment studies as
`t2i.human_eval` (same seed, same ratings).

Per model pair and prompt set (15 pairs x 2 sets = the report's 30 pairs): the metric's
verdict from a two-sided Wilcoxon signed-rank test on per-prompt differences, the raters'
from a two-sided binomial test on wins vs losses (ties dropped), p < 0.05, else a tie.

Claims:
- (8) VQAScore-like agrees with the raters >= 15 pp more often than CLIP-like (the report:
  80 vs 43.3 %; Gecko 73.3 %);
- (9) where the VQAScore- and Gecko-like verdicts concur, agreement with the raters is at
  least either metric's alone (the report: 94.4 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator
from alignlab.t2i import evaluators as EV
from alignlab.t2i import prompts as P
from alignlab.t2i import world as W
from alignlab.t2i.eval import features as F
from alignlab.t2i.eval import validation as V
from alignlab.t2i.eval.artifacts import save_scores
from alignlab.t2i.eval.sxs import write_ratings
from alignlab.t2i.experiments import common as C
from alignlab.t2i.experiments import human_eval as H
from alignlab.t2i.raters import SimulatedRaters

METRICS = ("clip", "vqascore", "gecko")


@dataclass
class AutoEvalConfig(H.HumanEvalConfig):
    clip: EV.ClipConfig = param(
        factory=lambda: EV.CLIP_PRESETS["quick"], help="CLIP-like evaluator"
    )
    vqa: EV.VQAConfig = param(factory=lambda: EV.VQA_PRESETS["quick"], help="VQA evaluator")
    n_reference: int = param(2000, ge=4, help="held-out renders: FD / CMMD's reference set")


def scores_of(clip, vqa, images, prompts) -> dict[str, np.ndarray]:
    return {
        "clip": clip.clip_score(images, prompts),
        "vqascore": vqa.vqascore(images, prompts),
        "gecko": vqa.gecko(images, prompts),
    }


def run(ctx) -> dict:
    cfg: AutoEvalConfig = ctx.config
    wc = C.world_config(cfg.models)
    models = C.get_models(  # the evaluators train beside any model still to train
        ctx,
        cfg.models,
        {"clip": lambda: EV.cached_clip(cfg.clip, wc), "vqa": lambda: EV.cached_vqa(cfg.vqa, wc)},
    )
    clip = EV.cached_clip(cfg.clip, wc, log=ctx.log)
    vqa = EV.cached_vqa(cfg.vqa, wc, log=ctx.log)
    sets = {s: ps for s, ps in H.eval_sets(ctx, cfg).items() if s in H.SXS_SETS}
    gal = H.galleries(ctx, cfg, models, sets)
    raters = SimulatedRaters(noise=cfg.rater_noise, band=cfg.rater_band, seed=ctx.seed, wc=wc)
    ratings = H.rated_studies(ctx, cfg, sets, gal, raters, [(H.SXS_ASPECTS, H.SXS_SETS)])
    ratings = [r for r in ratings if r.aspect == "alignment"]
    write_ratings(Path(ctx.dir) / "ratings.jsonl", ratings)

    pairs = list(combinations(C.MODELS, 2))
    verdicts = {"raters": {}, **{m: {} for m in METRICS}}
    per_prompt = {}
    for s, ps in sets.items():
        sc = {m: scores_of(clip, vqa, gal[s][m], ps) for m in C.MODELS}
        per_prompt[s] = sc
        rv = V.rater_verdicts([r for r in ratings if r.set == s], pairs)
        verdicts["raters"].update({(s, a, b): v for (a, b), v in rv.items()})
        for metric in METRICS:
            mv = V.metric_verdicts({m: sc[m][metric] for m in C.MODELS}, pairs)
            verdicts[metric].update({(s, a, b): v for (a, b), v in mv.items()})
        save_scores(
            Path(ctx.dir) / f"scores_{s}.json",
            {f"{m}/{metric}": sc[m][metric] for m in C.MODELS for metric in METRICS},
            [p.text for p in ps],
        )
    agree = {m: V.agreement(verdicts[m], verdicts["raters"]) for m in METRICS}
    concur = V.agreement_where_concur(verdicts["vqascore"], verdicts["gecko"], verdicts["raters"])

    ref_rng = generator(ctx.seed, "t2i-reference")
    ref = W.render_batch([P.heldout_scene(ref_rng, wc) for _ in range(cfg.n_reference)], wc)
    ref_f = clip.features(ref)
    quality = {}
    for m in C.MODELS:
        f = clip.features(np.concatenate([gal[s][m] for s in sets]))
        quality[m] = {"fd": F.frechet_distance(f, ref_f), "cmmd": F.cmmd(f, ref_f)}
    mean_scores = {
        m: {
            metric: float(np.mean([per_prompt[s][m][metric].mean() for s in sets]))
            for metric in METRICS
        }
        for m in C.MODELS
    }
    return {
        "agreement": agree,
        "concur": concur,
        "verdicts": {k: {"|".join(p): v for p, v in d.items()} for k, d in verdicts.items()},
        "quality": quality,
        "mean_scores": mean_scores,
        "evaluators": {  # held-out quality; timings stay out of results.json
            name: {k: v for k, v in ev.metrics.items() if not k.endswith("_cpu_s")}
            for name, ev in (("clip", clip), ("vqa", vqa))
        },
    }


def c8(r):
    a = r["agreement"]
    gap = a["vqascore"] - a["clip"]
    text = f"VQAScore {a['vqascore']:.1f} %, CLIP {a['clip']:.1f} %, Gecko {a['gecko']:.1f} % ({gap:+.1f} pp)"
    return text, gap >= 15


def c9(r):
    a, c = r["agreement"], r["concur"]
    both = float(c["agreement"])
    text = (
        f"where they concur ({c['concur_share']:.0f} % of pairs): {both:.1f} % vs VQAScore "
        f"{a['vqascore']:.1f} %, Gecko {a['gecko']:.1f} %"
    )
    # where the two always concur, the subset is everything and the claim says nothing
    ok = np.isfinite(both) and c["concur_share"] < 100 and both >= max(a["vqascore"], a["gecko"])
    return text, bool(ok)


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    a = r["agreement"]
    fig, ax = plt.subplots(figsize=(5, 3))
    names = [*METRICS, "vqa+gecko concur"]
    ours = [a["clip"], a["vqascore"], a["gecko"], float(r["concur"]["agreement"])]
    paper = [43.3, 80.0, 73.3, 94.4]
    x = np.arange(len(names))
    ax.bar(x - 0.2, ours, 0.4, label="ours (simulated)")
    ax.bar(x + 0.2, paper, 0.4, label="Imagen 3 App. C.1")
    ax.set_xticks(x, names, fontsize=8)
    ax.set(ylabel="agreement with raters (%)", ylim=(0, 100))
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "agreement")


register(
    Experiment(
        # work in progress: `full`'s prompt following falls short of t2i.train's bar at the
        # quick budget (docs/t2i.md), so the claims that rest on the models' outputs are not
        # counted yet; `alignlab reproduce --only t2i` runs them
        wip=True,
        name="t2i.auto_eval",
        paper="Imagen Team 2024, Imagen 3 (arXiv 2408.07009), Sec. 3.2 and App. C.1",
        description="CLIP-, VQAScore- and Gecko-like metrics validated against raters; FD, CMMD",
        config=AutoEvalConfig,
        presets={
            "smoke": AutoEvalConfig(
                models=C.smoke_models(),
                n_prompts=6,
                n_ratings=40,
                n_boot=20,
                clip=EV.CLIP_PRESETS["smoke"],
                vqa=EV.VQA_PRESETS["smoke"],
                n_reference=16,
            ),
            "quick": AutoEvalConfig(),
            "paper": AutoEvalConfig(models=C.paper_models(), n_prompts=1600, n_reference=30000),
        },
        run=run,
        claims=[
            Claim(
                "vqascore_beats_clip",
                "VQAScore-like agrees with the raters >= 15 pp more often than CLIP-like over "
                "the 30 model pairs (the report: 80 vs 43.3 %)",
                c8,
                figure=lambda r: r["agreement"],
            ),
            Claim(
                "concurring_metrics",
                "where the VQAScore- and Gecko-like verdicts concur, agreement with the raters "
                "is >= either alone (the report: 94.4 %)",
                c9,
                figure=lambda r: float(r["concur"]["agreement"]),
            ),
        ],
        plots=plot,
    )
)
