"""The assistant's learners: ESR's contrastive empowerment reward, AvE's simulated proxy, the
Q-learning critic with an entropy-tuned Boltzmann policy they share, and the goal-inference and
random baselines (ESR notes, "Method" and "Baselines"; the paper's Algorithm 1).

ESR (Eqs. 10 and 13 of the paper, as in its `agents/contrastive.py`):
- One representation network phi(s, a_R, a_H) and one psi(s+), with s+ = s_{t+Delta},
  Delta ~ Geom(1 - gamma) in the same episode. The marginal phi(s, a_R, 0) is the same phi with
  the human-action one-hot zeroed.
- Contrastive loss: symmetric InfoNCE over the tiled 2B batch, rows [phi(s, a_R, 0);
  phi(s, a_R, a_H)], columns [psi(s+); psi(s+)], logits <phi, psi> / repr_dim (ESR's scale,
  not sqrt(d)); positives on the diagonal. (The paper's code sums the row and column losses;
  `symmetric_infonce` averages them, which only halves the gradient Adam rescales anyway.)
- Reward r = (phi(s, a_R, a_H) - phi(s, a_R, 0))^T psi(s+): a one-sample estimate of the
  pointwise mutual information between the human's action and the future state (times the
  logit divisor: repr_dim with ESR's scale), recomputed with the current networks for every
  critic batch.
- Logged `repr_accuracy`: how often the joint row phi(s, a_R, a_H) scores its own future
  state highest among the batch's (B x B; the tiled matrix's duplicate columns would cap it
  at 0.5).
- Logged mutual information: the mean diagonal logit of the joint rows minus that of the
  marginal rows, in nats (the code's `mutual_info`).

Critic and acting (`agents/base.py`): Q(s, .) over the robot's actions, target
r + gamma max_a Q_target(s', a), Polyak-averaged target. The policy is softmax(beta Q(s, .));
the precision beta takes SGD steps on (H_target - H(beta))^2 so the policy's entropy tracks
`target_entropy`, clipped to [1e-3, 100].

Episodes here have a fixed length and no terminal states (a frozen gridworld state is
absorbing, the horizon is a time limit), so every target bootstraps; transitions never cross
an episode boundary, unlike the original buffer (ESR notes, "Pitfalls").

AvE (Du et al. 2020; the ESR code's `agents/ave.py`, `AVEPolicy.compute_reward`), computed
with the true simulator (the robot idle, the hidden goal removed) from `ave_rollouts` (20)
simulated continuations of `ave_length` (5) random human steps; `ave_variant` picks the form:
- "paper" (default; the authors' defaults, `smart_features=False`): r_t = AvE(s_t) of the
  state the robot acts in (`train_grid.py`, `rollout_emp`, stores s_t and `observe` computes
  the reward of it) = log np.var of every object coordinate (the human's and each box's row and
  column, 2 + 2K numbers) after each continuation, pooled into one sample of 20 x (2 + 2K)
  numbers (`np.var` of the reshaped (N, 20 (2 + 2K)) array over its last axis); no epsilon (we floor the variance at 1e-3, which only matters when all the pooled
  numbers are equal: never with >= 2 boxes). The simulated human's actions are
  randint(0, 125), the robot's action count, and `step_human_action`'s `lax.switch` clamps
  every index >= 4 to "stay": P(stay) = 121/125, 1/125 per move. That simulator never freezes:
  a crushed human walks off its box, so ours is stepped with `dead` cleared. The authors
  recompute the reward with fresh continuations for every critic batch (`recompute`); we draw
  it once per stored transition (their `--cache_reward`): the same random reward, resampled
  less often.
- "mobility" (ours before, "AvE (human mobility)"): r_t = AvE(s_{t+1}) of the state after the
  step = log(mean over the human's features, its position here, of their variance across the
  continuations + 1e-3) (the form of the code's `smart_features=True` branch, which averages
  over all coordinates, here over the human's own only), with uniform human actions over its
  5, and frozen states kept frozen.
`ave_quirk` (unset: each form's own draws, as above) forces the clamped draws (True) or the
uniform ones (False). Environments without `object_coordinates` (Overcooked) always get the
mobility form (`ave_form`), so their AvE is unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from alignlab.core.config import param
from alignlab.nn import contrastive_accuracy, mlp, symmetric_infonce
from alignlab.nn.contrastive import LOGIT_SCALES, logit_divisor
from alignlab.rl import polyak_update

from .networks import ConvPhi, ConvStateNet, grid_size_of

#: "ave" is AvE as `AgentConfig.ave_variant` says (the paper's by default); "ave_mobility" is
#: AvE with ave_variant="mobility", ours, reported beside it (experiments.gridworld)
METHODS = ("esr", "ave", "ave_mobility", "random", "goal_inference")
AVE_VARIANTS = ("paper", "mobility")
CONTRASTIVE = ("tiled", "masked", "separate")
TORSOS = ("mlp", "conv")


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has one for the parameters' device (CPU
    since torch 2.4): the same update in far fewer small ops, which dominate at these sizes."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


@dataclass
class AgentConfig:
    """Hyperparameters of the assistant (ESR notes, "Gridworld defaults" / "Scaled-down")."""

    repr_dim: int = param(32, ge=1, help="width of the representations phi and psi")
    hidden: tuple[int, ...] = param((128, 128), ge=1, nonempty=True, help="widths of all networks")
    torso: str = param(
        "mlp",
        choices=TORSOS,
        help="mlp: phi, psi and Q are MLPs on the flat observation and action one-hots; conv: "
        "the authors' gridworld nets, Conv16-Conv32 (3x3, SAME, SiLU) then the MLP over "
        "`hidden`, on the grid's planes (esr.networks; gridworld only)",
    )
    repr_lr: float = param(1e-4, gt=0, help="Adam learning rate of the representation")
    policy_lr: float = param(1e-3, gt=0, help="Adam learning rate of the critic")
    gamma: float = param(0.9, gt=0, lt=1, help="future-state & critic discount, shared as in code")
    tau: float = param(0.005, gt=0, le=1, help="Polyak rate of the critic's target")
    batch_size: int = param(256, ge=1, help="transitions per update")
    target_entropy: float = param(0.6, ge=0, help="the Boltzmann policy's target entropy (nats)")
    dual_lr: float = param(0.1, gt=0, help="SGD rate of the policy's precision (dual step)")
    precision_init: float = param(1.0, ge=1e-3, le=100, help="initial precision in softmax(beta Q)")
    contrastive: str = param(
        "tiled",
        choices=CONTRASTIVE,
        help="tiled: one InfoNCE over the 2B x 2B tiled batch (the paper's code); masked: "
        "without each anchor's duplicate column; separate: one B x B loss each for the joint "
        "and marginal rows",
    )
    logit_scale: str = param(
        "dim",
        choices=LOGIT_SCALES,
        help="logits = <phi, psi> / c with c = repr_dim (dim, the paper's code), sqrt(repr_dim) "
        "(sqrt) or 1 (none)",
    )
    ave_rollouts: int = param(20, ge=1, help="AvE: simulated continuations per state")
    ave_length: int = param(5, ge=1, help="AvE: random human steps per continuation")
    ave_variant: str = param(
        "paper",
        choices=AVE_VARIANTS,
        help="AvE: paper: log var of all object coordinates pooled over the continuations, "
        "reward of s_t, clamped draws (the authors' code); mobility: log(mean var of the "
        "human's position + 1e-3), reward of s_{t+1}, uniform draws (ours; module docstring)",
    )
    ave_quirk: bool | None = param(
        None,
        help="AvE: simulated human actions ~ randint(robot's actions) clamped to stay, as in "
        "the code (~97% stay); unset: on for the paper variant, off for mobility",
    )


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(index.long(), n).to(torch.get_default_dtype())


class QLearner(torch.nn.Module):
    """Q(s, .) with a Polyak target and the entropy-tuned Boltzmann policy (module docstring)."""

    def __init__(self, obs_dim: int, n_actions: int, cfg: AgentConfig):
        super().__init__()
        self.cfg, self.n_actions = cfg, n_actions
        if cfg.torso == "conv":  # the authors' critic_fn (esr.networks)
            size = grid_size_of(obs_dim, n_actions)
            self.q = ConvStateNet(size, cfg.hidden, n_actions)
        else:
            self.q = mlp(obs_dim, cfg.hidden, n_actions, activation="swish")
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.q_opt = adam(self.q.parameters(), cfg.policy_lr)
        if cfg.target_entropy >= math.log(n_actions):
            raise ValueError(
                f"target_entropy {cfg.target_entropy} nats is not below the uniform policy's "
                f"ln({n_actions}) = {math.log(n_actions):.2f}"
            )
        self.register_buffer("precision", torch.tensor(float(cfg.precision_init)))

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.precision * torch.log_softmax(self.q(obs), dim=-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample from softmax(beta Q(s, .)) with numpy's generator (so runs are reproducible)."""
        probs = torch.softmax(self.policy_logits(torch.as_tensor(obs)), dim=-1).double().numpy()
        cdf = np.cumsum(probs, axis=1)
        u = rng.random(len(obs))[:, None] * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(axis=1), self.n_actions - 1)

    def q_update(self, obs, action, reward, next_obs) -> dict[str, float]:
        with torch.no_grad():
            target = reward + self.cfg.gamma * self.q_target(next_obs).max(dim=-1).values
        q = self.q(obs).gather(1, action.long()[:, None])[:, 0]
        loss = F.mse_loss(q, target)
        self.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.q_opt.step()
        polyak_update(self.q_target, self.q, self.cfg.tau)
        return {"q_loss": loss.item(), "q_mean": q.mean().item(), "reward": reward.mean().item()}

    def dual_update(self, obs: torch.Tensor) -> dict[str, float]:
        """One SGD step of beta on (H_target - H(beta))^2 over a batch of states."""
        with torch.no_grad():
            logp_q = torch.log_softmax(self.q(obs), dim=-1)
        beta = self.precision.clone().requires_grad_(True)
        logp = torch.log_softmax(beta * logp_q, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = (self.cfg.target_entropy - entropy) ** 2
        (grad,) = torch.autograd.grad(loss, beta)
        with torch.no_grad():
            self.precision.copy_((self.precision - self.cfg.dual_lr * grad).clamp(1e-3, 100.0))
        return {"entropy": entropy.item(), "precision": self.precision.item()}


class ESRRepresentation(torch.nn.Module):
    """phi(s, a_R, a_H), phi(s, a_R, 0) and psi(s+) with the tiled symmetric InfoNCE loss.

    phi's first layer is a linear map of [s, onehot(a_R), onehot(a_H)], stored as a linear
    layer on s plus one embedding row per action (the same function, without multiplying the
    one-hots); the marginal phi(s, a_R, 0) leaves the human's row out, exactly as zeroing its
    one-hot does. Both are initialised like one linear layer over the concatenated input.
    With `torso="conv"` phi and psi are the authors' gridworld conv nets instead
    (`networks.ConvPhi`, `networks.ConvStateNet`; the marginal zeroes the a_H planes).
    """

    def __init__(self, obs_dim: int, robot_actions: int, human_actions: int, cfg: AgentConfig):
        super().__init__()
        self.repr_dim, self.contrastive = cfg.repr_dim, cfg.contrastive
        self.c = logit_divisor(cfg.repr_dim, cfg.logit_scale)
        self.torso = cfg.torso
        if cfg.torso == "conv":  # the authors' repr_fn: conv phi and psi (esr.networks)
            size = grid_size_of(obs_dim, robot_actions, human_actions)
            self.phi_conv = ConvPhi(size, cfg.hidden, cfg.repr_dim)
            self.psi = ConvStateNet(size, cfg.hidden, cfg.repr_dim)
            self.opt = adam(self.parameters(), cfg.repr_lr)
            return
        width = cfg.hidden[0]
        bound = (obs_dim + robot_actions + human_actions) ** -0.5
        self.phi_obs = torch.nn.Linear(obs_dim, width)
        self.phi_robot = torch.nn.Embedding(robot_actions, width)
        self.phi_human = torch.nn.Embedding(human_actions, width)
        for layer in (self.phi_obs.weight, self.phi_obs.bias, self.phi_robot.weight):
            torch.nn.init.uniform_(layer, -bound, bound)
        torch.nn.init.uniform_(self.phi_human.weight, -bound, bound)
        self.phi_rest = torch.nn.Sequential(
            torch.nn.SiLU(), mlp(width, cfg.hidden[1:], cfg.repr_dim, activation="swish")
        )
        self.psi = mlp(obs_dim, cfg.hidden, cfg.repr_dim, activation="swish")
        self.opt = adam(self.parameters(), cfg.repr_lr)

    def phis(self, obs, a_robot, a_human) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi(s, a_R, a_H), phi(s, a_R, 0)), each (B, repr_dim)."""
        if self.torso == "conv":
            return self.phi_conv.pair(obs, a_robot, a_human)
        base = self.phi_obs(obs) + self.phi_robot(a_robot.long())
        joint = base + self.phi_human(a_human.long())
        phi = self.phi_rest(torch.cat([joint, base]))
        return phi[: len(obs)], phi[len(obs) :]

    @torch.no_grad()
    def reward(self, obs, a_robot, a_human, goal) -> torch.Tensor:
        """r = (phi(s, a_R, a_H) - phi(s, a_R, 0))^T psi(s+), shape (B,)."""
        phi_sa, phi_s = self.phis(obs, a_robot, a_human)
        return ((phi_sa - phi_s) * self.psi(goal)).sum(-1)

    def update(self, obs, a_robot, a_human, goal) -> tuple[dict[str, float], torch.Tensor]:
        """One contrastive step; also returns the batch's reward from the networks as they were
        before the step (the same value `reward` gives, without a second forward pass)."""
        phi_sa, phi_s = self.phis(obs, a_robot, a_human)
        psi = self.psi(goal)
        b = len(obs)
        if self.contrastive in ("tiled", "masked"):
            rows = torch.cat([phi_s, phi_sa])  # the tiled 2B batch
            logits = rows @ torch.cat([psi, psi]).T / self.c
            if self.contrastive == "masked":  # an anchor's other half is not its negative
                i = torch.arange(b)
                logits = logits.index_put(
                    (torch.cat([i, i + b]), torch.cat([i + b, i])), torch.tensor(float("-inf"))
                )
            loss = symmetric_infonce(logits)
            diag = logits.detach().diagonal()
            joint, marginal = diag[b:], diag[:b]
        else:
            logits_sa = phi_sa @ psi.T / self.c
            logits = phi_s @ psi.T / self.c
            loss = symmetric_infonce(logits_sa) + symmetric_infonce(logits)
            joint, marginal = logits_sa.detach().diagonal(), logits.detach().diagonal()
        reward = ((phi_sa - phi_s) * psi).sum(-1).detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            joint_logits = phi_sa @ psi.T
        info = {
            "repr_loss": loss.item(),
            "repr_accuracy": contrastive_accuracy(joint_logits).item(),
            "mutual_info": (joint - marginal).mean().item(),
        }
        return info, reward


def ave_form(simulator, cfg: AgentConfig) -> str:
    """The AvE form `ave_reward` computes in this environment: cfg.ave_variant, except that
    the paper's form needs `object_coordinates` (the gridworld's): environments without it
    (Overcooked) get "mobility". `simulator` is an environment (not a factory)."""
    has = hasattr(simulator, "object_coordinates")
    return "paper" if cfg.ave_variant == "paper" and has else "mobility"


def ave_reward(simulator, state: dict, rng: np.random.Generator, cfg: AgentConfig):
    """AvE's empowerment proxy of each state in `state` (module docstring), shape (N,).

    `simulator` is an environment (reused, resized by `set_state`) or a factory `m -> env`.
    The state is repeated `ave_rollouts` times, its hidden goal (if any) removed by the env's
    `blind_state`, and the simulated human takes `ave_length` random actions while the robot
    idles. Which state to pass (s_t for the paper's form, s_{t+1} for mobility) is the
    caller's (`train.rollout`). The paper's form, as `agents/ave.py::AVEPolicy.compute_reward`
    with `smart_features=False`: the simulator steps like `envs/gridworld.py::
    step_human_action` (never frozen, so `dead` is cleared), actions randint(0, 125) clamped to
    stay, then log np.var of the (N, ave_rollouts * (2 + 2K)) pooled `object_coordinates`.
    """
    sim = simulator if hasattr(simulator, "set_state") else simulator(1)
    paper = ave_form(sim, cfg) == "paper"
    quirk = paper if cfg.ave_quirk is None else cfg.ave_quirk
    reps = cfg.ave_rollouts
    repeated = {k: (np.repeat(v, reps, axis=0) if np.ndim(v) else v) for k, v in state.items()}
    blind = getattr(sim, "blind_state", None)
    repeated = blind(repeated) if blind is not None else repeated
    if paper and "dead" in repeated:  # the authors' simulated human is never frozen
        repeated = {**repeated, "dead": np.zeros_like(repeated["dead"])}
    sim.set_state(repeated)
    m = sim.num_envs
    idle = np.full(m, sim.noop_robot_action)
    for _ in range(cfg.ave_length):
        if quirk:  # the original: randint over the robot's actions, clamped to "stay"
            a_h = np.minimum(rng.integers(sim.robot_actions, size=m), sim.human_actions - 1)
        else:
            a_h = rng.integers(sim.human_actions, size=m)
        sim.step(idle, a_h)
    if paper:  # every coordinate of every continuation in one sample (no epsilon in code)
        pooled = sim.object_coordinates().reshape(m // reps, -1)
        return np.log(np.maximum(pooled.var(axis=1), 1e-3))
    feats = sim.empowerment_features().reshape(m // reps, reps, -1)
    return np.log(feats.var(axis=1).mean(axis=1) + 1e-3)


@dataclasses.dataclass
class GoalPosterior:
    """Bayesian goal inference over an oracle goal set (every cell): P(g | a_H^{0:t}) with the
    human's own eps-greedy likelihood, P(a | s, g) = (1 - eps) [a = greedy_g(s)] + eps / 5."""

    log_post: np.ndarray  # (N, G)
    goals: np.ndarray  # (G, 2)

    @classmethod
    def uniform(cls, num_envs: int, size: int) -> GoalPosterior:
        cells = np.arange(size * size)
        goals = np.stack([cells // size, cells % size], 1)
        return cls(np.zeros((num_envs, len(goals))), goals)

    def update(self, env, human_action: np.ndarray, live: np.ndarray) -> None:
        """Condition on the actions the human took from env's current state (before stepping);
        frozen envs (`live` False) are skipped: their human's action carries no information."""
        n = env.num_envs
        greedy = env.greedy_human_action(np.broadcast_to(self.goals, (n, *self.goals.shape)))
        match = greedy == human_action[:, None]
        like = np.log(np.where(match, 1 - env.noise, 0.0) + env.noise / 5)
        self.log_post += np.where(live[:, None], like, 0.0)

    def map_goal(self) -> np.ndarray:
        return self.goals[np.argmax(self.log_post, axis=1)]
