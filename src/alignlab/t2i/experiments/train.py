"""t2i.train: Imagen 3's data pipeline (Sec. 2) and the latent diffusion models trained on it.

The raw pool (a simulation with injected, labelled defects) goes through the five filter
stages in the report's order; the shared VAE and the three variants (`full`, `short`, `raw`)
are trained (units in parallel) and cached for the other t2i experiments.

Claims:
- (1) every detection filter has precision and recall >= 0.9 against the injected labels;
- (2) the VAE's reconstructions keep colour and count (the multiset of perceived colours,
  with multiplicity) in >= 90 % of held-out renders (prototype in the notes: 95 %);
- (3) `full` follows prompts: its colour accuracy is >= 3x chance and its count accuracy
  >= 2x chance, chance being the same images scored against shuffled prompts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator
from alignlab.t2i import data as D
from alignlab.t2i import prompts as P
from alignlab.t2i import world as W
from alignlab.t2i.experiments import common as C
from alignlab.t2i.model import count_unk
from alignlab.t2i.train import decode_latents, encode_images
from alignlab.t2i.upsample import (
    UpsamplerConfig,
    UpsamplerTrainConfig,
    bilinear,
    train_upsampler,
    upsample,
)

DETECTION_STAGES = ("unsafe", "low_quality", "ai_generated", "dedup", "captions")


@dataclass
class TrainConfig:
    models: C.ModelsConfig = param(factory=C.ModelsConfig, help="the data and the six models")
    n_recon: int = param(500, ge=1, help="held-out renders for the VAE's reconstruction check")
    n_probe: int = param(200, ge=2, help="prompts of each probe set (genai, drawbench)")
    upsampler: UpsamplerTrainConfig = param(
        factory=lambda: UpsamplerTrainConfig(steps=0),
        help="the 2x upsampler's training (steps 0: off, as in the quick preset)",
    )
    n_upsample: int = param(64, ge=1, help="held-out scenes for the upsampler's check")


def colour_count_kept(a: W.Perceived, b: W.Perceived) -> bool:
    """Same multiset of object colours (each object counted): colour and count survive."""
    return Counter(o.colour for o in a.objects) == Counter(o.colour for o in b.objects)


def follow_scores(prompts: list[P.Prompt], seen: list[W.Perceived]) -> dict:
    """Colour accuracy: a requested colour is drawn; count accuracy: the number of objects of
    the requested colour (and shape, where named) is the requested number. One entry per fact
    that names a colour (colour) or a number (count)."""
    colour, count = [], []
    for p, s in zip(prompts, seen):
        for f in p.facts:
            if f[0] in ("object", "count") and f[2] is not None:
                colour.append(any(o.colour == f[2] for o in s.objects))
            if f[0] == "count":
                count.append(bool(W.check_facts([f], s)[0]))
    return {
        "colour": float(np.mean(colour)),
        "count": float(np.mean(count)),
        "n": [len(colour), len(count)],
    }


def scaled(scene: W.Scene, factor: int) -> W.Scene:
    """The same scene at `factor` times the resolution (positions and sizes scale with it)."""
    centres = tuple(tuple((x * factor, y * factor) for x, y in cs) for cs in scene.centres)
    return W.Scene(scene.background, scene.groups, centres, res=scene.res * factor)


def upsampler_check(ctx, cfg: TrainConfig, pool: D.Pool, wc: W.WorldConfig) -> dict:
    """Train the 2x upsampler on clean pool scenes rendered at 2x, then compare its outputs
    on held-out scenes with bilinear upsampling: the share whose scene graph parses exactly."""
    hi = W.WorldConfig(res=2 * wc.res, max_objects=wc.max_objects)
    clean = ~np.any(
        np.stack([pool.labels[k] for k in ("unsafe", "low_quality", "ai_generated")]), 0
    )
    scenes = [pool.scenes[i] for i in np.flatnonzero(clean)]
    stage = ctx.stage("upsampler", cfg.upsampler.steps)
    ucfg = UpsamplerConfig(low_res=wc.res, factor=2)
    trained = train_upsampler(
        W.render_batch([scaled(s, 2) for s in scenes], hi),
        ucfg,
        cfg.upsampler,
        generator(ctx.seed, "t2i-upsampler"),
        ctx=stage,
    )
    rng = generator(ctx.seed, "t2i-upsample-eval")
    test = [P.heldout_scene(rng, wc) for _ in range(cfg.n_upsample)]
    low = W.render_batch(test, wc)
    out = {}
    for name, images in (
        ("diffusion", upsample(trained.model, low, ctx.seed)),
        ("bilinear", bilinear(low, 2)),
    ):
        seen = W.perceive_batch(images, hi)
        out[name] = float(
            np.mean(
                [
                    p.to_scene() is not None and W.same_graph(scaled(s, 2), p.to_scene())
                    for s, p in zip(test, seen)
                ]
            )
        )
    return {"exact": out, "final_loss": trained.metrics["final_loss"]}


def unknown_words(pool: D.Pool, mc) -> dict:
    """<unk> tokens in each variant's caption candidates (out-of-vocabulary words: the PII and
    blocklisted words left in `raw`'s captions)."""
    tok = C.tokenizer(mc)
    out = {}
    for v in D.VARIANTS:
        rows = D.run_pipeline(pool, v).indices
        texts = [pool.original[i] for i in rows]
        if v != "short":
            texts += [c for i in rows for c in pool.synthetic[i]]
        out[v] = {"captions": len(texts), "unk_tokens": count_unk(tok, texts)}
    return out


