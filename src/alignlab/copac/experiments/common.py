"""What the CopAC experiments share: the patient setting, one unit per (lesion, method, patient),
the test schedule, recovery, episodes-to-match and the curve plots.

Conventions (docs/copac.md):
- each patient seed is a new patient: its lesion, its electrodes and its learner's seed; every
  method sees the same patients and the same greedy test seeds, so comparisons are paired;
- recovery = (J - J_inj) / (J_healthy - J_inj), J_inj being the patient's return with no
  stimulation and J_healthy the unlesioned brain's, on the same test seeds;
- "at 10 episodes" is the mean of the tests after patient episodes 8, 9 and 10, fixed in
  advance; the curves are plotted in full.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.copac.brain import BrainTraining, SACBrain, brain_key, healthy_brain, load_brain
from alignlab.copac.copac import METHODS as COPAC_METHODS
from alignlab.copac.copac import CopAC, CopACConfig, check_grid
from alignlab.copac.envs import WORLDS, make_world, to_env_action
from alignlab.copac.patient import Evaluator, PatientEnv
from alignlab.core.cache import artifact_dir
from alignlab.core.config import ConfigError, param
from alignlab.core.seeding import int_seed, seed_torch
from alignlab.core.stats import mean_ci95
from alignlab.core.units import run_units

METHODS = (*COPAC_METHODS, "sac", "mbpo")
BRAINS = ("sac", "michaels")


def at_points(budget: int) -> list[int]:
    """The episodes whose tests make "at `budget` episodes": the last three (8, 9, 10 at the
    default budget of 10), fixed in advance."""
    return list(range(max(1, budget - 2), budget + 1))


@dataclass
class MBPOSettings:
    """The MBPO baseline's budget knobs (the rest are `copac.mbpo.MBPOConfig`'s defaults)."""

    hidden: int = param(256, ge=1, help="SAC agent's hidden width (paper: 512)")
    updates_per_step: int = param(10, ge=1, help="SAC updates per env step (paper: 40)")
    rollouts_per_step: int = param(100, ge=1, help="model rollouts per env step (paper: 400)")
    explore_episodes: int = param(
        2, ge=0, help="episodes of the untrained agent first (paper: 5,000 steps)"
    )
    ensemble: int = param(7, ge=1, help="ensemble members (paper: 7)")
    elites: int = param(5, ge=1, help="elite members (paper: 5)")
    model_hidden: int = param(200, ge=1, help="model MLP width (paper: 200)")


@dataclass
class PatientConfig:
    """The world, the brain, the patients and the test protocol of one experiment."""

    world: str = param("Reacher-v5", choices=tuple(WORLDS), help="the gymnasium task")
    brain: str = param("sac", choices=BRAINS, help="the brain model")
    brain_training: BrainTraining = param(factory=BrainTraining, help="the healthy SAC brain")
    michaels_n: int = param(32, ge=2, help="neurons per module of the Michaels brain")
    michaels_iterations: int = param(14, ge=1, help="DAgger iterations cloning the Michaels brain")
    stim_dim: int = param(2, ge=1, help="stimulation channels k")
    patients: int = param(3, ge=1, help="patients (seeds): lesion, electrodes and learner")
    tests: int = param(10, ge=1, help="greedy test episodes after each patient episode")
    budget: int = param(10, ge=1, help="patient episodes of the CopAC methods (data_size)")
    copac: CopACConfig = param(factory=CopACConfig, help="CopAC's hyperparameters")
    mbpo: MBPOSettings = param(factory=MBPOSettings, help="the MBPO baseline's budget")
    sac_hidden: tuple[int, ...] = param(
        (256, 256), ge=1, nonempty=True, help="SAC-on-stimulation baseline (SB3 defaults)"
    )

    def validate(self):
        world = WORLDS[self.world]
        if world.extra == "mujoco" and importlib.util.find_spec("mujoco") is None:
            raise ConfigError("world", f"{self.world} needs MuJoCo: pip install 'alignlab[mujoco]'")
        if world.extra == "myo" and importlib.util.find_spec("myosuite") is None:
            raise ConfigError(
                "world",
                f"{self.world} needs MyoSuite: pip install 'alignlab[myo]' in a separate venv",
            )
        if world.extra == "box2d" and importlib.util.find_spec("Box2D") is None:
            raise ConfigError("world", f"{self.world} needs Box2D: pip install 'gymnasium[box2d]'")
        hidden = self.brain_training.hidden[-1]
        if self.brain == "sac" and self.stim_dim > hidden:
            raise ConfigError(
                "stim_dim",
                f"must be in [1, {hidden}] (the brain's hidden width), got {self.stim_dim}",
            )
        if self.brain == "michaels" and self.stim_dim > self.michaels_n:
            raise ConfigError(
                "stim_dim", f"must be in [1, {self.michaels_n}] (M1's size), got {self.stim_dim}"
            )
        if len(self.brain_training.hidden) < 2:
            raise ConfigError("brain_training.hidden", "the brain needs two hidden layers")
        if self.copac.optimizer == "grid":
            for name in ("disc_act", "disc_td"):
                try:
                    check_grid(getattr(self.copac, name), self.stim_dim)
                except ValueError as e:
                    raise ConfigError(f"copac.{name}", str(e)) from None


def schedule(episodes: int) -> list[int]:
    """The patient episodes after which the greedy tests run: every one up to 20, then every
    5 up to 50, then every 10."""
    pts = [e for e in range(0, episodes + 1) if e <= 20 or (e <= 50 and e % 5 == 0) or e % 10 == 0]
    return pts if pts[-1] == episodes else [*pts, episodes]


def test_seeds(seed: int, n: int) -> list[int]:
    """Reset seeds of the greedy tests, shared by every method and patient of a run."""
    return [int_seed(seed, "copac-test", i) % 2**31 for i in range(n)]


# ---------------------------------------------------------------------------------------
# brains


def prepare_brains(ctx, pc: PatientConfig) -> dict:
    """Train (or find) the healthy brain in the main process, before the units fork, so that
    the units only read the cache. Returns its J_healthy info."""
    b = healthy_brain(ctx, pc.world, pc.brain_training)
    out = {"world": pc.world, "key": brain_key(pc.world, pc.brain_training)}
    if pc.brain == "michaels":
        from alignlab.copac.rnn import healthy_michaels

        out["michaels"] = healthy_michaels(ctx, pc, b)
    return out


def _patient_brain(pc: PatientConfig, healthy, p: float, seed: int, run_seed: int):
    injury = int_seed(run_seed, "copac-injury", pc.world, p, seed) % 2**31
    stim = int_seed(run_seed, "copac-electrodes", pc.world, seed) % 2**31
    if pc.brain == "sac":
        return SACBrain(
            healthy.actor, p=p, injury_seed=injury, stim_dim=pc.stim_dim, stim_seed=stim
        )
    from alignlab.copac.rnn import patient_michaels

    return patient_michaels(pc, p, injury, stim)


def load_healthy(pc: PatientConfig):
    t = pc.brain_training
    return load_brain(artifact_dir("copac", brain_key(pc.world, t)), pc.world, t)


# ---------------------------------------------------------------------------------------
# one unit: one patient, one method


def run_patient(pc: PatientConfig, p: float, method: str, seed: int, episodes: int, uctx) -> dict:
    """Run `method` on patient `seed` at lesion `p` for `episodes` patient episodes, testing
    greedily on the schedule; the unit's result."""
    t0 = time.process_time()
    run_seed = uctx.seed
    seed_torch(run_seed, "copac-unit", pc.world, p, method, seed)
    healthy = load_healthy(pc)
    brain = _patient_brain(pc, healthy, p, seed, run_seed)
    healthy_brain_ = _patient_brain(pc, healthy, 0.0, seed, run_seed)
    seeds = test_seeds(run_seed, pc.tests)
    tester = Evaluator(pc.world, brain, seeds)
    zero = lambda s: torch.zeros(len(s), pc.stim_dim)  # noqa: E731
    j_inj = float(np.mean(tester(zero)))
    healthy_evaluator = Evaluator(pc.world, healthy_brain_, seeds)
    j_healthy = float(np.mean(healthy_evaluator(zero)))
    healthy_evaluator.close()
    env = PatientEnv(pc.world, brain)
    rng = np.random.default_rng(uctx.substream("copac-episodes", pc.world, p, seed))
    reset_seed = lambda: int(rng.integers(2**31))  # noqa: E731
    points = schedule(episodes)
    curve: dict[int, float] = {}
    extra: dict[str, list] = {"train": [], "q_err": []}
    progress = uctx.advance

    if method in COPAC_METHODS:
        learner = CopAC(
            method,
            pc.copac,
            obs_dim=env.observation_space.shape[0],
            action_dim=env.world.action_space.shape[0],
            stim_dim=pc.stim_dim,
            critic=healthy.critic,
            brain=brain,
            healthy_actor=lambda s: healthy.actor.deterministic(s),
            seed=int_seed(run_seed, "copac-learner", seed) % 2**31,
        )
        probe = _healthy_states(pc, healthy, run_seed)
        curve[0] = float(np.mean(tester(learner.select)))
        world = make_world(pc.world)
        for ep in range(1, episodes + 1):
            extra["train"].append(learner.patient_episode(env, reset_seed()))
            if ep in points:
                curve[ep] = float(np.mean(tester(learner.select)))
            if learner.uses_q_updates and ep > pc.copac.update_start:
                learner.q_updates(world, reset_seed)
            extra["q_err"].append(_q_error(learner.q, healthy.critic, probe))
            progress(1)
        world.close()
        extra["f_fits"] = len(learner.fits)
        extra["q_fits"] = len(learner.q_fits)
    elif method == "sac":
        curve, extra["train"] = _sac_on_stimulation(
            pc, env, tester, points, episodes, rng, progress
        )
    elif method == "mbpo":
        curve, extra["train"] = _mbpo(pc, env, tester, points, episodes, run_seed, seed, progress)
    else:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    env.close()
    tester.close()
    eps = sorted(curve)
    # CPU time is not reproducible, so it goes to metrics.jsonl (a timing key), not the result
    uctx.log_metrics(episodes, cpu_time_s=time.process_time() - t0)
    return {
        "episodes": eps,
        "test": [curve[e] for e in eps],
        "j_inj": j_inj,
        "j_healthy": j_healthy,
        **extra,
    }


