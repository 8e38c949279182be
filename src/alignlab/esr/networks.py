"""The authors' convolutional phi, psi and Q for the obstacle gridworld (`AgentConfig.torso =
"conv"`), reimplemented in PyTorch from the ESR code's `networks/gridworld.py` (commit a56a370).

Inputs, as planes on the n x n grid (channels first here; the original is channels last):
- The state (`state_features_2d`): 2 planes, the human's cell (channel 0) and the boxes
  (channel 1; the original counts the boxes on a cell, and boxes never share one, so it is the
  occupancy). The goal plane is commented out there: the goal is never observed. Our
  observation [one-hot of the human's cell (n^2), box occupancy (n^2)], cells row-major, is
  exactly these planes flattened, so `state_planes` is a reshape.
- The robot's action a (`robot_action_features_2d`): 5 planes, all zero except a 1 in channel
  a % 5 (the push direction) at cell a // 5 = row * n + col (the box's cell), as the env reads
  it (`envs/gridworld.py`, `a_idx_to_vec` / `_inc_boxes`: direction a % 5, cell a // 5, row
  cell // n, col cell % n; the original hard-codes n = 5).
- The human's action a (`human_action_features_2d`): 5 planes, channel a all ones (broadcast
  over every cell), the others zero.

Networks (`repr_fn`, `critic_fn`), each a separate set of weights:
- phi(s, a_R, a_H): the 12 planes [state (2), a_R (5), a_H (5)] -> `ConvTorso`; the marginal
  phi(s, a_R, 0) is the same network with the a_H planes zeroed (`repr_fn`: `jnp.zeros_like(ah)`).
- psi(s+): the 2 state planes -> `ConvTorso`.
- Q(s, .): the 2 state planes -> `ConvTorso` with one output per robot action (`critic_fn`).
- `ConvTorso`: Conv(16, 3x3, stride 1, SAME) - SiLU - Conv(32, 3x3, SAME) - SiLU - flatten
  (in the original's (row, col, channel) order) - Linear(h) - SiLU - ... - Linear(out), the
  hidden widths h being `AgentConfig.hidden` (the original: one layer of `hidden_dim` = 100).
- Initialisation: haiku's defaults (`hk.Conv2D`, `hk.Linear` with no `w_init`): weights from a
  normal with sigma = 1 / sqrt(fan_in) truncated at +-2 sigma (fan_in = 3 * 3 * in_channels
  for a conv, in_features for a linear layer; the standard deviation is not rescaled for the
  truncation), biases zero.

Only the gridworld has such a layout; the authors' Overcooked phi, psi and Q are tanh MLPs on
the flat observation (`networks/overcooked.py`), so `grid_size_of` rejects other environments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.config import ConfigError
from alignlab.nn import mlp

#: the robot's push directions and the human's actions (left, down, right, up, stay)
MOVES = 5
#: planes of a state: the human's cell, the boxes
STATE_PLANES = 2
#: output channels of the two convolutions
CONV_CHANNELS = (16, 32)


def grid_size_of(obs_dim: int, robot_actions: int, human_actions: int | None = None) -> int:
    """The side n of a gridworld with these sizes (observation 2 n^2, robot actions 5 n^2,
    human actions 5, not checked when None); a ConfigError for any other environment (e.g.
    Overcooked)."""
    n = math.isqrt(max(robot_actions // MOVES, 0))
    human_ok = human_actions is None or human_actions == MOVES
    if n < 1 or robot_actions != MOVES * n * n or obs_dim != STATE_PLANES * n * n or not human_ok:
        got = f"observation {obs_dim}, {robot_actions} robot actions"
        if human_actions is not None:
            got += f", {human_actions} human actions"
        raise ConfigError(
            "torso",
            "'conv' needs the obstacle gridworld (observation 2 n², 5 n² robot actions, 5 "
            f"human actions); got {got}. Overcooked's observation is a flat feature vector "
            "and its actions have no cell (the authors' Overcooked networks are MLPs, "
            "networks/overcooked.py): use torso='mlp'",
        )
    return n


def state_planes(obs: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2 n^2) observations -> (B, 2, n, n): the human plane, then the box plane."""
    return obs.reshape(len(obs), STATE_PLANES, size, size)