def run(ctx) -> dict:
    cfg: TrainConfig = ctx.config
    mc = cfg.models
    wc = C.world_config(mc)
    pool = C.pool(mc, ctx.seed)
    full = D.run_pipeline(pool, "full")
    log = [r.to_dict() for r in full.log]
    ctx.log("filters: " + "; ".join(f"{r['stage']} -{r['removed']}" for r in log))

    models = C.get_models(ctx, mc)
    vae = models["full"][0].vae

    # (2) the VAE on held-out renders (a stream disjoint from the pool)
    rng = generator(ctx.seed, "t2i-recon")
    scenes = [P.heldout_scene(rng, wc) for _ in range(cfg.n_recon)]
    images = W.render_batch(scenes, wc)
    recon = decode_latents(vae, encode_images(vae, images))
    seen_in, seen_out = W.perceive_batch(images, wc), W.perceive_batch(recon, wc)
    kept = [colour_count_kept(a, b) for a, b in zip(seen_in, seen_out)]
    exact = [
        W.same_graph(s, p.to_scene()) if p.to_scene() else False for s, p in zip(scenes, seen_out)
    ]
    mse = float(np.mean((images.astype(float) - recon.astype(float)) ** 2))

    # (3) prompt following of `full` against shuffled prompts
    probes = []
    for name in ("genai", "drawbench"):
        ps = P.prompt_set(name, generator(ctx.seed, "t2i-prompts", name), cfg.n_probe, wc)
        probes.append((name, ps, C.gallery(ctx, mc, models, "full", ps, name)))
    prompts = [p for _, ps, _ in probes for p in ps]
    seen = W.perceive_batch(np.concatenate([g for _, _, g in probes]), wc)
    follow = follow_scores(prompts, seen)
    perm = generator(ctx.seed, "t2i-chance").permutation(len(prompts))
    chance = follow_scores([prompts[i] for i in perm], seen)

    extra = {}
    if cfg.upsampler.steps > 0:
        extra["upsampler"] = upsampler_check(ctx, cfg, pool, wc)
    return {
        **extra,
        "unknown_words": unknown_words(pool, mc),
        "filters": log,
        "rows": {v: len(D.run_pipeline(pool, v)) for v in D.VARIANTS},
        "vae": {
            "colour_count_kept": float(np.mean(kept)),
            "exact": float(np.mean(exact)),
            "pixel_mse": mse,
        },
        "follow": {"full": follow, "chance": chance},
        "training": {
            name: {"final_loss": info.get("final_loss"), "step": info["step"]}
            for name, (_, _, info) in models.items()
        },
    }