def _healthy_states(
    pc: PatientConfig, healthy, run_seed: int, n_episodes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """States the healthy brain visits (2 episodes), where |Q - Q*| is logged."""
    env = make_world(pc.world)
    states = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=int_seed(run_seed, "copac-probe", i) % 2**31)
        done = False
        while not done:
            states.append(obs)
            with torch.no_grad():
                a = healthy.actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)[None])
            obs, _, term, trunc, _ = env.step(to_env_action(a[0].numpy(), env.action_space))
            done = term or trunc
    env.close()
    s = torch.as_tensor(np.stack(states), dtype=torch.float32)
    with torch.no_grad():
        return s, healthy.actor.deterministic(s)


@torch.no_grad()
def _q_error(q, q_star, probe) -> float:
    s, a = probe
    return float((q.q_min(s, a) - q_star.q_min(s, a)).abs().mean())


def _sac_on_stimulation(pc, env, tester, points, episodes, rng, progress):
    """Model-free SAC acting in stimulation space (`train_sac_coproc.py`; SB3 defaults)."""
    from alignlab.rl.sac import SAC, SACConfig

    sac = SAC(
        env.observation_space.shape[0],
        pc.stim_dim,
        SACConfig(net_arch=tuple(pc.sac_hidden)),
        action_low=env.action_space.low,
        action_high=env.action_space.high,
    )
    policy = lambda s: torch.as_tensor(sac.predict(s.numpy(), deterministic=True))  # noqa: E731
    curve = {0: float(np.mean(tester(policy)))}
    train: list[float] = []

    def on_end(i: int, ret: float):
        train.append(float(ret))
        ep = i + 1
        if ep in points:
            curve[ep] = float(np.mean(tester(policy)))
        progress(1)
        return ep < episodes

    sac.learn(env, episodes * env.spec.max_episode_steps, rng=rng, on_episode_end=on_end)
    return curve, train


