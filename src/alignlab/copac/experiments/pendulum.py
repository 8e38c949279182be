"""copac.pendulum: CopAC against SAC on Pendulum-v1 (classic control, no MuJoCo).

p = 0.9 in the quick preset (the official README's lesion; {0.5, 0.9} costs 8 of the 25
minutes the four quick presets may take, so p = 0.5 is `--set lesions=[0.5,0.9]`), all four
severities in the paper preset; CopAC (with Q-updates, which the paper's Pendulum runs use), CopAC without
Q-updates beside it (Q-updates were seen to destabilise Q on Pendulum: Q-max exploits Q's
error away from the simulated data; |Q - Q*| on healthy-brain states is logged), and SAC on
the stimulation for up to 30 episodes.

Claims (quick: 3 patients per p):
- P1: CopAC's recovery at 10 episodes is >= 0.8 at every p.
- P2: CopAC > SAC at 10 episodes at every p (paired CI above 0).
- P3: SAC needs >= 5x CopAC's episodes to reach a recovery of 0.8 (or never does within its
  budget), at every p.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alignlab.copac.brain import BrainTraining
from alignlab.copac.copac import CopACConfig
from alignlab.copac.experiments import common
from alignlab.copac.experiments.common import PatientConfig
from alignlab.copac.experiments.lesions import l1
from alignlab.copac.experiments.reacher import PAPER
from alignlab.core.claims import Claim
from alignlab.core.config import param
from alignlab.core.experiment import Experiment, register


@dataclass
class PendulumConfig(common.SweepConfig):
    lesions: tuple[float, ...] = param(
        (0.9,), ge=0, le=1, nonempty=True, distinct=True, help="lesion fractions p"
    )
    sac_episodes: int = param(30, ge=1, help="SAC-on-stimulation's patient episodes")


def p1(r):
    recs = {row["p"]: row["methods"]["copac"]["recovery"] for row in r["settings"].values()}
    text = "; ".join(f"p={p:g}: {v:.2f}" for p, v in recs.items())
    return f"CopAC recovery {text}", all(v >= 0.8 for v in recs.values())


def first_recovery(s: dict, level: float) -> float | None:
    for e, v in zip(s["episodes"], s["recovery_curve"]):
        if v >= level:
            return e
    return None


def p3(r):
    parts, ok = [], True
    for row in r["settings"].values():
        c = first_recovery(row["methods"]["copac"], 0.8)
        s = first_recovery(row["methods"]["sac"], 0.8)
        if c is None:
            parts.append(f"p={row['p']:g}: CopAC never reaches 0.8")
            ok = False
            continue
        budget = row["methods"]["sac"]["episodes"][-1]
        if s is None:
            parts.append(f"p={row['p']:g}: CopAC at {c}, SAC never within {budget}")
            ok &= budget >= 5 * c
        else:
            parts.append(f"p={row['p']:g}: CopAC at {c}, SAC at {s}")
            ok &= s >= 5 * c
    return "episodes to recovery 0.8: " + "; ".join(parts), ok


CLAIMS = [
    Claim(
        "P1_recovery",
        "CopAC's recovery ≥ 0.8 at 10 episodes",
        p1,
        figure=lambda r: {
            t: row["methods"]["copac"]["recovery"] for t, row in r["settings"].items()
        },
    ),
    Claim("P2_beats_sac", "CopAC > SAC at 10 episodes", l1),
    Claim("P3_sac_needs_5x", "SAC needs ≥ 5× CopAC's episodes to reach recovery 0.8", p3),
]


def plot(results, ctx):
    common.plot_sweep(results, ctx, "pendulum", "Pendulum-v1")


def quick_patient(**kw) -> PatientConfig:
    return PatientConfig(
        world="Pendulum-v1",
        brain_training=BrainTraining(steps=15_000),
        tests=5,
        copac=CopACConfig(disc_act=51, disc_td=25),
        **kw,
    )


register(
    Experiment(
        name="copac.pendulum",
        paper=PAPER,
        description="CopAC vs SAC on a lesioned SAC brain in Pendulum-v1",
        config=PendulumConfig,
        presets={
            "smoke": PendulumConfig(
                patient=PatientConfig(
                    world="Pendulum-v1",
                    brain_training=BrainTraining(steps=400),
                    patients=2,
                    tests=2,
                    budget=3,
                    copac=CopACConfig(
                        disc_act=9,
                        disc_td=5,
                        update_start=1,
                        sim_fill=0,
                        q_episodes=1,
                        f_epochs=5,
                        q_epochs=2,
                    ),
                    sac_hidden=(32, 32),
                ),
                lesions=(0.9,),
                sac_episodes=3,
            ),
            "quick": PendulumConfig(patient=quick_patient()),
            "paper": PendulumConfig(
                patient=dataclasses.replace(
                    quick_patient(),
                    brain_training=BrainTraining(steps=75_000),
                    copac=CopACConfig(),
                    patients=10,
                    tests=15,
                ),
                lesions=(0.25, 0.5, 0.75, 0.9),
                sac_episodes=150,
            ),
        },
        run=common.run_sweep,
        claims=CLAIMS,
        plots=plot,
    )
)
