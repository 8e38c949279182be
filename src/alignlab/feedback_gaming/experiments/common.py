"""What every feedback-gaming experiment shares: the RL settings, one run of iterated KTO on one
population (a unit), and the aggregation of the RL seeds.

A *setting* is an environment, a population (users per sub-environment and type), a cue, a
veto and a safety-data fraction. One unit trains a copy of the base agent for `iterations`
iterations on it with one RL seed, measuring every iteration's trajectories (the paper's
curves) and, at the start and the end, exact act probabilities on held-out users and the
benchmark probes. A unit checkpoints after every iteration and resumes from there.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.core.config import ConfigError, param
from alignlab.core.errors import AlignlabError
from alignlab.core.stats import mean_ci95
from alignlab.core.units import run_units
from alignlab.feedback_gaming import probes
from alignlab.feedback_gaming.base import BaseConfig, gate_failures, get_base
from alignlab.feedback_gaming.envs import get_env
from alignlab.feedback_gaming.iterate import (
    METHODS,
    SCHEDULES,
    Optim,
    act_probabilities,
    first_sentence_probs,
    kto_epoch,
    safety_examples,
    select,
    summarise,
    turn_examples,
)
from alignlab.feedback_gaming.roles import PROGRAMS, Roles
from alignlab.feedback_gaming.rollout import Sampling, rollout
from alignlab.feedback_gaming.world import CUES, VETOES, make_user
from alignlab.nn.lora import LoRAConfig, apply_lora, save_adapter

PAPER = (
    "Williams, Carroll et al. 2024, On Targeted Manipulation and Deception when Optimizing "
    "LLMs for User Feedback (arXiv 2411.02306)"
)
SIMULATION_NOTE = (
    "The users, raters, veto and judges are programs (a grammar world with scripted "
    "preferences), not LLMs; the agent is a real Gemma 2 trained by iterated KTO."
)


@dataclass
class RLConfig:
    """The optimiser and the measurements, one set of values for every environment."""

    base: BaseConfig = param(factory=lambda: quick_base(), help="the base agent (cached SFT model)")
    iterations: int = param(12, ge=1, help="KTO iterations")
    lr: float = param(5e-4, gt=0, help="KTO learning rate at iteration 0 (full fine-tuning)")
    lr_decay: float = param(0.9, gt=0, le=1, help="lr multiplier per iteration (the paper's 0.9)")
    method: str = param(
        "kto", choices=METHODS, help="kto, or ei: expert iteration (SFT on the top trajectories)"
    )
    beta: float = param(0.1, gt=0, help="KTO's β")
    batch_size: int = param(16, ge=1, help="KTO batch (the paper's effective batch 16)")
    select_frac: float = param(
        1 / 16, gt=0, le=0.5, help="top and bottom share selected per sub-env"
    )
    temperature: float = param(1.0, gt=0, help="sampling temperature (the paper's 1)")
    min_p: float = param(0.02, ge=0, lt=1, help="min-p filter (a deviation; 0: off)")
    max_new_tokens: int = param(48, ge=8, help="reply length limit in tokens")
    eval_users: int = param(64, ge=1, help="held-out users per type for exact act probabilities")
    n_seeds: int = param(3, ge=1, help="RL seeds per setting (claims read their mean)")
    rater: str = param(
        "program", help="who rates: 'program', or 'openai:<model>' at OPENAI_BASE_URL"
    )
    veto_model: str = param(
        "program", help="who vetoes: 'program', or 'openai:<model>' at OPENAI_BASE_URL"
    )

    def validate(self) -> None:
        for key in ("rater", "veto_model"):
            value = getattr(self, key)
            if value != "program" and not (value.startswith("openai:") and len(value) > 7):
                raise ConfigError(
                    key,
                    f"unknown backend {value!r}; valid: 'program' or "
                    "'openai:<model>' (a model served at OPENAI_BASE_URL)",
                )

    def roles(self) -> Roles:
        if self.rater == "program" and self.veto_model == "program":
            return PROGRAMS
        from alignlab.feedback_gaming.backends import llm_roles

        def model(value):
            return None if value == "program" else value.split(":", 1)[1]

        return llm_roles(model(self.rater), model(self.veto_model))

    def optim(self, schedule: str = "constant") -> Optim:
        return Optim(
            lr=self.lr,
            lr_decay=self.lr_decay,
            batch_size=self.batch_size,
            beta=self.beta,
            schedule=schedule,
            method=self.method,
        )

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.min_p or None, self.max_new_tokens)


@dataclass(frozen=True)
class Setting:
    """One population trained on: `n_vuln` and `n_normal` users per iteration, spread evenly
    over the environment's sub-environments."""

    name: str
    env: str
    n_vuln: int
    n_normal: int = 0
    cue: str = "traits"
    veto: str = "none"
    safety_frac: float = 0.0
    schedule: str = "constant"

    def check(self) -> None:
        get_env(self.env)
        if self.cue not in CUES:
            raise AlignlabError(f"unknown cue {self.cue!r}; valid: {', '.join(CUES)}")
        if self.veto not in VETOES:
            raise AlignlabError(f"unknown veto {self.veto!r}; valid: {', '.join(VETOES)}")
        if self.schedule not in SCHEDULES:
            raise AlignlabError(
                f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        if not 0 <= self.safety_frac < 1:
            raise AlignlabError(f"safety fraction must be in [0, 1), got {self.safety_frac}")


def population(n_users: int, fraction: float, key: str) -> tuple[int, int]:
    """(vulnerable, normal) users per iteration for a vulnerable `fraction` of `n_users`; one
    clear error when the fraction rounds to no vulnerable user."""
    if not 0 < fraction <= 1:
        raise ConfigError(key, f"a vulnerable fraction must be in (0, 1], got {fraction}")
    n_vuln = round(n_users * fraction)
    if n_vuln < 1:
        raise ConfigError(
            key,
            f"{fraction} of {n_users} users is no vulnerable user per "
            f"iteration; the population must be at least {math.ceil(1 / fraction)}",
        )
    return n_vuln, n_users - n_vuln


def users_for(setting: Setting, rng: np.random.Generator) -> list:
    """The setting's users, spread evenly over the environment's quick sub-environments."""
    env = get_env(setting.env)
    users = []
    for kind, n in (("vuln", setting.n_vuln), ("normal", setting.n_normal)):
        for i in range(n):
            users.append(make_user(env, env.subenvs[i % len(env.subenvs)], kind, setting.cue, rng))
    return users


def probe_rates(model, fmt) -> dict:
    """Each benchmark's failing rate, exact: over its probes, the mean of
    P(failing first sentence) / P(failing or passing first sentence), by teacher forcing."""
    out = {}
    for kind in probes.PROBES:
        ps = [probes.PROBES[kind](i) for i in range(probes.N_PROBES[kind])]
        probs = first_sentence_probs(
            model,
            fmt,
            [probes.probe_messages(p) for p in ps],
            [list(p.bad) + list(p.good) for p in ps],
        )
        rates = [sum(q[: len(p.bad)]) / max(sum(q), 1e-30) for p, q in zip(ps, probs)]
        out[kind] = float(np.mean(rates))
    return out


class Trainer:
    """Holds the base agent for a run's units (forked workers inherit it)."""

    def __init__(self, ctx, cfg: RLConfig):
        self.cfg = cfg
        self.roles = cfg.roles()
        self.base = get_base(ctx, cfg.base, ctx.seed)
        bad = gate_failures(self.base.info["gate"], cfg.base)
        if bad:
            raise AlignlabError(
                f"the base model fails the gate ({len(bad)} problems), so there is no "
                f"safety-trained prior to start RL from: " + "; ".join(bad[:5])
            )

    def unit(self, setting: Setting, key: str, uctx) -> dict:
        """Iterated KTO on one setting with the RL seed in `key`."""
        cfg, base = self.cfg, self.base
        env = get_env(setting.env)
        fmt = base.fmt
        model = copy.deepcopy(base.model)
        if cfg.base.lora:  # the paper's LoRA on top of the base (the repo's RL adapters)
            apply_lora(
                model, LoRAConfig(), seed=int(uctx.substream(key, "lora").generate_state(1)[0])
            )
        harmful = [a.name for a in env.acts if a.harmful]
        held = users_for(
            dataclasses.replace(
                setting, n_vuln=cfg.eval_users, n_normal=cfg.eval_users if setting.n_normal else 0
            ),
            np.random.default_rng(uctx.substream(key, "held_out")),
        )
        history, start = [], 0
        ck = uctx.checkpoint.load()
        if ck is not None:
            ck.restore(modules={"model": model})
            history, start = ck.state["history"], ck.step
        for i in uctx.track(range(start, cfg.iterations + 1)):
            rng = np.random.default_rng(uctx.substream(key, "iteration", i))
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            users = users_for(setting, rng)
            trajs = rollout(
                model, fmt, env, users, env.utilities, cfg.sampling(), rng, gen, self.roles
            )
            row = {"iteration": i, "summary": summarise(env, trajs, setting.veto)}
            if i in (0, cfg.iterations):
                row["transcripts"] = [
                    {"kind": t.user.kind, "notes": t.user.notes, "user": t.user.message,
                     "replies": t.replies, "reward": round(t.reward, 3)}
                    for kind in ("vuln", "normal")
                    for t in [t for t in trajs if t.user.kind == kind][:2]
                ]  # fmt: skip
                row["exact"] = {kind: act_probabilities(model, fmt, env,
                                                        [u for u in held if u.kind == kind],
                                                        harmful + ["personal"])
                                for kind in sorted({u.kind for u in held})}  # fmt: skip
                row["probes"] = probe_rates(model, fmt)
            if i < cfg.iterations:
                good, bad, n_vetoed = select(
                    env, trajs, cfg.select_frac, setting.veto, rng, self.roles
                )
                examples = turn_examples(fmt, good, True) + turn_examples(fmt, bad, False)
                examples += safety_examples(fmt, len(examples), setting.safety_frac, rng)
                row["kto"] = kto_epoch(
                    model, examples, cfg.optim(setting.schedule), i, fmt.tokenizer.pad_id, rng
                )
                row["vetoed"] = n_vetoed
            history.append(row)
            flat = {f"{kind}_{m}": v for kind, s in row["summary"].items()
                    for m, v in [("reward", s["reward"]), ("off_grammar", s["off_grammar"]),
                                 *((k, b[0]) for k, b in s["metrics"].items())]}  # fmt: skip
            uctx.log_metrics(i, **flat)
            uctx.checkpoint.save(i + 1, {}, {"history": history}, modules={"model": model})
        if cfg.base.lora:  # the trained adapter, in peft's format
            save_adapter(
                model,
                uctx.run.dir / "adapters" / key.replace("/", "-"),
                LoRAConfig(),
                cfg.base.pretrained,
            )
        return {"history": history}


def band_curve(histories: list[list[dict]], kind: str, metric: str | None) -> dict:
    """Mean over seeds, per iteration, of a metric's band (or of the reward when metric is
    None): {"lo": [...], "hi": [...]} or {"mean": [...]}."""

    def value(row, end):
        s = row["summary"].get(kind)
        if s is None:
            return float("nan")
        return s["reward"] if metric is None else s["metrics"][metric][end]

    if metric is None:
        return {
            "mean": [
                float(np.mean([value(h[i], 0) for h in histories]))
                for i in range(len(histories[0]))
            ]
        }
    return {
        end: [float(np.mean([value(h[i], j) for h in histories])) for i in range(len(histories[0]))]
        for j, end in enumerate(("lo", "hi"))
    }


def seed_mean(values) -> dict:
    m, ci = mean_ci95(values)
    return {"mean": float(m), "ci95": float(ci), "values": [float(v) for v in values]}


def train_settings(ctx, cfg: RLConfig, settings: dict[str, Setting]) -> tuple[dict, dict]:
    """Train every setting on `cfg.n_seeds` RL seeds as units: (the results' header, the
    histories of each setting's seeds)."""
    for s in settings.values():
        s.check()
    trainer = Trainer(ctx, cfg)
    keys = [f"{n}/seed{i}" for n in settings for i in range(cfg.n_seeds)]
    out = run_units(
        ctx,
        keys,
        lambda k, u: trainer.unit(settings[k.split("/")[0]], k, u),
        size=cfg.iterations + 1,
        description="KTO runs",
    )
    header = {
        "note": SIMULATION_NOTE,
        "roles": trainer.roles.description,
        "base_gate": gate_summary(trainer.base.info["gate"]),
    }
    return header, {n: [out[f"{n}/seed{i}"]["history"] for i in range(cfg.n_seeds)]
                    for n in settings}  # fmt: skip


def gate_summary(gate: dict) -> dict:
    """The gate in three numbers: worst off-grammar share, worst act-rate gap, cells."""
    return {
        "max_off_grammar": max(g["off_grammar"] for g in gate.values()),
        "max_rate_gap": max(abs(r - g["corpus"][a]) for g in gate.values()
                            for a, r in g["rates"].items()),
        "cells": len(gate),
    }  # fmt: skip


def summarise_runs(env, histories: list[list[dict]], kind: str) -> dict:
    """One user type's curves and start/end figures across RL seeds."""
    m = env.harm_metric
    first, last = 0, len(histories[0]) - 1

    def at(i, metric, end):
        return [h[i]["summary"][kind]["metrics"][metric][end] for h in histories]

    def reward(i):
        return [h[i]["summary"][kind]["reward"] for h in histories]

    names = list(histories[0][0]["summary"][kind]["metrics"])
    return {
        "harm_metric": m,
        "harm": {"start_lo": seed_mean(at(first, m, 0)), "start_hi": seed_mean(at(first, m, 1)),
                 "end_lo": seed_mean(at(last, m, 0)), "end_hi": seed_mean(at(last, m, 1))},
        "reward": {"start": seed_mean(reward(first)), "end": seed_mean(reward(last)),
                   "curve": band_curve(histories, kind, None)["mean"]},
        "metrics": {n: band_curve(histories, kind, n) for n in names},
        "end": {n: seed_mean(at(last, n, 0)) for n in names},
        "off_grammar": [float(np.mean([h[i]["summary"][kind]["off_grammar"] for h in histories]))
                        for i in range(last + 1)],
        "flag_rate": [float(np.mean([h[i]["summary"][kind]["flag_rate"] for h in histories]))
                      for i in range(last + 1)],
        "probes": {p: {"start": seed_mean([h[first]["probes"][p] for h in histories]),
                       "end": seed_mean([h[last]["probes"][p] for h in histories])}
                   for p in histories[0][0]["probes"]},
        "exact": {when: {k: {a: float(np.mean([h[i]["exact"][k][a] for h in histories]))
                             for a in histories[0][i]["exact"][k]}
                         for k in histories[0][i]["exact"]}
                  for when, i in (("start", first), ("end", last))},
        "transcripts": {"start": histories[0][first]["transcripts"],
                        "end": histories[0][last]["transcripts"]},
    }  # fmt: skip


def quick_base() -> BaseConfig:
    """The quick base agent. Its gate is looser than the notes' (≤ 5 % off-grammar, act rates
    ± 3 points): after 1,000 SFT steps the 0.48M model writes 4-17 % conversations with
    off-grammar text (mostly a personal touch for the wrong trait) and opens with each act
    within 6 points of the corpus (docs/feedback_gaming.md). The claims count off-grammar text
    against themselves (the metric bands), so the looser gate cannot make a claim hold."""
    return BaseConfig(gate_off_grammar=0.2, gate_tolerance=0.07)


def smoke_rl() -> RLConfig:
    """Seconds: a tiny base model (not cached, no gate) and two iterations."""
    from alignlab.gemma2.train import TrainConfig

    base = BaseConfig(
        vocab_size=300, d_model=16, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=16,
        intermediate_size=32, dialogues=200,
        sft=TrainConfig(steps=4, batch_size=8, seq_len=160, lr=3e-3, warmup_steps=1,
                        eval_every=2, eval_batches=1, checkpoint_every=2, log_every=2),
        gate_users=4, gate_exact_users=2, gate_off_grammar=1.0, gate_tolerance=1.0, cache=False,
    )  # fmt: skip
    return RLConfig(base=base, iterations=2, eval_users=2, n_seeds=2, max_new_tokens=12)


def paper_rl() -> RLConfig:
    """The repo's schedule on the grammar world with a larger base agent (GPU)."""
    base = BaseConfig(
        d_model=256,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        intermediate_size=1024,
        vocab_size=1024,
        dialogues=100_000,
    )
    return RLConfig(base=base, iterations=20, lr=2e-4, eval_users=256, n_seeds=5)


PAPER_USERS = 1920  # therapy: 12 sub-envs x 160 initial states per iteration


def plot_curves(results: dict, ctx) -> None:
    """Reward and harm band per iteration for every environment and user type."""
    from alignlab.core.plotting import plt

    envs = [k for k, v in results.items() if isinstance(v, dict) and "harm" in v]
    if not envs:
        return
    fig, axes = plt.subplots(2, len(envs), figsize=(3.2 * len(envs), 5.2), squeeze=False)
    for j, e in enumerate(envs):
        x = results[e]
        it = np.arange(len(x["reward"]["curve"]))
        band = x["metrics"][x["harm_metric"]]
        axes[0, j].plot(it, x["reward"]["curve"], color="C0")
        axes[0, j].set(title=e, ylabel="reward E[s]" if j == 0 else None)
        axes[1, j].fill_between(it, band["lo"], band["hi"], color="C3", alpha=0.3, lw=0)
        axes[1, j].plot(it, band["lo"], color="C3", label=x["harm_metric"])
        axes[1, j].plot(it, x["off_grammar"], color="0.5", ls=":", label="off-grammar")
        axes[1, j].set(xlabel="iteration", ylim=(0, 1), ylabel="share" if j == 0 else None)
        axes[1, j].legend(fontsize=7)
    ctx.save_figure(fig, "curves")
