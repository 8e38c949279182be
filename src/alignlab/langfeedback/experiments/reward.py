"""langfeedback.reward: reward learning from comparative language vs from pairwise comparisons
(Yang et al. 2024, CoRL; official pref_learning/pref_based_learning.py).

The reward is linear on the frozen latent, r(τ) = wᵀΦ(τ). Each query, the simulated user
either compares a random training trajectory with the best one and says a training utterance
(language: -log σ(wᵀe_l) plus the other-feedback term over 20 utterances about other features),
or labels a random pair by its true reward (Bradley-Terry). Paper protocol: one SGD step per
query on the mean loss over all data so far, lr 0.01 (language) and 0.008 (comparisons), the
learning rates of the official plot. Tuned protocol: each method's lr picked from
{1e-3, 3e-3, 1e-2, 3e-2, 1e-1} on 10 validation reward seeds (disjoint from the 100 test seeds)
and the validation trajectories, by mean CE. Metrics on all 19,900 test pairs: the original's
CE (ln 2 at w = 0), Pearson r, and the normalised true reward of the learned argmax. Each
reward seed's figure is the mean over the encoder seeds; CIs are paired 95 % bootstraps over
the reward seeds.

Claims:
- R1: paper protocol, CE at 10 queries: language < comparisons (CI);
- R2: paper protocol, CE at 100 queries: language <= comparisons;
- R3 (ours): R1 with the tuned learning rates;
- U (the user study's analogue): the learned argmax's normalised true reward, the mean at
  5/10/15/20 queries (the study's rating points): language > comparisons (CI). The study's
  23.9 % higher subjective score came from people; this is a simulated user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register
from alignlab.core.seeding import generator, int_seed
from alignlab.core.stats import paired_bootstrap_ci
from alignlab.core.units import run_units
from alignlab.langfeedback import reward as R
from alignlab.langfeedback.experiments import common as C
from alignlab.langfeedback.experiments.improve import by_class

METHODS = ("language", "comparisons")
ABLATIONS = {"no_other": {"use_other": False}, "other_only": {"use_lang": False}}
STUDY_POINTS = (5, 10, 15, 20)


@dataclass
class RewardConfig:
    latent: C.LatentConfig = param(factory=C.LatentConfig, help="the latent spaces")
    n_seeds: int = param(100, ge=2, help="test reward seeds (simulated users)")
    n_val_seeds: int = param(10, ge=1, help="validation reward seeds of the tuned protocol")
    n_queries: int = param(100, ge=20, help="queries per run")
    ablations: bool = param(True, help="also run the language loss without each of its terms")


def _seed(run_seed: int, kind: str, s: int) -> int:
    return int_seed(run_seed, "langfeedback-reward", kind, s) % 2**31


def _unit(key: str, uctx) -> dict:
    cfg: RewardConfig = _DATA["cfg"]
    i = int(key.split("-")[-1])
    d, latents = _DATA["d"], _DATA["latents"]
    lat = latents[i]
    pools = dict(
        phi_train=lat.phi(d.obs["train"]),
        feats_train=d.feats["train"],
        phi_test=lat.phi(d.obs["test"]),
        feats_test=d.feats["test"],
        utt_train=by_class(lat.embeddings(d, "train"), d.cls["train"]),
    )
    seeds = [_seed(uctx.seed, "test", s) for s in range(cfg.n_seeds)]
    val = [_seed(uctx.seed, "val", s) for s in range(cfg.n_val_seeds)]
    out: dict = {"lr": {}}
    for m in METHODS:
        out["lr"][f"paper/{m}"] = R.paper_lr(cfg.latent.data.source)[m]
        best, scores = R.select_lr(
            m, pools["phi_train"], pools["feats_train"], lat.phi(d.obs["val"]), d.feats["val"],
            pools["utt_train"], val, cfg.n_queries, avoid_seeds=seeds,
        )  # fmt: skip
        out["lr"][f"tuned/{m}"] = best
        out[f"lr_scores/{m}"] = {str(k): v for k, v in scores.items()}
    runs = [(p, m, {}) for p in ("paper", "tuned") for m in METHODS]
    if cfg.ablations and i == 0:
        runs += [("paper", f"language/{a}", o) for a, o in ABLATIONS.items()]
    for protocol, name, options in runs:
        method = name.split("/")[0]
        lr = out["lr"][f"{protocol}/{method}"]
        curves = [
            R.run_seed(method, s, n_queries=cfg.n_queries, lr=lr, **pools, **options) for s in seeds
        ]
        out[f"{protocol}/{name}"] = {
            k: np.stack([c[k] for c in curves]).tolist() for k in ("ce", "pearson", "reward")
        }
        uctx.advance(1)
    uctx.advance(max(0, 6 - uctx.progress_done))
    return out


_DATA: dict = {}


def run(ctx) -> dict:
    cfg: RewardConfig = ctx.config
    d, latents = C.get_latents(ctx, cfg.latent)
    return learn_rewards(ctx, cfg, d, latents)


def learn_rewards(ctx, cfg: RewardConfig, d: C.Data, latents: list[C.Latent]) -> dict:
    """Every reward run on the latent spaces (`reward-i` units) and the claims' comparisons."""
    _DATA.update(d=d, latents=latents, cfg=cfg)  # the forked units read them
    keys = [f"reward-{i}" for i in range(len(latents))]  # not the latent units' keys
    per = run_units(ctx, keys, _unit, size=6, description="reward learning")
    names = [k for k in per[keys[0]] if "/" in k and not k.startswith(("lr_scores", "lr"))]
    out = {
        "n_seeds": cfg.n_seeds,
        "n_queries": cfg.n_queries,
        "lr": {k: per[k]["lr"] for k in keys},
    }
    curves = {}
    for name in names:
        have = [k for k in keys if name in per[k]]
        curves[name] = {
            metric: np.mean([np.asarray(per[k][name][metric]) for k in have], axis=0)
            for metric in ("ce", "pearson", "reward")
        }  # (seeds, queries + 1), averaged over the encoder seeds that ran it
    out["curves"] = {
        name: {m: v.mean(0).tolist() for m, v in c.items()} for name, c in curves.items()
    }
    rng = generator(ctx.seed, "langfeedback-reward-ci")

    def compare(protocol: str, metric: str, at, better: str = "lower") -> dict:
        a = curves[f"{protocol}/language"][metric][:, at]
        b = curves[f"{protocol}/comparisons"][metric][:, at]
        if a.ndim == 2:
            a, b = a.mean(1), b.mean(1)
        diff, lo, hi = (
            paired_bootstrap_ci(b, a, rng) if better == "lower" else paired_bootstrap_ci(a, b, rng)
        )
        return {
            "language": float(a.mean()),
            "comparisons": float(b.mean()),
            "adv": diff,
            "lo": lo,
            "hi": hi,
        }

    out["R1"] = compare("paper", "ce", 10)
    out["R2"] = compare("paper", "ce", cfg.n_queries)
    out["R3"] = compare("tuned", "ce", 10)
    out["U"] = compare("paper", "reward", list(STUDY_POINTS), better="higher")
    out["pearson_100"] = {m: float(curves[f"paper/{m}"]["pearson"][:, -1].mean()) for m in METHODS}
    out["ratings"] = simulated_ratings(curves, rng)
    return out


