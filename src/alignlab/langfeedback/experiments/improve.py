"""langfeedback.improve: iterative trajectory improvement by retrieval in the latent space
(Yang et al. 2024, CoRL; official model_analysis/improve_trajectory.py).

A simulated user with hidden weights w ~ N(0, I) over the min-max-normalised features starts
from the worst test trajectory; each iteration it names the feature (softmax over
w_k (f_opt,k - f_cur,k)) and direction to change, in a random test utterance, and the next
trajectory is the pool's nearest (cosine) to Φ_cur + e_l. 10 iterations x 100 trials per
encoder seed (each seed's stage-2 latent), the controls paired trial by trial: a random
utterance and a random trajectory. The reward is the normalised true reward of the current
trajectory (0 = the pool's worst, 1 = its best).

Claims:
- I1 (`accept="better"`, the original's rule): reward at iteration 10 >= 0.8, and above the
  random-trajectory control (paired 95 % bootstrap CI of the difference above 0);
- I2 (ours, `accept="always"`: every retrieval is taken, so language alone must point the
  way): above both controls (paired CIs above 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator
from alignlab.core.stats import paired_bootstrap_ci
from alignlab.langfeedback import improve as I
from alignlab.langfeedback.experiments import common as C

ARMS = ("language", "random_utterance", "random_trajectory")


@dataclass
class ImproveConfig:
    latent: C.LatentConfig = param(factory=C.LatentConfig, help="the latent spaces")
    n_trials: int = param(100, ge=2, help="trials per encoder seed (each its own user)")
    n_iter: int = param(10, ge=1, help="feedback iterations per trial")
    mode: str = param("softmax", choices=("softmax", "argmax"), help="how the user names a feature")


def by_class(emb: np.ndarray, cls: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """{(feature k, direction ±1): its utterances' embeddings} from class indices 2k + (dir < 0)."""
    return {(c // 2, 1 if c % 2 == 0 else -1): emb[cls == c] for c in np.unique(cls)}


def run(ctx) -> dict:
    cfg: ImproveConfig = ctx.config
    d, latents = C.get_latents(ctx, cfg.latent)
    curves = {a: {arm: [] for arm in ARMS} for a in I.ACCEPT}
    with ctx.bar(len(latents) * len(I.ACCEPT) * len(ARMS), "improvement") as bar:
        for i, lat in enumerate(latents):
            phi = lat.phi(d.obs["test"])
            utt = by_class(lat.embeddings(d, "test"), d.cls["test"])
            for accept in I.ACCEPT:
                for arm in ARMS:
                    rng = generator(ctx.seed, "langfeedback-improve", i, accept)  # paired arms
                    c = I.run_trials(
                        phi, d.feats["test"], utt, rng=rng, n_trials=cfg.n_trials,
                        n_iter=cfg.n_iter, accept=accept,
                        control=None if arm == "language" else arm, mode=cfg.mode,
                    )  # fmt: skip
                    curves[accept][arm].append(c)
                    bar.advance(1)
    out = {"n_trials": cfg.n_trials * len(latents), "n_iter": cfg.n_iter}
    for accept in I.ACCEPT:
        arms = {arm: np.concatenate(v) for arm, v in curves[accept].items()}
        final = {arm: a[:, -1] for arm, a in arms.items()}
        rng = generator(ctx.seed, "langfeedback-improve-ci", accept)
        out[accept] = {
            "curves": {arm: a.mean(0).tolist() for arm, a in arms.items()},
            "final": {arm: float(v.mean()) for arm, v in final.items()},
            "vs": {
                ctrl: dict(zip(("diff", "lo", "hi"), paired_bootstrap_ci(final["language"], final[ctrl], rng)))
                for ctrl in ARMS[1:]
            },
        }  # fmt: skip
    return out


def c1(r):
    b = r["better"]
    v = b["vs"]["random_trajectory"]
    text = (
        f"reward at iteration {r['n_iter']}: {b['final']['language']:.3f} vs random trajectory "
        f"{b['final']['random_trajectory']:.3f} (Δ {v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]); "
        f"random utterance {b['final']['random_utterance']:.3f}"
    )
    return text, bool(b["final"]["language"] >= 0.8 and v["lo"] > 0)


def c2(r):
    a = r["always"]
    parts = [
        f"{ctrl.replace('_', ' ')} {a['final'][ctrl]:.3f} (Δ [{a['vs'][ctrl]['lo']:+.3f}, "
        f"{a['vs'][ctrl]['hi']:+.3f}])"
        for ctrl in ARMS[1:]
    ]
    text = f"accept always: language {a['final']['language']:.3f} vs " + ", ".join(parts)
    return text, bool(all(a["vs"][ctrl]["lo"] > 0 for ctrl in ARMS[1:]))


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), sharey=True)
    for ax, accept in zip(axes, I.ACCEPT):
        for arm in ARMS:
            ax.plot(r[accept]["curves"][arm], marker="o", ms=3, label=arm.replace("_", " "))
        ax.set(xlabel="iteration", title=f"accept = {accept}", ylim=(0, 1.02))
    axes[0].set_ylabel("normalised true reward")
    axes[0].legend(fontsize=8, loc="lower right")
    ctx.save_figure(fig, "improvement")


register(
    Experiment(
        name="langfeedback.improve",
        paper="Yang et al. 2024 (CoRL): iterative trajectory improvement from language",
        description="retrieval in the latent space from simulated comparative feedback",
        config=ImproveConfig,
        presets={
            "smoke": ImproveConfig(latent=C.smoke_latent(), n_trials=4, n_iter=3),
            "quick": ImproveConfig(),
            "paper": ImproveConfig(latent=C.paper_latent()),
        },
        run=run,
        claims=[
            Claim(
                "improves",
                "accept=better: reward at iteration 10 >= 0.8 and above the random-trajectory "
                "control (paired 95 % CI)",
                c1,
                figure=lambda r: r["better"]["final"]["language"],
            ),
            Claim(
                "language_points_the_way",
                "accept=always (ours): above both controls (paired 95 % CIs)",
                c2,
                figure=lambda r: r["always"]["final"]["language"],
            ),
        ],
        plots=plot,
        preflight=C.preflight,
    )
)