def _mbpo(pc, env, tester, points, episodes, run_seed, seed, progress):
    """MBPO (Janner et al. 2019) acting in stimulation space, our reimplementation."""
    from alignlab.copac import mbpo

    m = pc.mbpo
    cfg = mbpo.quick_config(
        sac_hidden=m.hidden,
        updates_per_step=m.updates_per_step,
        rollouts_per_step=m.rollouts_per_step,
        explore_episodes=m.explore_episodes,
        ensemble_size=m.ensemble,
        num_elites=m.elites,
        model_hidden=m.model_hidden,
    )
    agent = mbpo.MBPO(
        lambda: PatientEnv(pc.world, env.brain),
        cfg,
        seed=int_seed(run_seed, "copac-mbpo", seed) % 2**31,
    )
    policy = lambda s: torch.as_tensor(agent.predict(s.numpy()))  # noqa: E731
    curve = {0: float(np.mean(tester(policy)))}
    train: list[float] = []

    def on_end(i: int, ret: float):
        train.append(float(ret))
        if i + 1 in points:
            curve[i + 1] = float(np.mean(tester(policy)))
        progress(1)

    agent.run(episodes, on_episode_end=on_end)
    return curve, train


# ---------------------------------------------------------------------------------------
# summaries


def at_budget(unit: dict, budget: int) -> float:
    """The unit's test return "at `budget` episodes" (`at_points`)."""
    eps, test = unit["episodes"], unit["test"]
    return float(np.mean([test[eps.index(e)] for e in at_points(budget)]))