def simulated_ratings(curves: dict, rng: np.random.Generator) -> dict:
    """The user study's ratings, simulated: a user rates the trajectory the learned reward
    ranks first on the study's 0-5 scale in proportion to its normalised true reward (ours:
    5 x that reward; the study's raters are people), at `STUDY_POINTS` queries, paper
    protocol. Per method and point: the mean over reward seeds and a 95 % bootstrap CI."""
    out = {}
    for m in METHODS:
        r = 5.0 * curves[f"paper/{m}"]["reward"]  # (seeds, queries + 1)
        out[m] = {}
        for q in STUDY_POINTS:
            x = r[:, q]
            boots = rng.choice(x, size=(2000, len(x)), replace=True).mean(1)
            lo, hi = np.quantile(boots, [0.025, 0.975])
            out[m][str(q)] = {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi)}
    return out


def _line(c) -> str:
    return (
        f"language {c['language']:.3f} vs comparisons {c['comparisons']:.3f}; language's "
        f"advantage {c['adv']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"
    )


def r1(r):
    return "CE at 10 queries (paper lr): " + _line(r["R1"]), r["R1"]["lo"] > 0


def r2(r):
    c = r["R2"]
    return f"CE at {r['n_queries']} queries (paper lr): " + _line(c), c["language"] <= c[
        "comparisons"
    ]


