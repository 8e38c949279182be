"""ESR: assistance by empowerment with contrastive successor representations.

Myers, Ellis, Levine, Eysenbach, Dragan, "Learning to Assist Humans without Inferring Rewards",
NeurIPS 2024 (arXiv 2411.02623; notes in shared/papers/esr.md).

- `gridworld` / `gridworld_env`: the obstacle gridworld, vectorised and as a gymnasium env.
- `overcooked`: a compact vectorised Overcooked with a scripted noisy human, a gymnasium env
  and a PettingZoo-style parallel API.
- `agent`: ESR's contrastive representation and reward, the Q-learner with an entropy-tuned
  Boltzmann policy, AvE's empowerment proxy, Bayesian goal inference.
- `train`: the training loop (Algorithm 1), rollouts, evaluation, the baseline robots.
- `experiments`: `esr.gridworld` and `esr.overcooked`.
"""

from .agent import METHODS, AgentConfig, ESRRepresentation, GoalPosterior, QLearner, ave_reward
from .gridworld import VecGridWorld
from .gridworld_env import GridWorldEnv
from .overcooked import LAYOUTS, OvercookedEnv, OvercookedParallelEnv, ScriptedHuman, VecOvercooked
from .train import LoopConfig, evaluate, rollout, train_assistant

__all__ = [
    "LAYOUTS",
    "METHODS",
    "AgentConfig",
    "ESRRepresentation",
    "GoalPosterior",
    "GridWorldEnv",
    "LoopConfig",
    "OvercookedEnv",
    "OvercookedParallelEnv",
    "QLearner",
    "ScriptedHuman",
    "VecGridWorld",
    "VecOvercooked",
    "ave_reward",
    "evaluate",
    "rollout",
    "train_assistant",
]
