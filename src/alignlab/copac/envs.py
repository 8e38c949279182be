"""The worlds a coprocessor works in: gymnasium tasks with Box observations and actions.

The quick presets use Pendulum-v1 (classic control) and Reacher-v5 (MuJoCo, the `mujoco`
extra); the paper preset adds InvertedDoublePendulum-v5, Swimmer-v5 and
LunarLanderContinuous-v3 (Box2D), the gym tasks of the official code's `configs/`
(`coprocessors/utils/setup_env.py`), at their gymnasium 1.x versions, and MyoSuite's
myoHandReachFixed-v0 (the `myo` extra; not exercised by this project's tests, which run
without MyoSuite). Every world runs headless: nothing is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class World:
    """A world's name, its episode length and the extra it needs."""

    name: str
    max_steps: int
    extra: str | None = None  # the pip extra that brings its simulator


WORLDS: dict[str, World] = {
    w.name: w
    for w in (
        World("Pendulum-v1", 200),
        World("Reacher-v5", 50, "mujoco"),
        World("InvertedDoublePendulum-v5", 1000, "mujoco"),
        World("Swimmer-v5", 1000, "mujoco"),
        World("LunarLanderContinuous-v3", 1000, "box2d"),
        # MyoSuite's hand (the paper's Michaels-brain task); registered by `import myosuite`,
        # which pins gymnasium < 1.3, so it lives in its own venv (the `myo` extra)
        World("myoHandReachFixed-v0", 100, "myo"),
    )
}


def check_world(name: str) -> World:
    """The world called `name`, or one ValueError naming the valid worlds."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; valid worlds: {', '.join(WORLDS)}")
    return WORLDS[name]


def make_world(name: str) -> gym.Env:
    """A fresh gymnasium env for the world `name` (Box observations and actions checked), or
    one error that names what is missing."""
    world = check_world(name)
    if world.extra == "myo":
        try:
            import myosuite  # noqa: F401  (registers the myo* envs)
        except ImportError as e:
            raise RuntimeError(
                f"{name} needs MyoSuite: pip install 'alignlab[myo]' in a separate venv "
                f"(myosuite 3.0.0 pins gymnasium < 1.3)"
            ) from e
    try:
        env = gym.make(name)
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise RuntimeError(
            f"{name} needs the {world.extra!r} extra: pip install 'alignlab[{world.extra}]' ({e})"
        ) from e
    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gym.spaces.Box):
            env.close()
            raise ValueError(f"{name}: the {what} space must be a Box, got {space}")
    return env


def to_env_action(scaled: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """[-1, 1] -> the env's action box (SB3's `unscale_action`)."""
    low, high = space.low, space.high
    return (low + 0.5 * (np.asarray(scaled) + 1.0) * (high - low)).astype(space.dtype)
