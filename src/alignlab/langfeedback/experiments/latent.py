"""langfeedback.latent: a shared trajectory-language latent space (Yang et al. 2024, CoRL).

Each encoder seed's Φ is trained in two stages (language frozen, then co-finetuned through the
residual adapter); the accuracy is the share of (ordered test pair, test utterance of the pair's
class) with (Φ_b - Φ_a)·e > 0, over all 200 x 199 ordered test pairs and every test utterance
(chance 0.5). The stress split's utterances use verb phrases never seen in training.

Claims (the paper gives no number for this; the bars are the design's):
- L1: held-out sign accuracy after stage 2 >= 0.90, the mean over encoder seeds;
- L2: stage 2 - stage 1 >= 0.05 (the point of the two-stage design).
Reported without a claim: the stress split (unseen wording).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.stats import mean_ci95
from alignlab.langfeedback.experiments import common as C
from alignlab.langfeedback.latent import pair_accuracy


@dataclass
class LatentExpConfig:
    latent: C.LatentConfig = param(factory=C.LatentConfig, help="the latent spaces")


def measure(d: C.Data, lat: C.Latent) -> dict:
    out = {}
    for stage in (1, 2):
        phi = lat.phi(d.obs["test"], stage)
        for split in ("test", "stress"):
            r = pair_accuracy(phi, d.feats["test"], lat.embeddings(d, split, stage), d.cls[split])
            out[f"stage{stage}_{split}"] = {
                "accuracy": r["accuracy"],
                "cos": r["cos"],
                "per_feature": {d.features[k]: v for k, v in r["per_feature"].items()},
            }
    phi = lat.phi(d.obs["test"], 2)
    e = lat.embeddings(d, "test", 2)
    out["norm_phi"] = float(np.linalg.norm(phi, axis=1).mean())
    out["norm_e"] = float(np.linalg.norm(e, axis=1).mean())
    sv = np.linalg.svd(phi - phi.mean(0), compute_uv=False) ** 2
    out["phi_pc5_variance"] = float(sv[:5].sum() / sv.sum())
    # the effective dimension: the cumulative share of Φ's variance in its first 12 components
    out["phi_variance_profile"] = (np.cumsum(sv[:12]) / sv.sum()).tolist()
    return out


def run(ctx) -> dict:
    cfg: LatentExpConfig = ctx.config
    d, latents = C.get_latents(ctx, cfg.latent)
    return summarise(d, latents)


def summarise(d: C.Data, latents: list[C.Latent]) -> dict:
    """Each latent space's accuracies (`measure`) and their means with 95 % CIs."""
    per = [measure(d, lat) for lat in latents]
    summary = {}
    for key in ("stage1_test", "stage2_test", "stage1_stress", "stage2_stress"):
        mean, half = mean_ci95([p[key]["accuracy"] for p in per])
        summary[key] = {"mean": mean, "ci95": half}
    gain = [p["stage2_test"]["accuracy"] - p["stage1_test"]["accuracy"] for p in per]
    summary["gain"] = dict(zip(("mean", "ci95"), mean_ci95(gain)))
    return {
        "encoders": per,
        "summary": summary,
        "utterances": {k: len(v) for k, v in d.sentences.items()},
        "training": [
            {"stage1_best_val_cos": lat.info["stage1"]["best_val_cos"],
             "stage2_best_val_cos": lat.info["stage2"]["best_val_cos"]}
            for lat in latents
        ],
    }  # fmt: skip


def c1(r):
    s = r["summary"]["stage2_test"]
    return f"stage-2 test accuracy {s['mean']:.3f} ± {s['ci95']:.3f} (chance 0.5)", s["mean"] >= 0.9


def c2(r):
    s = r["summary"]
    text = (
        f"stage 1 {s['stage1_test']['mean']:.3f} -> stage 2 {s['stage2_test']['mean']:.3f} "
        f"(+{s['gain']['mean']:.3f}); stress split {s['stage1_stress']['mean']:.3f} -> "
        f"{s['stage2_stress']['mean']:.3f}"
    )
    return text, s["gain"]["mean"] >= 0.05


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    names = list(r["encoders"][0]["stage2_test"]["per_feature"])
    x = np.arange(len(names))
    for j, key in enumerate(("stage1_test", "stage2_test", "stage1_stress", "stage2_stress")):
        vals = [np.mean([p[key]["per_feature"][f] for p in r["encoders"]]) for f in names]
        ax.bar(x + (j - 1.5) * 0.2, vals, 0.2, label=key.replace("_", ", "))
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(x, names, rotation=15 if len(names) <= 5 else 35, fontsize=8)
    ax.set(ylabel="sign accuracy", ylim=(0.4, 1.0), title="ΔΦ·e > 0 by feature, stage and split")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ctx.save_figure(fig, "accuracy")


register(
    Experiment(
        name="langfeedback.latent",
        paper="Yang et al. 2024, Trajectory Improvement and Reward Learning from Comparative "
        "Language Feedback (CoRL); official learn_features.py",
        description="the two-stage trajectory-language latent space and its sign accuracy",
        config=LatentExpConfig,
        presets={
            "smoke": LatentExpConfig(latent=C.smoke_latent()),
            "quick": LatentExpConfig(),
            "paper": LatentExpConfig(latent=C.paper_latent()),
        },
        run=run,
        claims=[
            Claim(
                "held_out_accuracy",
                "held-out sign accuracy after stage 2 >= 0.90 (chance 0.5; the design's bar)",
                c1,
                figure=lambda r: r["summary"]["stage2_test"]["mean"],
            ),
            Claim(
                "stage2_helps",
                "stage 2 - stage 1 >= 0.05 (the two-stage design)",
                c2,
                figure=lambda r: r["summary"]["gain"]["mean"],
            ),
        ],
        plots=plot,
        preflight=C.preflight,
    )
)
