"""ESR: assistance by empowerment with contrastive successor representations.

Myers, Ellis, Levine, Eysenbach, Dragan, "Learning to Assist Humans without Inferring Rewards",
NeurIPS 2024 (arXiv 2411.02623; notes in shared/papers/esr.md).

- `gridworld` / `gridworld_env`: the obstacle gridworld, vectorised and as a gymnasium env.
- `overcooked`: a compact vectorised Overcooked (layouts, rules, `VecOvercooked`);
  `overcooked_human`: the scripted noisy human; `overcooked_env`: the gymnasium reference env
  and a PettingZoo-style parallel API.
- `agent`: ESR's contrastive representation and reward, the Q-learner with an entropy-tuned
  Boltzmann policy, AvE's empowerment proxy, Bayesian goal inference.
- `train`: the training loop (Algorithm 1, resumable from a checkpoint), the replay buffer,
  rollouts, evaluation, the baseline robots.
- `experiments`: `esr.gridworld` and `esr.overcooked`, one module each.
"""

from .agent import METHODS, AgentConfig, ESRRepresentation, GoalPosterior, QLearner, ave_reward
from .gridworld import VecGridWorld
from .gridworld_env import GridWorldEnv
from .overcooked import LAYOUTS, VecOvercooked
from .overcooked_env import OvercookedEnv, OvercookedParallelEnv
from .overcooked_human import AssistedOvercooked, ScriptedHuman
from .train import LoopConfig, ReplayBuffer, evaluate, rollout, train_assistant

__all__ = [
    "LAYOUTS",
    "METHODS",
    "AgentConfig",
    "AssistedOvercooked",
    "ESRRepresentation",
    "GoalPosterior",
    "GridWorldEnv",
    "LoopConfig",
    "OvercookedEnv",
    "OvercookedParallelEnv",
    "QLearner",
    "ReplayBuffer",
    "ScriptedHuman",
    "VecGridWorld",
    "VecOvercooked",
    "ave_reward",
    "evaluate",
    "rollout",
    "train_assistant",
]
