"""copac.lesions: CopAC across lesion severities on Reacher-v5 (the paper's
lesion study; its figures were not available offline).

p in {0.25, 0.5, 0.75, 0.9}; CopAC, CopAC without Q-updates, and SAC on the stimulation for up
to 50 episodes, on the same patients and test seeds. J_inj is not monotone in p (a lesion
zeroes weights, and which ones matters as much as how many), so the plots use J_inj as the
x-axis.

Claims (quick: 3 patients per p):
- L1: CopAC > SAC at 10 episodes at every p (paired CI of the difference above 0).
- L2: CopAC's recovery is >= 0.6 at every p where the injury gap J_healthy - J_inj exceeds
  2 SE (the standard error of the per-patient gaps): where there is an injury to recover from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alignlab.copac.brain import BrainTraining
from alignlab.copac.experiments import common
from alignlab.copac.experiments.reacher import PAPER, SMOKE_PATIENT, quick_patient
from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register


@dataclass
class LesionsConfig(common.SweepConfig):
    lesions: tuple[float, ...] = param(
        (0.25, 0.5, 0.75, 0.9), ge=0, le=1, nonempty=True, distinct=True, help="lesion fractions p"
    )
    sac_episodes: int = param(50, ge=1, help="SAC-on-stimulation's patient episodes")


def l1(r):
    parts, ok = [], True
    for row in r["settings"].values():
        g = row["methods"]["sac"]["gap_vs_copac"]
        parts.append(f"p={row['p']:g}: {g['mean']:+.2f} (lower {g['lower']:+.2f})")
        ok &= g["lower"] > 0
    return "CopAC − SAC: " + "; ".join(parts), ok


def l2(r):
    parts, ok = [], True
    for row in r["settings"].values():
        c = row["methods"]["copac"]
        injured = c["injury_gap"] > 2 * c["injury_gap_se"]
        parts.append(f"p={row['p']:g}: {c['recovery']:.2f}" + ("" if injured else " (no injury)"))
        ok &= (c["recovery"] >= 0.6) or not injured
    return "recovery " + "; ".join(parts), ok


CLAIMS = [
    Claim("L1_beats_sac_every_p", "CopAC > SAC at 10 episodes at every lesion", l1),
    Claim(
        "L2_recovery",
        "CopAC's recovery ≥ 0.6 wherever there is an injury gap",
        l2,
        figure=lambda r: {
            t: row["methods"]["copac"]["recovery"] for t, row in r["settings"].items()
        },
    ),
]


def plot(results, ctx):
    common.plot_sweep(results, ctx, "lesions", "Reacher-v5")


register(
    Experiment(
        name="copac.lesions",
        paper=PAPER,
        description="CopAC vs SAC on Reacher-v5 at four lesion severities",
        config=LesionsConfig,
        presets={
            "smoke": LesionsConfig(patient=SMOKE_PATIENT, lesions=(0.5, 0.9), sac_episodes=4),
            "quick": LesionsConfig(patient=quick_patient()),
            "paper": LesionsConfig(
                patient=dataclasses.replace(
                    quick_patient(),
                    brain_training=BrainTraining(steps=75_000),
                    copac=dataclasses.replace(quick_patient().copac, disc_act=100, disc_td=50),
                    patients=10,
                    tests=15,
                ),
                sac_episodes=250,
            ),
        },
        run=common.run_sweep,
        claims=CLAIMS,
        plots=plot,
    )
)
