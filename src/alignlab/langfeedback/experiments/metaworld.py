"""langfeedback.metaworld: the latent space and reward learning on Meta-World's button press
(Yang et al. 2024, CoRL; their second simulated domain, `sawyer_button_press_v2` in a fork).

The trajectories are Meta-World `button-press-v3` rollouts of its own scripted policy,
perturbed per trajectory in speed, approach height, lateral via point and noise
(`langfeedback.metaworld`; a simulation, not the paper's SAC pools). The features are the
paper's three Meta-World features (`pref_learning/utils.py`, `mw_feature_aspects`): the hand's
height, its velocity and its distance to the button, each a mean over time; the utterances are
the six classes of those features (`utterances.METAWORLD_FEATURES`). The latent space, its
accuracy and the reward learning are the same code as `langfeedback.latent` and
`langfeedback.reward`; the paper protocol uses the official Meta-World curves' learning rates
(language 0.006, comparisons 0.0006; `reward.PAPER_LR_METAWORLD`).

Meta-World 3.1.1 pins MuJoCo 3.3.0, so it runs in its own interpreter: `make setup` builds
`.venv-mw` and `make reproduce` / `make test` point `ALIGNLAB_METAWORLD_PYTHON` at it
(the `metaworld` extra). Without one, `reproduce` leaves this experiment out and says why.

Claims (the subset the paper's Meta-World results support): L1 held-out sign accuracy >= 0.90; R1 paper
protocol, CE at 10 queries language < comparisons (CI); R2 paper protocol, CE at 100 queries
language <= comparisons. The official Meta-World result files give 0.616 vs 0.623 at 10
queries and 0.390 vs 0.411 at 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import ConfigError, param
from alignlab.core.experiment import Experiment, register
from alignlab.langfeedback.experiments import common as C
from alignlab.langfeedback.experiments import latent as LX
from alignlab.langfeedback.experiments import reward as RW


def mw_latent() -> C.LatentConfig:
    """The quick preset's latent spaces on Meta-World: 1,200 trajectories (1,000 / 100 / 100),
    the quick stages, two encoder seeds (one round on two cores)."""
    dc = C.DataConfig(source="metaworld", n_train=1000, n_val=100, n_test=100)
    return C.LatentConfig(data=dc, n_encoders=2)


@dataclass
class MetaWorldExpConfig(RW.RewardConfig):
    """`langfeedback.reward`'s config on a Meta-World pool."""

    latent: C.LatentConfig = param(factory=mw_latent, help="the latent spaces (Meta-World)")
    ablations: bool = param(False, help="also run the language loss without each of its terms")

    def validate(self) -> None:
        if self.latent.data.source != "metaworld":
            raise ConfigError(
                "latent.data.source",
                "must be 'metaworld' in langfeedback.metaworld (use langfeedback.reward for "
                "the reach-lift world)",
            )


def run(ctx) -> dict:
    cfg: MetaWorldExpConfig = ctx.config
    d, latents = C.get_latents(ctx, cfg.latent)
    f = np.concatenate([d.feats[s] for s in ("train", "val", "test")])
    corr = np.corrcoef(f.T)
    return {
        "pool": {
            "features": list(d.features),
            "std": f.std(0).tolist(),
            "corr": corr.tolist(),
            "max_abs_corr": float(np.abs(corr[np.triu_indices(len(corr), 1)]).max()),
            "obs_dim": int(d.obs["train"].shape[-1]),
            "horizon": int(d.obs["train"].shape[1]),
        },
        "latent": LX.summarise(d, latents),
        "reward": RW.learn_rewards(ctx, cfg, d, latents),
    }


def plot(r, ctx) -> None:
    LX.plot(r["latent"], ctx)
    RW.plot(r["reward"], ctx)


register(
    Experiment(
        name="langfeedback.metaworld",
        paper="Yang et al. 2024 (CoRL): the Meta-World domain (button press)",
        description="latent accuracy and language vs comparisons on Meta-World button-press-v3",
        config=MetaWorldExpConfig,
        presets={
            "smoke": MetaWorldExpConfig(
                latent=C.replace(
                    C.smoke_latent(),
                    data=C.DataConfig(source="metaworld", n_train=40, n_val=12, n_test=16),
                ),
                n_seeds=4,
                n_val_seeds=2,
                n_queries=20,
            ),
            "quick": MetaWorldExpConfig(),
            "paper": MetaWorldExpConfig(
                latent=C.replace(
                    C.paper_latent(),
                    data=C.DataConfig(source="metaworld", n_train=4000, n_val=300, n_test=700),
                ),
            ),
        },
        run=run,
        claims=[
            Claim(
                "L1_held_out_accuracy",
                "held-out sign accuracy after stage 2 >= 0.90 (chance 0.5)",
                lambda r: LX.c1(r["latent"]),
                figure=lambda r: r["latent"]["summary"]["stage2_test"]["mean"],
            ),
            Claim(
                "R1_language_early",
                "paper protocol, CE at 10 queries: language < comparisons (paired 95 % CI)",
                lambda r: RW.r1(r["reward"]),
                figure=RW.pair_figure("R1", within="reward"),
            ),
            Claim(
                "R2_language_late",
                "paper protocol, CE at 100 queries: language <= comparisons",
                lambda r: RW.r2(r["reward"]),
                figure=RW.pair_figure("R2", within="reward"),
            ),
        ],
        plots=plot,
        preflight=C.preflight,
    )
)
