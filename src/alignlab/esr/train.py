"""Training and evaluating an assistant in a vectorised two-player environment (Algorithm 1).

One epoch (ESR notes, "One epoch"): roll out `num_envs` episodes in lockstep, the human
moving first, then the robot; append them to the replay buffer; then the updates. The paper's
code runs all `repr_updates` contrastive steps, then all `q_updates` critic steps; here they
alternate on shared batches: iteration i draws one batch, takes contrastive step i (whose
forward pass gives the batch's reward, computed before the step) and critic step i on that
reward. Then `dual_updates` precision steps.

An environment is any object with the `VecGridWorld` / `VecOvercooked` interface: reset(rng),
observe(), human_act(rng), step(robot_action, human_action) -> reward, get_state/set_state,
empowerment_features(), num_envs, horizon, obs_dim, robot_actions, human_actions,
noop_robot_action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignlab.rl import EpisodeDataset, to_torch

from .agent import AgentConfig, ESRRepresentation, GoalPosterior, QLearner, ave_reward


@dataclass
class LoopConfig:
    """How much experience and how many updates (ESR notes, "Scaled-down settings")."""

    epochs: int = 300
    num_envs: int = 32
    # the first epochs act uniformly at random (as SAC's start steps), so the representation
    # sees the human move freely before the entropy-tuned policy commits to anything
    warmup_epochs: int = 50
    repr_updates: int = 20  # per epoch
    q_updates: int = 20
    dual_updates: int = 5
    buffer_epochs: int = 5  # the replay buffer holds this many epochs of episodes
    eval_episodes: int = 128
    log_every: int = 10  # epochs

    def validate(self) -> None:
        for name in ("epochs", "num_envs", "buffer_epochs", "eval_episodes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs}): the "
                "learned policy would never act"
            )
        for name in ("warmup_epochs", "repr_updates", "q_updates", "dual_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ---- robots ------------------------------------------------------------------------------


class RandomRobot:
    """Uniform over the robot's actions."""

    def begin(self, env) -> None:
        pass

    def act(self, env, obs, rng) -> np.ndarray:
        return rng.integers(env.robot_actions, size=env.num_envs)

    def observe_human(self, env, human_action) -> None:
        pass


class LearnedRobot:
    """The Boltzmann policy of a trained critic (ESR or AvE)."""

    def __init__(self, learner: QLearner):
        self.learner = learner

    def begin(self, env) -> None:
        pass

    def act(self, env, obs, rng) -> np.ndarray:
        return self.learner.act(obs, rng)

    def observe_human(self, env, human_action) -> None:
        pass


class GoalInferenceRobot:
    """Reward/goal inference with an oracle goal set (gridworld): a Bayesian posterior over
    every cell from the human's actions (`GoalPosterior`), then the push that helps the
    noise-free human model reach the MAP goal soonest (`plan_for_goal`)."""

    def begin(self, env) -> None:
        self.posterior = GoalPosterior.uniform(env.num_envs, env.size)

    def act(self, env, obs, rng) -> np.ndarray:
        return plan_for_goal(env, self.posterior.map_goal())

    def observe_human(self, env, human_action) -> None:
        self.posterior.update(env, human_action, ~env.frozen())


