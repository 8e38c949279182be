"""copac.reacher: every method on Reacher-v5 at lesion p = 0.75 (the paper's
gym-task experiments; its figures were not available offline).

CopAC, its ablations (copac_noq, random_f, inverse, true_f) and the baselines (SAC acting on
the stimulation; MBPO) on the same patients and test seeds.

Claims (quick: 3 patients, 95% t CIs over patients):
- R1: CopAC's recovery at 10 episodes is >= 0.7.
- R2: CopAC > SAC at 10 episodes (the paired CI of the difference lies above 0).
- R3: SAC needs >= 10x CopAC's 10 episodes to reach CopAC's level, or never does within its
  budget (200 episodes).
- R4: CopAC > MBPO at 10 episodes (paired CI above 0).
- R5: J_true_f - J_CopAC <= 0.15 (J_healthy - J_inj): the learned f is nearly as good as the
  true brain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from alignlab.copac.brain import BrainTraining
from alignlab.copac.copac import CopACConfig
from alignlab.copac.experiments import common
from alignlab.copac.experiments.common import MBPOSettings, PatientConfig
from alignlab.core.claims import Claim
from alignlab.core.config import ConfigError, param
from alignlab.core.experiment import Experiment, register
from alignlab.core.units import run_units

PAPER = "Pan, Schrum, Myers, Bıyık & Dragan 2024, Coprocessor Actor Critic (ICML)"


@dataclass
class ReacherConfig:
    patient: PatientConfig = param(factory=PatientConfig, help="world, brain, patients, tests")
    p: float = param(0.75, ge=0, le=1, help="lesion fraction")
    methods: tuple[str, ...] = param(
        ("copac", "copac_noq", "random_f", "inverse", "true_f", "sac", "mbpo"),
        choices=common.METHODS,
        distinct=True,
        nonempty=True,
        help="methods run",
    )
    sac_episodes: int = param(200, ge=1, help="SAC-on-stimulation's patient episodes")
    mbpo_episodes: int = param(10, ge=1, help="MBPO's patient episodes")

    def validate(self):
        if "copac" not in self.methods:
            raise ConfigError("methods", "must include 'copac', the method every claim is about")


def episodes_of(cfg: ReacherConfig, method: str) -> int:
    return {"sac": cfg.sac_episodes, "mbpo": cfg.mbpo_episodes}.get(method, cfg.patient.budget)


def unit(key: str, uctx) -> dict:
    cfg = uctx.config
    method, seed = key.split("/")
    return common.run_patient(cfg.patient, cfg.p, method, int(seed), episodes_of(cfg, method), uctx)


def run(ctx) -> dict:
    cfg = ctx.config
    brains = common.prepare_brains(ctx, cfg.patient)
    keys = [f"{m}/{s}" for m in cfg.methods for s in range(cfg.patient.patients)]
    size = max(episodes_of(cfg, m) for m in cfg.methods)
    out = run_units(ctx, keys, unit, size=size, description="patients")
    units = {m: [out[f"{m}/{s}"] for s in range(cfg.patient.patients)] for m in cfg.methods}
    results: dict = {"brain": brains, "p": cfg.p, "budget": cfg.patient.budget, "methods": {}}
    for m, us in units.items():
        results["methods"][m] = common.summarise(us, cfg.patient.budget)
    cop = results["methods"]["copac"]
    if "at10" in cop:
        for m in cfg.methods:
            if m != "copac" and "at10" in results["methods"][m]:
                results["methods"][m]["gap_vs_copac"] = common.paired_gap(
                    units["copac"], units[m], cfg.patient.budget
                )
        target = cop["at10"]
        results["copac_level"] = target
        results["copac_episodes_to_level"] = common.episodes_to_reach(cop, target)
        for m in ("sac", "mbpo"):
            if m in results["methods"]:
                results["methods"][m]["episodes_to_copac"] = common.episodes_to_reach(
                    results["methods"][m], target
                )
    return results


def _gap(r, m):
    return r["methods"].get(m, {}).get("gap_vs_copac")


def r1(r):
    c = r["methods"]["copac"]
    return f"recovery {c['recovery']:.2f} ± {c['recovery_ci95']:.2f}", c["recovery"] >= 0.7


def beats(m):
    def check(r):
        g = _gap(r, m)
        if g is None:
            return f"{m} not run for the budget's {r['budget']} episodes", False
        return (
            f"CopAC − {m} = {g['mean']:+.2f} (95% CI lower end {g['lower']:+.2f})",
            g["lower"] > 0,
        )

    return check


def r3(r):
    s = r["methods"].get("sac")
    if s is None:
        return "sac not run", False
    e = s.get("episodes_to_copac")
    budget = s["episodes"][-1]
    if e is None:
        return f"SAC never reaches CopAC's {r['copac_level']:.2f} within {budget} episodes", True
    return f"SAC reaches CopAC's {r['copac_level']:.2f} at episode {e}", e >= 10 * r["budget"]


def r5(r):
    t = r["methods"].get("true_f")
    if t is None:
        return "true_f not run", False
    c = r["methods"]["copac"]
    gap = t["at10"] - c["at10"]
    span = c["j_healthy"] - c["j_inj"]
    return (
        f"J_true_f − J_CopAC = {gap:.2f} = {gap / span:.2f} of the injury gap",
        gap <= 0.15 * span,
    )


CLAIMS = [
    Claim(
        "R1_recovery",
        "CopAC recovers ≥ 0.7 of the injury gap at 10 episodes",
        r1,
        figure=lambda r: r["methods"]["copac"]["recovery"],
    ),
    Claim(
        "R2_beats_sac",
        "CopAC > SAC on stimulation at 10 episodes",
        beats("sac"),
        figure=lambda r: (_gap(r, "sac") or {}).get("mean"),
    ),
    Claim(
        "R3_sac_needs_10x",
        "SAC needs ≥ 10× CopAC's episodes to match it, or never matches within 200",
        r3,
    ),
    Claim(
        "R4_beats_mbpo",
        "CopAC > MBPO at 10 episodes",
        beats("mbpo"),
        figure=lambda r: (_gap(r, "mbpo") or {}).get("mean"),
    ),
    Claim("R5_f_near_true", "J_true_f − J_CopAC ≤ 0.15 (J_healthy − J_inj)", r5),
]


def plot(results: dict, ctx) -> None:
    from alignlab.core.plotting import plt

    ms = results["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    short = {m: s for m, s in ms.items() if m not in ("sac",)}
    common.plot_curves(axes[0], short, bands=False)
    c = ms["copac"]
    for ax in axes:
        ax.axhline(c["j_healthy"], color="k", ls="--", lw=1, label="healthy")
        ax.axhline(c["j_inj"], color="r", ls=":", lw=1, label="injured, no stimulation")
        ax.set(xlabel="patient episodes", ylabel="test return")
        common.zoom(ax, c["j_inj"], c["j_healthy"])
    axes[0].set_title(f"Reacher-v5, p = {results['p']}: all methods (means over patients)")
    axes[0].legend(fontsize=7)
    common.plot_curves(axes[1], {m: ms[m] for m in ("copac", "sac") if m in ms})
    axes[1].set_xscale("symlog", linthresh=10)
    axes[1].set_title("CopAC (10 episodes) vs SAC on stimulation (95% CI)")
    axes[1].legend(fontsize=7)
    ctx.save_figure(fig, "reacher_curves")


def quick_patient(**kw) -> PatientConfig:
    return PatientConfig(
        world="Reacher-v5",
        brain_training=BrainTraining(steps=25_000),
        copac=CopACConfig(disc_act=51, disc_td=25),
        **kw,
    )


SMOKE_PATIENT = PatientConfig(
    world="Reacher-v5",
    brain_training=BrainTraining(steps=600),
    patients=2,
    tests=2,
    budget=3,
    copac=CopACConfig(
        disc_act=9, disc_td=5, update_start=1, sim_fill=60, q_episodes=1, f_epochs=5, q_epochs=3
    ),
    mbpo=MBPOSettings(
        hidden=32,
        updates_per_step=1,
        rollouts_per_step=8,
        explore_episodes=1,
        ensemble=3,
        elites=2,
        model_hidden=16,
    ),
    sac_hidden=(32, 32),
)

register(
    Experiment(
        name="copac.reacher",
        paper=PAPER,
        description="CopAC, its ablations, SAC and MBPO on a lesioned SAC brain in Reacher-v5",
        config=ReacherConfig,
        presets={
            "smoke": ReacherConfig(
                patient=SMOKE_PATIENT,
                sac_episodes=4,
                mbpo_episodes=3,
                methods=("copac", "true_f", "sac", "mbpo"),
            ),
            "quick": ReacherConfig(patient=quick_patient()),
            "paper": ReacherConfig(
                patient=dataclasses.replace(
                    quick_patient(),
                    brain_training=BrainTraining(steps=75_000),
                    copac=CopACConfig(),
                    patients=10,
                    tests=15,
                    mbpo=MBPOSettings(
                        hidden=512, updates_per_step=40, rollouts_per_step=400, explore_episodes=100
                    ),
                ),
                mbpo_episodes=2_500,  # 125k steps, as the official MBPO configs
            ),
        },
        run=run,
        claims=CLAIMS,
        plots=plot,
    )
)
