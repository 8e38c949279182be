"""copac.rnn_brain: CopAC on a lesioned modular rate-RNN brain (Michaels et al. 2020) in
Reacher-v5 (the abstract's "neurologically realistic model of an injured brain").

A 3 x 32 M1/F5/AIP brain, cloned from the healthy SAC brain by DAgger (the paper trains it by
recurrent SAC; docs/copac.md), lesioned by silencing a fraction p of M1, stimulated through
k = 2 Gaussian channels over M1. f sees the state only, not the brain's hidden state.

Claim (quick: 3 patients per p):
- B1: CopAC > SAC at 10 episodes at every p (paired CI above 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alignlab.copac.brain import BrainTraining
from alignlab.copac.copac import CopACConfig
from alignlab.copac.experiments import common
from alignlab.copac.experiments.common import PatientConfig
from alignlab.copac.experiments.lesions import l1
from alignlab.copac.experiments.reacher import PAPER, SMOKE_PATIENT, quick_patient
from alignlab.core.claims import Claim
from alignlab.core.config import ConfigError, param
from alignlab.core.experiment import Experiment, register


@dataclass
class RNNBrainConfig(common.SweepConfig):
    lesions: tuple[float, ...] = param(
        (0.5, 0.9), ge=0, le=1, nonempty=True, distinct=True, help="fractions of M1 silenced"
    )
    sac_episodes: int = param(100, ge=1, help="SAC-on-stimulation's patient episodes")

    def validate(self):
        super().validate()
        if self.patient.brain != "michaels":
            raise ConfigError("patient.brain", "must be 'michaels' in this experiment")
        if "true_f" in self.methods:
            raise ConfigError(
                "methods", "true_f needs a stateless brain; the Michaels brain is not"
            )


def recovery(r):
    return {t: row["methods"]["copac"].get("recovery") for t, row in r["settings"].items()}


CLAIMS = [
    Claim(
        "B1_beats_sac",
        "CopAC > SAC at 10 episodes on the Michaels brain",
        l1,
        figure=lambda r: {
            t: row["methods"]["sac"]["gap_vs_copac"]["mean"] for t, row in r["settings"].items()
        },
    ),
]


def plot(results, ctx):
    common.plot_sweep(results, ctx, "rnn_brain", "Michaels brain")


def michaels(pc: PatientConfig, **kw) -> PatientConfig:
    return dataclasses.replace(pc, brain="michaels", **kw)


register(
    Experiment(
        name="copac.rnn_brain",
        paper=PAPER,
        description="CopAC vs SAC on a lesioned modular rate-RNN brain in Reacher-v5",
        config=RNNBrainConfig,
        presets={
            "smoke": RNNBrainConfig(
                patient=michaels(SMOKE_PATIENT, michaels_n=8, michaels_iterations=1),
                lesions=(0.5,),
                methods=("copac", "sac"),
                sac_episodes=3,
            ),
            "quick": RNNBrainConfig(patient=michaels(quick_patient())),
            "paper": RNNBrainConfig(
                patient=michaels(
                    quick_patient(),
                    michaels_n=100,
                    michaels_iterations=20,
                    brain_training=BrainTraining(steps=75_000),
                    copac=CopACConfig(),
                    patients=10,
                    tests=15,
                ),
                sac_episodes=500,
            ),
        },
        run=common.run_sweep,
        claims=CLAIMS,
        plots=plot,
    )
)