def plan_for_goal(env, goal: np.ndarray, lookahead: int | None = None) -> np.ndarray:
    """(N,) the robot action (idle, or one of the 4 pushes of each box) after which the greedy
    human (noise 0) reaches `goal` in the fewest steps, simulated for `lookahead` steps
    (default 2 * size). Crushing the human costs most; a push to a cell the human could step
    into this turn (it moves first) costs `lookahead` extra; ties go to idling."""
    from .gridworld import VecGridWorld

    N, K, n = env.num_envs, env.num_boxes, env.size
    L = 2 * n if lookahead is None else lookahead
    cells = env.boxes[..., 0] * n + env.boxes[..., 1]  # (N, K)
    cand = np.concatenate(
        [
            np.full((N, 1), env.noop_robot_action),
            (cells[:, :, None] * 5 + np.arange(4)).reshape(N, -1),
        ],
        axis=1,
    )  # (N, C)
    C = cand.shape[1]
    sim = VecGridWorld(N * C, n, K, 0.0, L + 1, env.start, env.stay_bonus)
    state = env.get_state()
    sim.set_state(
        {
            "human": np.repeat(state["human"], C, 0),
            "boxes": np.repeat(state["boxes"], C, 0),
            "goal": np.repeat(goal, C, 0),
            "dead": np.repeat(state["dead"], C, 0),
        }
    )
    sim.step(cand.reshape(-1), np.full(N * C, 4))  # the push, the human staying
    changed = np.any(sim.boxes != np.repeat(state["boxes"], C, 0), axis=2)  # (N C, K)
    beside = np.abs(sim.boxes - sim.human[:, None]).sum(-1) == 1
    risky = (changed & beside).any(axis=1)
    cost = np.full(N * C, float(L + 1))
    reached = sim.at_goal()
    cost[reached] = 0
    for step in range(1, L + 1):
        sim.step(np.full(N * C, sim.noop_robot_action), sim.greedy_human_action())
        newly = sim.at_goal() & ~reached
        cost[newly] = step
        reached |= newly
    cost += np.where(sim.dead, 100.0 * L, 0.0) + np.where(risky, float(L), 0.0)
    return cand[np.arange(N), np.argmin(cost.reshape(N, C), axis=1)]


# ---- episodes -----------------------------------------------------------------------------


def rollout(env, robot, rng: np.random.Generator, ave: Callable | None = None) -> dict[str, Any]:
    """One lockstep episode in every env: obs (N, T+1, D), robot/human actions (N, T), env
    rewards (N, T), AvE proxy rewards of s_{t+1} (N, T) when `ave` is given, and per-episode
    statistics (return, crushed/dead rate, the human's own reward where the env keeps it)."""
    env.reset(rng)
    robot.begin(env)
    N, T = env.num_envs, env.horizon
    obs = np.zeros((N, T + 1, env.obs_dim), dtype=np.float32)
    a_r = np.zeros((N, T), dtype=np.int64)
    a_h = np.zeros((N, T), dtype=np.int64)
    rew = np.zeros((N, T), dtype=np.float32)
    proxy = np.zeros((N, T), dtype=np.float32) if ave is not None else None
    for t in range(T):
        o = env.observe()
        obs[:, t] = o
        a_h[:, t] = env.human_act(rng)
        a_r[:, t] = robot.act(env, o, rng)
        robot.observe_human(env, a_h[:, t])
        rew[:, t] = env.step(a_r[:, t], a_h[:, t])
        if ave is not None:
            proxy[:, t] = ave(env.get_state(), rng)
    obs[:, T] = env.observe()
    stats = {"return": rew.sum(1)}
    if hasattr(env, "dead"):
        stats["crushed"] = env.dead.astype(np.float64)
    if hasattr(env, "delivered"):
        stats["human_return"] = env.delivered[:, 1] * float(env.delivery_reward)
        stats["robot_deliveries"] = env.delivered[:, 0].astype(np.float64)
    return {"obs": obs, "a_r": a_r, "a_h": a_h, "reward": rew, "proxy": proxy, "stats": stats}


