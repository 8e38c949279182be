"""A tiny training experiment for testing the core: SGD on a linear regression.

It checkpoints every `checkpoint_every` steps and can crash on purpose at `crash_at`, so
tests can check that a resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.core.claims import Claim
from alignlab.core.experiment import Experiment, register


@dataclass
class ToyConfig:
    steps: int = 40
    lr: float = 0.1
    dim: int = 3
    batch: int = 8
    checkpoint_every: int = 10
    sleep_s: float = 0.0  # per step, to make runs slow enough to kill mid-sweep
    label: str = "toy"

    def validate(self):
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")


class Crash(RuntimeError):
    pass


CRASH_AT = -1  # tests set this to simulate a crash (a kill) at a given step


def run_toy(ctx) -> dict:
    cfg: ToyConfig = ctx.config
    w_true = torch.arange(1, cfg.dim + 1, dtype=torch.float32)
    w = torch.zeros(cfg.dim)
    start = 0
    ckpt = ctx.checkpoint.load()
    if ckpt is not None:
        w, start = ckpt.tensors["w"], ckpt.step
    losses = []
    for step in ctx.track(range(start, cfg.steps), total=cfg.steps - start, description="toy"):
        if step == CRASH_AT:
            raise Crash(f"crash at step {step}")
        time.sleep(cfg.sleep_s)
        x = torch.randn(cfg.batch, cfg.dim)
        # noise from both the run's Generator and numpy's global stream: resume restores both
        noise = ctx.rng.normal(size=cfg.batch) + np.random.standard_normal(cfg.batch)
        noise = torch.from_numpy(noise).float() * 0.01
        y = x @ w_true + noise
        grad = 2 * x.T @ (x @ w - y) / cfg.batch
        w = w - cfg.lr * grad
        loss = float(((x @ w - y) ** 2).mean())
        losses.append(loss)
        ctx.log_metrics(step + 1, loss=loss)
        if (step + 1) % cfg.checkpoint_every == 0:
            ctx.checkpoint.save(step + 1, {"w": w})
    all_losses = [m["loss"] for m in ctx.metrics()]
    return {"w": w.tolist(), "final_loss": all_losses[-1], "loss_curve": all_losses}


TOY = register(
    Experiment(
        name="toy.regression",
        paper="(test fixture)",
        description="SGD on linear regression",
        config=ToyConfig,
        presets={
            "smoke": ToyConfig(steps=20),
            "quick": ToyConfig(),
            "paper": ToyConfig(steps=200),
        },
        run=run_toy,
        claims=[
            Claim(
                "converges",
                "SGD drives the loss below 0.01",
                lambda r: (r["final_loss"], r["final_loss"] < 0.01),
            )
        ],
    )
)


@dataclass
class SeededConfig:
    draws: int = 1000
    fail_seed: int = 1  # the claim is made to fail on this seed only

    def validate(self):
        if self.draws <= 0:
            raise ValueError(f"draws must be positive, got {self.draws}")


def run_seeded(ctx) -> dict:
    """A mean of uniform draws (≈ 0.5 on every seed), and a check that fails on one seed."""
    draws = ctx.rng.uniform(size=ctx.config.draws)
    ctx.log_metrics(1, mean=float(draws.mean()))
    return {"mean": float(draws.mean()), "seed": ctx.seed, "fail_seed": ctx.config.fail_seed}


SEEDED = register(
    Experiment(
        name="toy.seeded",
        paper="(test fixture)",
        description="A claim that holds on every seed but one",
        config=SeededConfig,
        presets={p: SeededConfig() for p in ("smoke", "quick", "paper")},
        run=run_seeded,
        claims=[
            Claim(
                "not_the_fail_seed",
                "The run's seed is not the configured fail_seed",
                lambda r: (f"seed {r['seed']}", r["seed"] != r["fail_seed"]),
                figure=lambda r: r["mean"],
            ),
            Claim(
                "mean_near_half",
                "The mean of uniform draws is within 0.1 of 0.5",
                lambda r: (r["mean"], abs(r["mean"] - 0.5) < 0.1),
                figure=lambda r: {"mean": r["mean"], "seed": r["seed"]},
            ),
        ],
    )
)