def r3(r):
    return "CE at 10 queries (tuned lr): " + _line(r["R3"]), r["R3"]["lo"] > 0


def u(r):
    return "learned argmax's true reward, mean at 5/10/15/20 queries: " + _line(r["U"]), r["U"][
        "lo"
    ] > 0


def pair_figure(key: str, within: str | None = None):
    """A claim's figure: language's and comparisons' value in `r[key]` (`r[within][key]`)."""

    def figure(r):
        c = (r if within is None else r[within])[key]
        return {"language": c["language"], "comparisons": c["comparisons"]}

    return figure


def plot(r, ctx) -> None:
    from alignlab.core.plotting import plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for name, c in r["curves"].items():
        ls = "-" if name.startswith("paper") else "--"
        for ax, metric in zip(axes, ("ce", "pearson", "reward")):
            ax.plot(c[metric], ls=ls, lw=1.2, label=name)
    for ax, (_metric, label) in zip(
        axes,
        (
            ("ce", "test CE (ln 2 at w = 0)"),
            ("pearson", "Pearson r"),
            ("reward", "learned argmax's true reward"),
        ),
    ):
        ax.set(xlabel="queries", ylabel=label)
    axes[0].axhline(np.log(2), color="k", lw=0.6, ls=":")
    axes[0].legend(fontsize=6)
    ctx.save_figure(fig, "reward_learning")
    if "ratings" in r:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        x = np.arange(len(STUDY_POINTS))
        for j, m in enumerate(METHODS):
            pts = [r["ratings"][m][str(q)] for q in STUDY_POINTS]
            mean = np.array([p["mean"] for p in pts])
            err = np.array([[p["mean"] - p["lo"] for p in pts], [p["hi"] - p["mean"] for p in pts]])
            ax.bar(x + (j - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, label=m)
        ax.set_xticks(x, [str(q) for q in STUDY_POINTS])
        ax.set(
            xlabel="queries answered",
            ylabel="simulated rating (0-5)",
            ylim=(0, 5),
            title="simulated ratings of the learned reward's top trajectory",
        )
        ax.legend(fontsize=7, loc="lower right")
        ctx.save_figure(fig, "ratings")


register(
    Experiment(
        name="langfeedback.reward",
        paper="Yang et al. 2024 (CoRL): reward learning from comparative language",
        description="language vs pairwise comparisons, paper and tuned learning rates",
        config=RewardConfig,
        presets={
            "smoke": RewardConfig(latent=C.smoke_latent(), n_seeds=4, n_val_seeds=2, n_queries=20),
            "quick": RewardConfig(),
            "paper": RewardConfig(latent=C.paper_latent()),
        },
        run=run,
        claims=[
            Claim(
                "R1_language_early",
                "paper protocol, CE at 10 queries: language < comparisons (paired 95 % CI)",
                r1,
                figure=pair_figure("R1"),
            ),
            Claim(
                "R2_language_late",
                "paper protocol, CE at 100 queries: language <= comparisons",
                r2,
                figure=pair_figure("R2"),
            ),
            Claim(
                "R3_tuned",
                "(ours) R1 with each method's tuned learning rate",
                r3,
                figure=pair_figure("R3"),
            ),
            Claim(
                "U_study_analogue",
                "learned argmax's true reward at 5/10/15/20 queries: language > comparisons (CI)",
                u,
                figure=pair_figure("U"),
            ),
        ],  # fmt: skip
        plots=plot,
        preflight=C.preflight,
    )
)
