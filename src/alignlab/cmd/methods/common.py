"""What every method shares: the hyperparameters, the action encoding, the optimiser plumbing.

All six methods (CMD-2, CMD-1, CRL, GCBC, TD, QRL) read one `MethodConfig`, as in the
notebook's single script with shared hyperparameters (CMD notes, "Controlled 2D Pointmaze"),
and have the same shape:

    method = METHODS[name](obs_dim, act_spec, cfg)
    losses = method.update(batch)          # one gradient step on a to_torch'd batch
    a      = method.act(obs, goal)          # greedy goal-conditioned actions (numpy in/out)
    method.optimizer                        # its Adam: a unit checkpoints it with the weights

Actions. `ActionSpec.candidates` (K, act_dim) is a finite action set in the encoding the
networks see: the one-hot rows of a discrete action space (grid maze), or K unit directions
for the pointmaze, whose dynamics snap any action to the successor with the largest cosine
(pointmaze.py), so a fine set of directions loses little. Policy extraction is then an
argmin/argmax over the candidates, for every method alike, or with `MethodConfig.actor` a
learned actor for continuous actions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.config import param
from alignlab.nn import INFONCE_KINDS, mlp
from alignlab.nn.mlp import ACTIVATIONS


@dataclasses.dataclass
class MethodConfig:
    """Hyperparameters shared by all methods (paper names; notes' scaled-down defaults)."""

    gamma: float = param(0.9, gt=0, lt=1, help="discount of future-goal distr. (notes: 0.8-0.99)")
    batch_size: int = param(256, ge=2, help="batch size; the other rows are the negatives")
    hidden: tuple[int, ...] = param((128, 128), ge=1, help="MLP hidden widths (notes: 2 x 128)")
    repr_dim: int = param(64, ge=1, help="phi/psi and quasimetric embedding size")
    lr: float = param(3e-4, gt=0, help="Adam learning rate (notes' scaled-down setting)")
    grad_clip: float = param(1.0, gt=0, help="global gradient-norm clip (notebook: 1.0)")
    activation: str = param("relu", choices=tuple(ACTIVATIONS), help="MLP activation")
    head: str = param("mrn", choices=("mrn", "iqe", "mlp"), help="quasimetric head (mlp: ablation)")
    mrn_components: int = param(1, ge=1, help="MRN head: number of components")
    infonce: str = param("symmetric", choices=INFONCE_KINDS, help="contrastive loss variant")
    margin: float = param(0.35, help="CMD-2 Lagrange margin on the positive hinge")
    lam_init: float = param(1.0, gt=0.01, help="initial CMD-2 lambda (= softplus(raw) + 0.01)")
    potential: bool = param(True, help="CMD-1: f = c(g) - d; False is --nopotential")
    tau: float = param(0.005, gt=0, le=1, help="TD target network Polyak rate")
    td_random_goal_prob: float = param(0.5, ge=0, le=1, help="TD: P(relabel to another row's goal)")
    qrl_eps: float = param(0.25, ge=0, help="QRL: local constraint E relu(d(x, x') - 1)^2 <= eps^2")
    qrl_offset: float = param(50.0, help="QRL: maximise -softplus(offset - d) over random pairs")
    qrl_beta: float = param(0.1, gt=0, help="QRL: softness of that softplus")
    goal_current: bool = param(False, help="goals at offset >= 0 (the k = 0 occupancy), else >= 1")
    # acting: score(s, a, g) + bc_coef * log pi_beta(a | s), pi_beta a learned behaviour prior
    # (discrete actions only; 0 turns it off). See Method.act.
    bc_coef: float = param(0.0, ge=0, help="behaviour-prior weight in discrete Method.act (0: off)")
    # continuous actions: a learned actor pi(s, g) (a unit direction) maximising the method's
    # value of (s, pi(s, g), g), plus actor_bc * BC (notes, "Policy extraction"); see actor_loss
    actor: bool = param(False, help="continuous actions: act with a learned actor (actor_loss)")
    actor_bc: float = param(0.01, ge=0, le=1, help="BC weight (notebook 0.01; paper's AntMaze 0.2)")


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """A finite candidate action set in the networks' encoding; `discrete` acts by index."""

    candidates: np.ndarray  # (K, act_dim) float32
    discrete: bool

    @classmethod
    def discrete_actions(cls, n: int) -> ActionSpec:
        return cls(np.eye(n, dtype=np.float32), True)

    @classmethod
    def directions(cls, n: int = 16) -> ActionSpec:
        angle = 2 * np.pi * np.arange(n) / n
        return cls(np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32), False)

    @property
    def dim(self) -> int:
        return self.candidates.shape[1]

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Dataset actions -> network encoding: one-hot for discrete, as-is otherwise."""
        if self.discrete:
            return self.candidates[np.asarray(actions, dtype=np.int64)]
        return np.asarray(actions, dtype=np.float32)

    def decode(self, index: np.ndarray) -> np.ndarray:
        """Chosen candidate indices -> environment actions."""
        return index if self.discrete else self.candidates[index]


class Method(nn.Module):
    """Base class: subclasses build networks, then call `_make_optimizer()`."""

    name = "method"

    def __init__(self, obs_dim: int, act_spec: ActionSpec, cfg: MethodConfig):
        super().__init__()
        self.obs_dim, self.act_spec, self.cfg = obs_dim, act_spec, cfg
        self.sa_dim = obs_dim + act_spec.dim
        self.register_buffer("candidates", torch.as_tensor(act_spec.candidates))
        # the behaviour prior pi_beta(a | s) of `act`, trained by `behaviour_loss` (see act)
        self.behaviour = (
            mlp(obs_dim, cfg.hidden, len(act_spec.candidates), cfg.activation)
            if cfg.bc_coef > 0 and act_spec.discrete
            else None
        )
        # the actor of continuous-action tasks (cfg.actor); GCBC is a policy already
        self.actor = (
            mlp(2 * obs_dim, cfg.hidden, act_spec.dim, cfg.activation)
            if cfg.actor and not act_spec.discrete and self.has_value
            else None
        )

    has_value = True  # False for methods without a value of (s, a, g) to maximise (GCBC)

    def value(self, obs, action, goal, goal_action) -> torch.Tensor:
        """(B,) value of taking `action` at `obs` towards (goal, goal_action), higher = better
        (-d for the distance methods, f for CRL, Q for TD). Subclasses with an actor define it."""
        raise NotImplementedError

    def actor_action(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """pi(s, g) as a unit vector (the notebook's normalised policy output)."""
        return F.normalize(self.actor(torch.cat([obs, goal], -1)), dim=-1, eps=1e-6)

    def actor_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-(1 - actor_bc) E value(s, pi(s, g~), g~) + actor_bc E |pi(s, g) - a|^2.

        g~ is another row's goal (rows are i.i.d.: a random dataset goal, the notebook's
        permutation), so the actor learns to reach goals the data never paired with s; the BC
        term uses the row's own future goal. Only the actor's gradients are kept (`_step`).
        """
        obs, goal, goal_action = batch["obs"], batch["goal"], batch["goal_action"]
        other, other_action = goal.roll(1, 0), goal_action.roll(1, 0)
        value = self.value(obs, self.actor_action(obs, other), other, other_action).mean()
        bc = (self.actor_action(obs, goal) - batch["action"]).square().sum(-1).mean()
        return -(1 - self.cfg.actor_bc) * value + self.cfg.actor_bc * bc

    def behaviour_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """Cross-entropy of the behaviour prior on the dataset's (s, a); 0 without a prior.

        Every method adds it to its own loss, so the prior trains with the same optimiser.
        """
        if self.behaviour is None:
            return 0.0
        return F.cross_entropy(self.behaviour(batch["obs"]), batch["action"].argmax(-1))

    def _make_optimizer(self) -> None:
        # foreach: one call per Adam op for all parameters instead of a Python loop over them;
        # on CPU it runs the same per-tensor kernels in the same order, so the same values
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.cfg.lr, foreach=True)

    def _step(self, loss: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> None:
        """One optimiser step on `loss`, plus the actor's loss when there is an actor: its
        gradients reach the actor's weights only (the value networks are held fixed in it, as
        the notebook's stop-gradient), and one global-norm clip covers all of them."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.actor is not None and batch is not None:
            self.actor_loss(batch).backward(inputs=list(self.actor.parameters()))
        nn.utils.clip_grad_norm_(self.parameters(), self.cfg.grad_clip)
        self.optimizer.step()

    # ---- acting: every method scores (s, a_k, g) for the K candidates and takes the best ----

    def score(self, obs: torch.Tensor, cand: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """(B, K) scores of candidate actions, higher = better. Subclasses define it."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch: argmax_a score(s, a, g) + bc_coef * log pi_beta(a | s),
        or the actor's pi(s, g) when there is one.

        The behaviour term is the discrete counterpart of the paper's offline actor, which adds a
        BC term to the distance (notes, "Policy extraction": 0.2 BC + 0.8 distance): an argmax
        over all candidates is otherwise free to pick actions the data rarely takes at s, whose
        values are barely trained (the usual offline-RL extrapolation error). Same coefficient
        for every method; off when bc_coef = 0 or for continuous actions.
        """
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        goal_t = torch.as_tensor(np.asarray(goal, dtype=np.float32))
        if self.actor is not None:
            return self.actor_action(obs_t, goal_t).numpy()
        score = self.score(obs_t, self.candidates, goal_t)
        if self.behaviour is not None:
            score = score + self.cfg.bc_coef * F.log_softmax(self.behaviour(obs_t), dim=-1)
        best = score.argmax(dim=1).numpy()
        return self.act_spec.decode(best)

    @staticmethod
    def tile_sa(obs: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """[s_b, a_k] for every row b and candidate k: (B, K, sa_dim)."""
        B, K = obs.shape[0], cand.shape[0]
        return torch.cat([obs[:, None].expand(B, K, -1), cand[None].expand(B, K, -1)], -1)


def sa_cat(obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    return torch.cat([obs, action], dim=-1)


def softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))