def robot_action_planes(action: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) robot actions -> (B, 5, n, n): a 1 in channel a % 5 at cell a // 5, else 0."""
    a = action.long()
    cell = a // MOVES
    planes = torch.zeros(len(a), MOVES, size, size, dtype=torch.get_default_dtype())
    planes[torch.arange(len(a)), a % MOVES, cell // size, cell % size] = 1.0
    return planes


def human_action_planes(action: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) human actions -> (B, 5, n, n): channel a all ones (every cell), the others 0."""
    one_hot = F.one_hot(action.long(), MOVES).to(torch.get_default_dtype())
    return one_hot[:, :, None, None].expand(-1, -1, size, size)


def haiku_init_(module: nn.Module) -> None:
    """haiku's default initialisation of every Conv2d and Linear in `module`: weights from
    N(0, sigma^2) truncated at +-2 sigma, sigma = 1 / sqrt(fan_in); biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            sigma = m.weight[0].numel() ** -0.5  # fan_in: in_channels * kh * kw, in_features
            nn.init.trunc_normal_(m.weight, 0.0, sigma, -2 * sigma, 2 * sigma)
            nn.init.zeros_(m.bias)


class ConvTorso(nn.Module):
    """(B, C, n, n) planes -> (B, out_dim): two SAME 3x3 convolutions with SiLU, flattened in
    (row, col, channel) order, then an MLP with SiLU over `hidden` (module docstring)."""

    def __init__(self, in_channels: int, size: int, hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        c1, c2 = CONV_CHANNELS
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.SiLU(),
        )
        self.head = mlp(c2 * size * size, tuple(hidden), out_dim, activation="swish")
        haiku_init_(self)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        x = self.convs(planes)
        return self.head(x.permute(0, 2, 3, 1).flatten(1))  # haiku's NHWC Flatten order


class ConvStateNet(nn.Module):
    """psi(s+) or Q(s, .): flat gridworld observations (B, 2 n^2) -> (B, out_dim)."""

    def __init__(self, size: int, hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        self.size = size
        self.torso = ConvTorso(STATE_PLANES, size, hidden, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.torso(state_planes(obs, self.size))


class ConvPhi(nn.Module):
    """phi(s, a_R, a_H) on the 12 planes [state, a_R, a_H]; a_H = None gives the marginal
    phi(s, a_R, 0), the a_H planes zeroed."""

    def __init__(self, size: int, hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        self.size = size
        self.torso = ConvTorso(STATE_PLANES + 2 * MOVES, size, hidden, out_dim)

    def planes(self, obs, a_robot, a_human=None) -> torch.Tensor:
        """(B, 12, n, n) input planes; zeros for the human's when `a_human` is None."""
        n = self.size
        s, ar = state_planes(obs, n), robot_action_planes(a_robot, n)
        ah = human_action_planes(a_human, n) if a_human is not None else torch.zeros_like(ar)
        return torch.cat([s, ar, ah], dim=1)

    def forward(self, obs, a_robot, a_human=None) -> torch.Tensor:
        return self.torso(self.planes(obs, a_robot, a_human))

    def pair(self, obs, a_robot, a_human) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi(s, a_R, a_H), phi(s, a_R, 0)) from one batched pass."""
        joint = self.planes(obs, a_robot, a_human)
        marginal = torch.cat(
            [joint[:, : STATE_PLANES + MOVES], torch.zeros_like(joint[:, -MOVES:])], 1
        )
        phi = self.torso(torch.cat([joint, marginal]))
        return phi[: len(obs)], phi[len(obs) :]