def recovery(unit: dict, budget: int) -> float:
    j = at_budget(unit, budget)
    return float((j - unit["j_inj"]) / (unit["j_healthy"] - unit["j_inj"]))


def summarise(units: list[dict], budget: int) -> dict:
    """Across patients: the mean curve with 95% t CIs, J at 10 episodes and recovery."""
    eps = units[0]["episodes"]
    curves = np.array([u["test"] for u in units])
    rec_curves = np.array(
        [[(t - u["j_inj"]) / (u["j_healthy"] - u["j_inj"]) for t in u["test"]] for u in units]
    )
    out = {
        "episodes": eps,
        "mean": curves.mean(0).tolist(),
        "ci95": [mean_ci95(curves[:, i])[1] for i in range(len(eps))],
        "recovery_curve": rec_curves.mean(0).tolist(),
        "j_inj": float(np.mean([u["j_inj"] for u in units])),
        "j_healthy": float(np.mean([u["j_healthy"] for u in units])),
    }
    gaps = np.array([u["j_healthy"] - u["j_inj"] for u in units])
    out["injury_gap"] = float(gaps.mean())
    out["injury_gap_se"] = float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else 0.0
    if all(e in eps for e in at_points(budget)):
        at = [at_budget(u, budget) for u in units]
        rec = [recovery(u, budget) for u in units]
        out["at10"], out["at10_ci95"] = mean_ci95(at)
        out["recovery"], out["recovery_ci95"] = mean_ci95(rec)
        out["at10_per_patient"], out["recovery_per_patient"] = at, rec
    if units[0].get("q_err"):
        out["q_err"] = np.mean([u["q_err"] for u in units], axis=0).tolist()
    return out


def paired_gap(a: list[dict], b: list[dict], budget: int) -> dict:
    """a's J at 10 episodes minus b's, per patient (same patients, same test seeds): mean,
    95% t CI half-width, its lower end, and the gap's standard error."""
    d = np.array([at_budget(x, budget) - at_budget(y, budget) for x, y in zip(a, b)])
    mean, ci = mean_ci95(d)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(mean), "ci95": float(ci), "lower": float(mean - ci), "se": se}


def episodes_to_reach(summary: dict, target: float) -> float | None:
    """The first tested episode at which the mean curve reaches `target` (None: never)."""
    for e, j in zip(summary["episodes"], summary["mean"]):
        if j >= target:
            return e
    return None


def plot_curves(
    ax, summaries: dict[str, dict], *, recovery_axis: bool = False, bands: bool = True
) -> None:
    """Mean test-return curves across patients, with 95% t bands when `bands`."""
    for name, s in summaries.items():
        x = np.asarray(s["episodes"])
        y = np.asarray(s["recovery_curve"] if recovery_axis else s["mean"])
        ax.plot(x, y, label=name, marker="o" if len(x) < 25 else None, ms=3)
        if bands and not recovery_axis:
            ci = np.nan_to_num(np.asarray(s["ci95"], dtype=float))
            ax.fill_between(x, y - ci, y + ci, alpha=0.2)


