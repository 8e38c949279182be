"""The tiny ESR settings the training-loop tests share: seconds per run, every code path."""

from alignlab.esr.agent import AgentConfig
from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.train import LoopConfig


def tiny_agent() -> AgentConfig:
    return AgentConfig(repr_dim=4, hidden=(16,), batch_size=16, ave_rollouts=3, ave_length=2)


def tiny_loop(**kw) -> LoopConfig:
    """A few epochs of 4 envs; `kw` overrides any field."""
    return LoopConfig(**{**dict(epochs=3, num_envs=4, warmup_epochs=1, repr_updates=3,
                                q_updates=2, dual_updates=1, log_every=1, buffer_epochs=2), **kw})  # fmt: skip


def tiny_make(n: int) -> VecGridWorld:
    return VecGridWorld(n, 5, 2, 0.2, 10)