def evaluate(make_env, robot, episodes: int, num_envs: int, rng) -> dict[str, float]:
    """Mean episode statistics of `robot` over at least `episodes` fresh episodes."""
    env = make_env(num_envs)
    acc: dict[str, list] = {}
    for _ in range(-(-episodes // num_envs)):
        for k, v in rollout(env, robot, rng)["stats"].items():
            acc.setdefault(k, []).append(v)
    return {k: float(np.concatenate(v).mean()) for k, v in acc.items()}


def _add_to_buffer(buffer: EpisodeDataset, ep: dict) -> None:
    N, T1, D = ep["obs"].shape
    actions = np.stack([ep["a_r"], ep["a_h"]], axis=-1)  # (N, T, 2)
    actions = np.concatenate([actions, actions[:, -1:]], axis=1)  # the last state repeats
    reward = ep["proxy"] if ep["proxy"] is not None else ep["reward"]
    reward = np.concatenate([reward, np.zeros((N, 1), np.float32)], axis=1)
    buffer.add_arrays(
        ep["obs"].reshape(N * T1, D), actions.reshape(N * T1, 2), [T1] * N, reward.reshape(-1)
    )


def train_assistant(
    method: str,
    make_env: Callable[[int], Any],
    agent: AgentConfig,
    loop: LoopConfig,
    seed,
    log: Callable[..., None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train an ESR or AvE assistant; returns the learner, the training curve and timings.

    `seed` seeds torch's initialisation and the numpy Generator of rollouts and batches, so
    the same seed gives the same assistant. `log(epoch, **metrics)` is called every
    `log_every` epochs; `advance(1)` after every epoch.
    """
    if method not in ("esr", "ave"):
        raise ValueError(f"train_assistant trains 'esr' or 'ave', got {method!r}")
    agent.validate()
    loop.validate()
    ss = np.random.SeedSequence(seed)
    torch.manual_seed(int(ss.generate_state(1)[0]))
    rng = np.random.default_rng(ss.spawn(1)[0])
    env = make_env(loop.num_envs)
    learner = QLearner(env.obs_dim, env.robot_actions, agent)
    rep = (
        ESRRepresentation(env.obs_dim, env.robot_actions, env.human_actions, agent)
        if method == "esr"
        else None
    )
    sim = make_env(1) if method == "ave" else None  # AvE's simulator, built once
    ave = (lambda state, r: ave_reward(sim, state, r, agent)) if method == "ave" else None
    buffer = EpisodeDataset(capacity=loop.buffer_epochs * loop.num_envs * (env.horizon + 1))
    robot, warmup = LearnedRobot(learner), RandomRobot()
    info: dict[str, list[float]] = {}  # update metrics since the last log line
    curve, mi_curve, window = [], [], {}
    t0 = time.perf_counter()
    t_updates = 0.0
    n_updates = 0
    for epoch in range(loop.epochs):
        ep = rollout(env, warmup if epoch < loop.warmup_epochs else robot, rng, ave)
        _add_to_buffer(buffer, ep)
        for k, v in ep["stats"].items():
            window.setdefault(k, []).append(float(v.mean()))
        tu = time.perf_counter()
        n_repr = loop.repr_updates if rep is not None else 0
        for i in range(max(n_repr, loop.q_updates)):
            b = to_torch(buffer.sample(agent.batch_size, rng, agent.gamma))
            s, a_r, a_h = b["obs"], b["action"][:, 0], b["action"][:, 1]
            r = b["reward"]  # AvE's stored proxy
            if i < n_repr:  # ESR: the reward comes from the current representation
                step_info, r = rep.update(s, a_r, a_h, b["goal"])
                _accumulate(info, step_info)
            elif rep is not None:
                r = rep.reward(s, a_r, a_h, b["goal"])
            if i < loop.q_updates:
                _accumulate(info, learner.q_update(s, a_r, r, b["next_obs"]))
        for _ in range(loop.dual_updates):
            b = buffer.sample(agent.batch_size, rng, agent.gamma)
            _accumulate(info, learner.dual_update(torch.as_tensor(b["obs"])))
        t_updates += time.perf_counter() - tu
        n_updates += max(n_repr, loop.q_updates)  # one update = one iteration of the loop
        if advance is not None:
            advance(1)
        if (epoch + 1) % loop.log_every == 0 or epoch + 1 == loop.epochs:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            window = {}
            updates = {k: float(np.mean(v)) for k, v in info.items()}
            info = {}
            curve.append([epoch + 1, means["return"]])
            if "mutual_info" in updates:
                mi_curve.append([epoch + 1, updates["mutual_info"]])
            if log is not None:
                log(epoch + 1, **{f"train_{k}": v for k, v in means.items()}, **updates)
    elapsed = time.perf_counter() - t0
    return {
        "learner": learner,
        "representation": rep,
        "curve": curve,
        "mi_curve": mi_curve,
        "seconds": elapsed,
        "updates_per_s": n_updates / max(t_updates, 1e-9),
    }


def _accumulate(acc: dict[str, list[float]], values: dict[str, float]) -> None:
    for k, v in values.items():
        acc.setdefault(k, []).append(v)


def robot_for(method: str, trained: dict | None = None):
    """The acting robot of a method: trained learners act with their Boltzmann policy."""
    if method == "random":
        return RandomRobot()
    if method == "goal_inference":
        return GoalInferenceRobot()
    return LearnedRobot(trained["learner"])
