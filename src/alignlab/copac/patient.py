"""The patient: an injured brain acting in the world, driven through its stimulation channels.

`PatientEnv` is the coprocessor's environment (`brain_envs/sac_coproc.py`,
`SACCoprocessorWrapper`): observation = the world state s (the coprocessor sees s only),
action = the stimulation x in [-5, 5]^k, and each step the brain maps (s, x) to a scaled world
action a in [-1, 1]^|A|, which the world executes after unscaling. `info["world_action"]`
reports a, the label f is fitted to.

`Evaluator` runs greedy test episodes of any stimulation policy on a separate patient copy, on
test seeds shared by every method, all test episodes in lockstep so that a policy sees a batch
of states per step.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from alignlab.copac.brain import STIM_HIGH, STIM_LOW
from alignlab.copac.envs import make_world, to_env_action


class PatientEnv(gym.Env):
    """The coprocessor's view of the world through an injured, stimulable brain."""

    metadata = {"render_modes": []}

    def __init__(self, world: str, brain):
        self.world_name = world
        self.world = make_world(world)
        self.brain = brain
        self.observation_space = self.world.observation_space
        self.action_space = gym.spaces.Box(STIM_LOW, STIM_HIGH, (brain.stim_dim,), np.float32)
        self.spec = self.world.spec
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs, info = self.world.reset(seed=seed, options=options)
        self.brain.reset(1)
        return self._obs, info

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        x = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), STIM_LOW, STIM_HIGH)
        obs = torch.as_tensor(self._obs, dtype=torch.float32)[None]
        a = self.brain.act(obs, torch.as_tensor(x)[None])[0].numpy()
        self._obs, r, term, trunc, info = self.world.step(to_env_action(a, self.world.action_space))
        info = {**info, "world_action": a.astype(np.float32)}
        return self._obs, float(r), term, trunc, info

    def close(self):
        self.world.close()


class Evaluator:
    """Greedy test returns of a stimulation policy on the test seeds (one episode each)."""

    def __init__(self, world: str, brain, seeds: list[int]):
        self.seeds = [int(s) for s in seeds]
        self.worlds = [make_world(world) for _ in self.seeds]
        self.brain = brain

    def __call__(self, policy: Callable[[torch.Tensor], torch.Tensor]) -> list[float]:
        """policy(states (B, d)) -> stimulations (B, k); returns each test episode's return.

        The brain acts for every episode each tick (a recurrent brain keeps one state per
        episode); an episode that has ended keeps its last state and is no longer stepped. A
        recurrent brain's state from before the tests (a patient episode under way) is put
        back afterwards."""
        snapshot = getattr(self.brain, "snapshot", lambda: None)()  # a training episode's state
        obs = [w.reset(seed=s)[0] for w, s in zip(self.worlds, self.seeds)]
        self.brain.reset(len(self.worlds))
        totals = np.zeros(len(self.worlds))
        live = np.ones(len(self.worlds), dtype=bool)
        while live.any():
            states = torch.as_tensor(np.stack(obs), dtype=torch.float32)
            with torch.no_grad():
                x = policy(states)
                a = self.brain.act(states, x.to(torch.float32)).numpy()
            for i in np.flatnonzero(live):
                w = self.worlds[i]
                obs[i], r, term, trunc, _ = w.step(to_env_action(a[i], w.action_space))
                totals[i] += r
                live[i] = not (term or trunc)
        if snapshot is not None:
            self.brain.restore(snapshot)
        return totals.tolist()

    def close(self):
        for w in self.worlds:
            w.close()
