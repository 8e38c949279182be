"""Training and evaluating an assistant in a vectorised two-player environment (Algorithm 1).

One epoch (ESR notes, "One epoch"): roll out `num_envs` episodes in lockstep, the human
moving first, then the robot; append them to the replay buffer; then the updates, in the order
`LoopConfig.schedule` names:
- "interleaved" (the default): the steps alternate on shared batches: iteration i draws one
  batch, takes contrastive step i (whose forward pass gives the batch's reward, computed before
  the step) and critic step i on that reward.
- "paper": the authors' order (agents/base.py, `Base.update`: three `jax.lax.scan`s;
  agents/contrastive.py, `update_repr` and `update_critic`): all `repr_updates` contrastive
  steps, each on its own batch; then all `q_updates` critic steps, each on a fresh batch whose
  reward is recomputed (`ESRRepresentation.reward`) by the representation after all of its
  steps. The authors also start acting with the learned policy at once (train_grid.py,
  `rollout_emp`: no warm-up): `warmup_epochs=0`.
Then `dual_updates` precision steps, each on a fresh batch (both schedules).

Diagnostics (`_diagnostics`), at every metric line, on one batch of `DIAGNOSTIC_BATCH` states
drawn from the replay buffer with a generator of its own (stream (*seed, "diagnostics",
epoch)), so the training's random numbers and results do not change:
- `reward_std`: the standard deviation of ESR's reward r = (phi(s,a_R,a_H) - phi(s,a_R,0))^T
  psi(s+) over the batch, in reward units (what the critic sees);
- `mi_free_minus_trapped`: r / c (the pointwise estimate in nats, c the logit divisor, the
  units of the logged `mutual_info`) averaged over the batch's states whose human is free
  minus over those whose human is trapped or frozen; absent when the batch lacks either;
- `free_share`: the share of the buffer's anchor states whose human is free.
"Free" is the environment's `free_human(obs, episode_end)` (gridworld: alive, an open
neighbouring cell, and it moves at that step or a later one of its episode); environments
without one (Overcooked) log `reward_std` only. The series are returned as `diag_curve`, rows
[epoch, *DIAGNOSTICS] (None where undefined).

Every `checkpoint_every` epochs the training saves all it needs to continue exactly (networks,
optimisers, precision, replay buffer, generator, curves and logging windows) in its context's
checkpoint, and a training whose context holds one continues from it (`train_assistant`).

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

from alignlab.core import config as cfglib
from alignlab.core.config import ConfigError, param
from alignlab.core.context import Context
from alignlab.core.seeding import generator, seed_torch
from alignlab.rl import EpisodeDataset, to_torch

from .agent import AgentConfig, ESRRepresentation, GoalPosterior, QLearner, ave_form, ave_reward

SCHEDULES = ("interleaved", "paper")
#: what a warm-up epoch updates (`LoopConfig.warmup_updates`)
WARMUP_UPDATES = ("all", "representation")
#: the columns of `train_assistant`'s "diag_curve" after the epoch (module docstring)
DIAGNOSTICS = ("mi_free_minus_trapped", "reward_std", "free_share")
#: states per diagnostic batch (one batch per metric line; `_diagnostics`)
DIAGNOSTIC_BATCH = 1024


@dataclass
class LoopConfig:
    """How much experience and how many updates (ESR notes, "Scaled-down settings")."""

    epochs: int = param(300, ge=1, help="epochs: one lockstep rollout in every env, then updates")
    num_envs: int = param(32, ge=1, help="environments rolled out in lockstep per epoch")
    warmup_epochs: int = param(
        50,
        ge=0,
        help="first epochs acting uniformly at random (as SAC's start steps), so the "
        "representation sees the human move freely before the policy commits",
    )
    warmup_updates: str = param(
        "all",
        choices=WARMUP_UPDATES,
        help="updates of a warm-up epoch. all: every update, as after the warm-up; "
        "representation: only contrastive steps (each on its own batch), no critic and no dual "
        "steps, so the precision keeps its initial value until the warm-up ends",
    )
    warmup_repr_updates: int = param(
        0,
        ge=0,
        help="contrastive steps per warm-up epoch with warmup_updates=representation (0: "
        "repr_updates)",
    )
    repr_updates: int = param(20, ge=0, help="contrastive representation steps per epoch")
    q_updates: int = param(20, ge=0, help="critic steps per epoch")
    dual_updates: int = param(5, ge=0, help="precision (dual) steps per epoch")
    schedule: str = param(
        "interleaved",
        choices=SCHEDULES,
        help="order of an epoch's updates. interleaved: contrastive step i and critic step i "
        "share batch i, whose reward comes from the representation before step i; paper: all "
        "contrastive steps, then all critic steps on fresh batches with the reward of the "
        "updated representation (the authors' agents/base.py Base.update); dual steps last",
    )
    buffer_epochs: int = param(5, ge=1, help="epochs of episodes the replay buffer holds")
    eval_episodes: int = param(128, ge=1, help="evaluation episodes per trained robot")
    log_every: int = param(10, ge=1, help="epochs between metric lines")
    checkpoint_every: int = param(25, ge=1, help="epochs between unit checkpoints (resume mid-way)")

    def validate(self) -> None:
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                "warmup_epochs",
                f"must be < epochs ({self.epochs}), got {self.warmup_epochs}: the learned "
                "policy would never act",
            )


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


def rollout(
    env, robot, rng: np.random.Generator, ave: Callable | None = None, ave_of_s_t: bool = False
) -> dict[str, Any]:
    """One lockstep episode in every env: obs (N, T+1, D), robot/human actions (N, T), env
    rewards (N, T), AvE proxy rewards (N, T) when `ave` is given (of s_t, the state acted in,
    with `ave_of_s_t` as the paper's AvE; else of s_{t+1}), and per-episode statistics
    (return, crushed/dead rate, the human's own reward where the env keeps it)."""
    env.reset(rng)
    robot.begin(env)
    N, T = env.num_envs, env.horizon
    obs = np.zeros((N, T + 1, env.obs_dim), dtype=np.float32)
    a_r = np.zeros((N, T), dtype=np.int64)
    a_h = np.zeros((N, T), dtype=np.int64)
    rew = np.zeros((N, T), dtype=np.float32)
    proxy = np.zeros((N, T), dtype=np.float32) if ave is not None else None
    for t in range(T):
        if ave is not None and ave_of_s_t:  # train_grid.py::rollout_emp: r_t = AvE(s_t)
            proxy[:, t] = ave(env.get_state(), rng)
        o = env.observe()
        obs[:, t] = o
        a_h[:, t] = env.human_act(rng)
        a_r[:, t] = robot.act(env, o, rng)
        robot.observe_human(env, a_h[:, t])
        rew[:, t] = env.step(a_r[:, t], a_h[:, t])
        if ave is not None and not ave_of_s_t:
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


class ReplayBuffer(EpisodeDataset):
    """The replay buffer of `train_assistant`: an `EpisodeDataset` of whole lockstep rollouts
    (`add_rollout`) whose contents a checkpoint saves and restores exactly
    (`state_arrays`, `load_state_arrays`)."""

    def add_rollout(self, ep: dict) -> None:
        """Append the N episodes of one `rollout`: state t holds (a_R, a_H) taken there and
        the stored reward of its transition (AvE's proxy if there is one, else the env's);
        the last state repeats the last actions and has reward 0."""
        N, T1, D = ep["obs"].shape
        actions = np.stack([ep["a_r"], ep["a_h"]], axis=-1)  # (N, T, 2)
        actions = np.concatenate([actions, actions[:, -1:]], axis=1)
        reward = ep["proxy"] if ep["proxy"] is not None else ep["reward"]
        reward = np.concatenate([reward, np.zeros((N, 1), np.float32)], axis=1)
        self.add_arrays(
            ep["obs"].reshape(N * T1, D), actions.reshape(N * T1, 2), [T1] * N, reward.reshape(-1)
        )


def train_assistant(
    method: str,
    make_env: Callable[[int], Any],
    agent: AgentConfig,
    loop: LoopConfig,
    seed: int | tuple | list,
    ctx: Context | None = None,
) -> dict[str, Any]:
    """Train an ESR or AvE assistant; returns the learner, the training curves and timings.

    `seed` names the training's random streams (`core.seeding`): an int, or the run seed and
    what is trained, e.g. (run_seed, "esr", 2, 0). Torch's initialisation is seeded from the
    stream (*seed, "init") and rollouts and batches draw from (*seed, "train"), so the same
    seed gives the same assistant.

    `ctx` (optional) is the context this training owns, typically a unit's: a metric line every
    `log_every` epochs (`ctx.log_metrics(epoch, ...)`), progress after every epoch (a unit's
    `advance`), and every `checkpoint_every` epochs a checkpoint in `ctx.checkpoint` of the
    networks, optimisers, precision, replay buffer, generator, curves and logging windows. A
    training whose context holds a checkpoint continues from it and ends exactly as an
    uninterrupted one.
    """
    if method not in ("esr", "ave"):
        raise ValueError(f"train_assistant trains 'esr' or 'ave', got {method!r}")
    cfglib.validate(agent)
    cfglib.validate(loop)
    stream = tuple(seed) if isinstance(seed, (tuple, list)) else (seed,)
    seed_torch(*stream, "init")
    rng = generator(*stream, "train")
    env = make_env(loop.num_envs)
    learner = QLearner(env.obs_dim, env.robot_actions, agent)
    rep = (
        ESRRepresentation(env.obs_dim, env.robot_actions, env.human_actions, agent)
        if method == "esr"
        else None
    )
    sim = make_env(1) if method == "ave" else None  # AvE's simulator, built once
    ave = (lambda state, r: ave_reward(sim, state, r, agent)) if method == "ave" else None
    ave_of_s_t = sim is not None and ave_form(sim, agent) == "paper"  # the paper's: AvE(s_t)
    buffer = ReplayBuffer(capacity=loop.buffer_epochs * loop.num_envs * (env.horizon + 1))
    robot, warmup = LearnedRobot(learner), RandomRobot()
    modules = {"learner": learner, **({"representation": rep} if rep is not None else {})}
    optimizers = {"q": learner.q_opt, **({"representation": rep.opt} if rep is not None else {})}
    # `info`: update metrics since the last metric line; `window`: episode statistics since then
    s: dict[str, Any] = {"epoch": 0, "curve": [], "mi_curve": [], "window": {}, "info": {}}
    s["diag_curve"] = []
    s.update(train_time_s=0.0, update_time_s=0.0, updates=0)
    ck = ctx.checkpoint.load() if ctx is not None else None
    if ck is not None:
        s = ck.state
        buffer.load_state_arrays(
            {k.removeprefix("buffer."): v for k, v in ck.tensors.items() if k[:7] == "buffer."}
        )
        ck.restore(modules=modules, optimizers=optimizers, generators={"rng": rng})
        s.setdefault("diag_curve", [])  # a checkpoint from before the diagnostics
    advance = getattr(ctx, "advance", None)  # a unit's progress
    window, info = s["window"], s["info"]
    t0 = time.perf_counter()
    for epoch in range(s["epoch"], loop.epochs):
        ep = rollout(env, warmup if epoch < loop.warmup_epochs else robot, rng, ave, ave_of_s_t)
        buffer.add_rollout(ep)
        for k, v in ep["stats"].items():
            window.setdefault(k, []).append(float(v.mean()))
        tu = time.perf_counter()
        # a representation-only warm-up epoch: its contrastive steps alone (LoopConfig)
        repr_only = epoch < loop.warmup_epochs and loop.warmup_updates == "representation"
        n_repr = loop.repr_updates if rep is not None else 0
        if repr_only and rep is not None:
            n_repr = loop.warmup_repr_updates or loop.repr_updates
        n_q = 0 if repr_only else loop.q_updates
        n_shared = n_repr  # contrastive steps that share their batch with a critic step
        if loop.schedule == "paper" or repr_only:  # every contrastive step, each on its own batch
            for _ in range(n_repr):
                b = to_torch(buffer.sample(agent.batch_size, rng, agent.gamma))
                a = b["action"]
                _accumulate(info, rep.update(b["obs"], a[:, 0], a[:, 1], b["goal"])[0])
            n_shared = 0  # so every critic batch below takes `reward` of the updated networks
        for i in range(max(n_shared, n_q)):
            b = to_torch(buffer.sample(agent.batch_size, rng, agent.gamma))
            obs, a_r, a_h = b["obs"], b["action"][:, 0], b["action"][:, 1]
            r = b["reward"]  # AvE's stored proxy
            if i < n_shared:  # ESR: the reward comes from the current representation
                step_info, r = rep.update(obs, a_r, a_h, b["goal"])
                _accumulate(info, step_info)
            elif rep is not None:
                r = rep.reward(obs, a_r, a_h, b["goal"])
            if i < n_q:
                _accumulate(info, learner.q_update(obs, a_r, r, b["next_obs"]))
        for _ in range(0 if repr_only else loop.dual_updates):
            b = buffer.sample(agent.batch_size, rng, agent.gamma)
            _accumulate(info, learner.dual_update(torch.as_tensor(b["obs"])))
        s["update_time_s"] += time.perf_counter() - tu
        s["updates"] += max(n_repr, n_q)  # one update = one iteration of the loop
        if advance is not None:
            advance(1)
        done = epoch + 1
        if done % loop.log_every == 0 or done == loop.epochs:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            updates = {k: float(np.mean(v)) for k, v in info.items()}
            window.clear()
            info.clear()
            s["curve"].append([done, means["return"]])
            if "mutual_info" in updates:
                s["mi_curve"].append([done, updates["mutual_info"]])
            diag_rng = generator(*stream, "diagnostics", done)
            diag = _diagnostics(env, buffer, rep, agent.gamma, diag_rng)
            s["diag_curve"].append([done, *(diag.get(k) for k in DIAGNOSTICS)])
            updates.update(diag)
            if ctx is not None:
                ctx.log_metrics(done, **{f"train_{k}": v for k, v in means.items()}, **updates)
        if ctx is not None and done % loop.checkpoint_every == 0 and done < loop.epochs:
            s["epoch"] = done
            s["train_time_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            tensors = {f"buffer.{k}": v for k, v in buffer.state_arrays().items()}
            ctx.checkpoint.save(
                done, tensors, s, modules=modules, optimizers=optimizers, generators={"rng": rng}
            )
    s["train_time_s"] += time.perf_counter() - t0
    return {
        "learner": learner,
        "representation": rep,
        "curve": s["curve"],
        "mi_curve": s["mi_curve"],
        "diag_curve": s["diag_curve"],
        "train_time_s": s["train_time_s"],
        "updates_per_s": s["updates"] / max(s["update_time_s"], 1e-9),
    }


def _diagnostics(env, buffer: ReplayBuffer, rep, gamma: float, rng) -> dict[str, float]:
    """The metric line's diagnostics of ESR's estimate (module docstring, "Diagnostics"): one
    batch of `DIAGNOSTIC_BATCH` buffer states drawn from `rng`; no gradient step."""
    out: dict[str, float] = {}
    free_of = getattr(env, "free_human", None)
    free = free_of(buffer.obs, buffer.episode_end) if free_of is not None else None
    if rep is not None:
        b = buffer.sample(DIAGNOSTIC_BATCH, rng, gamma)
        t = to_torch(b)
        a = t["action"]
        r = rep.reward(t["obs"], a[:, 0], a[:, 1], t["goal"]).double().numpy()
        if free is not None:
            f = free[b["index"]]
            if f.any() and not f.all():
                est = r / rep.c  # nats, as `mutual_info`
                out["mi_free_minus_trapped"] = float(est[f].mean() - est[~f].mean())
        out["reward_std"] = float(r.std())
    if free is not None:
        out["free_share"] = float(free[buffer.anchors].mean())
    return out


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