def _pr(x) -> str:
    return "n/a" if x is None else f"{float(x):.2f}"


def c1(r):
    """A stage that flagged nothing has no precision (None): it fails."""
    rows = {x["stage"]: x for x in r["filters"] if x["stage"] in DETECTION_STAGES}
    parts = [f"{s} {_pr(x['precision'])}/{_pr(x['recall'])}" for s, x in rows.items()]
    ok = all(
        x[k] is not None and float(x[k]) >= 0.9
        for x in rows.values()
        for k in ("precision", "recall")
    )
    return "precision/recall " + ", ".join(parts), ok


def c2(r):
    v = r["vae"]["colour_count_kept"]
    return f"colour and count kept in {v:.1%} (exact scene graph {r['vae']['exact']:.1%})", v >= 0.9


def c3(r):
    f = {k: float(v) for k, v in r["follow"]["full"].items() if k != "n"}
    c = {k: float(v) for k, v in r["follow"]["chance"].items() if k != "n"}
    rc, rn = f["colour"] / max(c["colour"], 1e-9), f["count"] / max(c["count"], 1e-9)
    text = (
        f"colour {f['colour']:.2f} vs chance {c['colour']:.2f} ({rc:.1f}x); "
        f"count {f['count']:.2f} vs {c['count']:.2f} ({rn:.1f}x)"
    )
    return text, bool(np.isfinite(rc) and np.isfinite(rn) and rc >= 3 and rn >= 2)


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    rows = [x for x in r["filters"] if x["stage"] in DETECTION_STAGES]
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [x_["precision"] or 0 for x_ in rows], 0.4, label="precision")
    ax.bar(x + 0.2, [x_["recall"] or 0 for x_ in rows], 0.4, label="recall")
    ax.set_xticks(x, [x_["stage"] for x_ in rows], rotation=20)
    ax.axhline(0.9, color="k", lw=0.8, ls="--")
    ax.set(ylim=(0, 1.05), title="data filters vs the injected labels (Sec. 2)")
    ax.legend(loc="lower right")
    ctx.save_figure(fig, "filters")


SMOKE = TrainConfig(
    models=C.smoke_models(),
    n_recon=8,
    n_probe=4,
    upsampler=UpsamplerTrainConfig(steps=4, batch=4, log_every=2, checkpoint_every=2),
    n_upsample=4,
)

register(
    Experiment(
        name="t2i.train",
        paper="Imagen Team 2024, Imagen 3 (arXiv 2408.07009), Sec. 2",
        description="data filters, the shared VAE and the three latent diffusion variants",
        config=TrainConfig,
        presets={
            "smoke": SMOKE,
            "quick": TrainConfig(),
            "paper": TrainConfig(
                models=C.paper_models(),
                n_recon=2000,
                n_probe=1000,
                upsampler=UpsamplerTrainConfig(steps=20_000, batch=64, checkpoint_every=2000),
                n_upsample=500,
            ),
        },
        run=run,
        claims=[
            Claim(
                "filters",
                "every detection filter has precision and recall >= 0.9 against the injected "
                "labels (bar: the design target of the notes' simulated pipeline)",
                c1,
                figure=lambda r: {
                    f"{x['stage']}_{k}": x[k]
                    for x in r["filters"]
                    if x["stage"] in DETECTION_STAGES
                    for k in ("precision", "recall")
                    if x[k] is not None
                },
            ),
            Claim(
                "vae",
                "VAE reconstructions keep colour and count in >= 90 % of held-out renders "
                "(bar: the notes' prototype measured 95 %)",
                c2,
                figure=lambda r: r["vae"]["colour_count_kept"],
            ),
            Claim(
                "follows_prompts",
                "`full` follows prompts: colour accuracy >= 3x and count accuracy >= 2x chance "
                "(chance: the same images against shuffled prompts; bars from the notes)",
                c3,
                figure=lambda r: {
                    "colour": r["follow"]["full"]["colour"],
                    "count": r["follow"]["full"]["count"],
                },
            ),
        ],
        plots=plot,
    )
)
