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