def zoom(ax, j_inj: float, j_healthy: float) -> None:
    """Frame the injury: from 2 gaps below J_inj to half a gap above J_healthy (the first
    tests, before f has data, can be far worse and are cut off; the numbers are in
    results.json)."""
    gap = max(j_healthy - j_inj, 1e-6)
    ax.set_ylim(j_inj - 2 * gap, j_healthy + 0.5 * gap)


# ---------------------------------------------------------------------------------------
# a sweep over lesion fractions (copac.lesions, copac.pendulum, copac.rnn_brain)


@dataclass
class SweepConfig:
    """A sweep over lesion fractions: every (p, method, patient). Experiments subclass it and
    set their own defaults."""

    patient: PatientConfig = param(factory=PatientConfig, help="world, brain, patients, tests")
    lesions: tuple[float, ...] = param(
        (0.5, 0.9), ge=0, le=1, nonempty=True, distinct=True, help="lesion fractions p"
    )
    methods: tuple[str, ...] = param(
        ("copac", "copac_noq", "sac"),
        choices=METHODS,
        distinct=True,
        nonempty=True,
        help="methods run",
    )
    sac_episodes: int = param(50, ge=1, help="SAC-on-stimulation's patient episodes")

    def episodes_of(self, method: str) -> int:
        return self.sac_episodes if method in ("sac", "mbpo") else self.patient.budget

    def validate(self):
        if not {"copac", "sac"} <= set(self.methods):
            raise ConfigError("methods", "must include 'copac' and 'sac', which the claims compare")


def sweep_unit(key: str, uctx) -> dict:
    cfg = uctx.config
    tag, method, seed = key.split("/")
    return run_patient(
        cfg.patient, float(tag[1:]), method, int(seed), cfg.episodes_of(method), uctx
    )


def run_sweep(ctx) -> dict:
    """Every (p, method, patient) of a config with `patient`, `lesions`, `methods` and
    `episodes_of(method)`; per p, each method's summary and its paired gap to CopAC."""
    cfg = ctx.config
    pc = cfg.patient
    brains = prepare_brains(ctx, pc)
    tags = [f"p{p:g}" for p in cfg.lesions]
    keys = [f"{t}/{m}/{s}" for t in tags for m in cfg.methods for s in range(pc.patients)]
    size = max(cfg.episodes_of(m) for m in cfg.methods)
    out = run_units(ctx, keys, sweep_unit, size=size, description="patients")
    results: dict = {"brain": brains, "budget": pc.budget, "settings": {}}
    for p, t in zip(cfg.lesions, tags):
        units = {m: [out[f"{t}/{m}/{s}"] for s in range(pc.patients)] for m in cfg.methods}
        row = {"p": p, "methods": {m: summarise(us, pc.budget) for m, us in units.items()}}
        for m in cfg.methods:
            if m != "copac" and "copac" in units:
                row["methods"][m]["gap_vs_copac"] = paired_gap(units["copac"], units[m], pc.budget)
        results["settings"][t] = row
    return results


def plot_sweep(results: dict, ctx, name: str, title: str) -> None:
    """One panel per lesion: the test-return curves with 95% CI bands, healthy and injured
    levels; and recovery at the budget against J_inj (not monotone in p)."""
    from alignlab.core.plotting import plt

    settings = results["settings"]
    n = len(settings)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 3.6))
    for ax, row in zip(axes, settings.values()):
        plot_curves(ax, row["methods"])
        c = next(iter(row["methods"].values()))
        ax.axhline(c["j_healthy"], color="k", ls="--", lw=1, label="healthy")
        ax.axhline(c["j_inj"], color="r", ls=":", lw=1, label="injured")
        ax.set_xscale("symlog", linthresh=10)
        zoom(ax, c["j_inj"], c["j_healthy"])
        ax.set(title=f"{title}, p = {row['p']}", xlabel="patient episodes", ylabel="test return")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for m in next(iter(settings.values()))["methods"]:
        pts = [
            (row["methods"][m]["j_inj"], row["methods"][m].get("recovery", np.nan))
            for row in settings.values()
        ]
        pts.sort()
        ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=m)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set(
        xlabel="J_inj (injured return)",
        ylabel=f"recovery at {results['budget']} episodes",
        title="recovery against the injury",
    )
    ax.legend(fontsize=7)
    ctx.save_figure(fig, name)
