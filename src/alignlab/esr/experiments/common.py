"""What the ESR experiments share: labels and colours, the smoke settings, training a unit's
robot, and the claim that one method beats another on every setting."""

from __future__ import annotations

from typing import Any

from alignlab.core.stats import welch_diff_ci95

from ..agent import AgentConfig
from ..train import LoopConfig, train_assistant

PAPER = "Myers et al. 2024, Learning to Assist Humans without Inferring Rewards (ESR), NeurIPS 2024"
TRAINED = ("esr", "ave")
LABELS = {"esr": "ESR", "ave": "AvE", "random": "Random", "goal_inference": "Goal inference"}
COLORS = {"esr": "C0", "ave": "C1", "random": "C7", "goal_inference": "C2"}

SMOKE_LOOP = LoopConfig(
    epochs=3,
    num_envs=4,
    warmup_epochs=1,
    repr_updates=2,
    q_updates=2,
    dual_updates=1,
    eval_episodes=4,
    log_every=1,
    checkpoint_every=2,
)
SMOKE_AGENT = AgentConfig(batch_size=16, hidden=(16, 16), repr_dim=8, ave_rollouts=4, ave_length=2)


def paper_loop(q_updates: int, buffer_epochs: int) -> LoopConfig:
    """The authors' schedule (ESR notes, "Gridworld defaults"): 10,000 epochs of 100 envs, 100
    contrastive and dual updates an epoch, no warm-up, the updates in their order (all
    contrastive steps, then the critic's, then the dual ones: `agents/base.py`, `Base.update`,
    which `train_grid.py` and `train_overcooked.py` both call); the critic's updates and the
    buffer differ between the gridworld and Overcooked."""
    return LoopConfig(
        epochs=10_000, num_envs=100, warmup_epochs=0, repr_updates=100, q_updates=q_updates,
        dual_updates=100, buffer_epochs=buffer_epochs, log_every=100, checkpoint_every=250,
        schedule="paper",
    )  # fmt: skip


def train_or_not(method: str, make, agent, loop, uctx, *stream) -> tuple[Any, dict]:
    """Train ESR/AvE in the unit `uctx` (its metric lines, progress and checkpoints), seeded
    from the stream (run seed, *stream); nothing for the untrained robots. Returns the trained
    output (None) and what goes into the unit's result (the curves)."""
    if method not in TRAINED:
        uctx.advance(loop.epochs)
        return None, {}
    out = train_assistant(method, make, agent, loop, (uctx.seed, *stream), ctx=uctx)
    # timings go to the metrics log, not the results (which a seed must fix to the byte)
    uctx.log_metrics(
        loop.epochs, train_time_s=out["train_time_s"], updates_per_s=out["updates_per_s"]
    )
    return out, {"curve": out["curve"], "mi_curve": out["mi_curve"]}


def beats_on_every(pairs: list[tuple[str, list[float], list[float]]]) -> tuple[str, bool]:
    """("k: d ± h; ...", holds): the lower end of the 95% Welch interval of mean(a) − mean(b)
    is above 0 for every (label, a, b)."""
    rows, ok = [], bool(pairs)
    for label, a, b in pairs:
        d, half = welch_diff_ci95(a, b)
        ok &= d - half > 0
        rows.append(f"{label}: {d:+.1f} ± {half:.1f}")
    return "; ".join(rows), bool(ok)
