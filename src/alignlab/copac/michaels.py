"""The "Michaels brain" of CopAC: a modular rate RNN (M1, F5, AIP) that can be lesioned and
stimulated, and DAgger cloning of a teacher policy into it.

Paper: Pan, Schrum, Myers, Bıyık & Dragan, "Coprocessor Actor Critic", ICML 2024 (notes in
../shared/papers/copac.md). The brain is the modular RNN of Michaels, Schaffelhofer, Agudelo-Toro &
Scherberger (2020), as the official code builds it (michelllepan/neural-coprocessors, commit
af10179; read, not copied):

- ``michaels/experiment/mRNN.py`` (``MichaelsRNN``): three modules of ``n`` neurons, in the order
  M1 = neurons [0, n), F5 = [n, 2n), AIP = [2n, 3n) (``lesion.LesionModule``). One tick::

      x <- x + (-x + J r + I u + b + stim) * dt / tau,   dt = 1, tau = 10
      r  = ReTanh(x) = tanh(max(x, 0))

  ``r`` on the right is the previous tick's rate. At the first tick after a reset
  ``x = x0`` (a learned vector) and ``r = ReTanh(x0)``. ``J`` is dense within a module
  (N(0, 1.2/sqrt n)) and sparse between modules M1<->F5 and F5<->AIP (exactly
  ``int(0.1 n^2)`` random connections per direction, N(0, 1/sqrt n)); M1<->AIP has no direct
  connection. ``b ~ U(-1, 1)``. The action is read out from M1's rates only:
  ``fc(r[:, :n])``, which the recurrent SAC actor (``offpcc/basics/summarizer.py`` and
  ``offpcc/basics/actors_and_critics.py``, ``MLPGaussianActor``) maps through a ReLU MLP to a
  mean; the deterministic action is ``tanh(mean)``. We do the same, with smaller layers.
- Input. The code's comments and the paper say the input enters the last module (AIP); the code
  itself is inconsistent (its init zeroes AIP's input rows, its gradient masks allow F5 and
  AIP). We follow the paper's description: ``I`` is nonzero on AIP's rows only, under a fixed
  mask. The code's "hold" signal is always 0 in the RL setting and is left out.
- Sparsity survives training: ``J`` and ``I`` are used through their fixed masks in the
  forward pass (masked entries get exactly zero gradient) and :meth:`MichaelsBrain.apply_masks_`
  re-zeroes them after each optimiser step (the code's ``set_sparse_grads``).
- ``x0`` is ``torch.empty`` (uninitialised memory) in the code; we start it at 0 (learned).
- Lesion (``michaels/experiment/lesion.py``, ``LesionOutputs``): a fraction ``p`` of one module's
  neurons (M1 in CopAC) is silenced by multiplying ``x`` by a 0/1 mask after every update, so
  their ``r = ReTanh(0) = 0`` exactly, at every tick and whatever the stimulation. The code picks
  ``int(p n)`` neurons with Python's ``random``; we pick exactly ``round(p n)`` with a
  ``np.random.Generator``, as the project specifies.
- Stimulation (``michaels/experiment/stim.py``, ``StimulusGaussianExp``, and
  ``michaels/experiment/utils.py``, ``array_weights``): ``k`` channels, channel ``j = 1..k``
  centred at neuron position ``c_j = n j / (k + 1)``; kernel row ``j`` is the normal pdf with
  standard deviation ``sigma`` *in units of neuron index*, evaluated at ``i - c_j`` for the
  neurons ``i = 0..n-1`` and normalised so the row sums to 1. The stimulation current added to
  M1's input (inside the ``/tau``) is ``kernel^T stim``. CopAC uses ``sigma = 0.1``
  (``coprocessors/utils/setup_brain.py``, ``DEFAULT_STIM_SIGMA``): a tenth of the spacing of
  neurons, so each channel drives essentially one neuron, the one nearest its centre (e.g. with
  n = 32, k = 2 the centres are 10.67 and 21.33, and neurons 11 and 21 get weight 0.996; an
  exactly half-integer centre splits 0.5/0.5 between two neurons).
- Temporal stimulation: the code keeps a current ``v`` that a stimulation is added to before the
  tick, is read by the tick, and is then multiplied by ``1 - decay``::

      c_t = kernel^T stim_t + (1 - decay) c_{t-1}

  ``setup_brain.get_michaels_brain`` sets ``decay = 1`` (a one-tick pulse) and
  ``decay = 0.3`` when ``temporal=True``. (The code also drops the stimulation given at the first
  tick of an episode, since its forward resets the stimulus on first use; we do not reproduce
  that quirk.)

Training is a documented deviation. The paper trains the brain with recurrent SAC on the task
(``train/train_brain.py``, ``offpcc/algorithms_recurrent/recurrent_sac.py``, e.g. 500k steps),
far beyond a CPU budget. Here the brain *clones* a teacher policy (in the project, the trained
SAC brain's ``tanh(mu(s))``) by DAgger (Ross, Gordon & Bagnell 2011): roll out a mixture of
teacher and student (beta_0 = 1, then decaying), label every visited state with the teacher's
action, aggregate, and fit the whole RNN by backpropagation through time on whole episodes
(optionally truncated) with an MSE loss, keeping the iterate that scores best on validation
episodes. This yields a brain with the same structure and comparable task competence, which is
what CopAC needs of it.

What cloning can reach. Information from the observation needs two ticks to reach M1
(AIP -> F5 -> M1) and each stage is a leaky integrator (x moves 1/tau = 10% of the way per
tick), so the brain is a delayed, smoothed copy of a memoryless teacher. Measured on one CPU
thread, n = 32, ``train_dagger(iterations=16, episodes_per_iter=16, epochs=40, lr=1e-3,
eval_episodes=32)``, 100 test episodes: on Reacher-v5 with :func:`reacher_pd_teacher` (-4.9 to
-5.5), the clone's return is 1.10, 1.11 and 1.21 times the teacher's (seeds 0-2; doing nothing:
about 2.2x) in about 49 CPU-seconds; with a softer teacher (kp = 10, -6.95) 1.04x. The
Pendulum-v1 swing-up (:func:`pendulum_swingup_teacher`, about -160) is *not* cloned at this
budget: -810 to -1010 after 40-50 CPU-seconds, -900 after 113 (doing nothing: about -1200): the
energy-pumping teacher switches sign with the angular velocity and small delayed errors
compound over 200 steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

MODULES = ("M1", "F5", "AIP")
"""Module order in the state vector: M1 = [0, n), F5 = [n, 2n), AIP = [2n, 3n)."""

DEFAULT_STIM_SIGMA = 0.1  # coprocessors/utils/setup_brain.py
TEMPORAL_STIM_DECAY = 0.3  # get_michaels_brain(temporal=True)


def retanh(x: Tensor) -> Tensor:
    """ReTanh, ``tanh(max(x, 0))`` (``michaels/experiment/utils.py``)."""
    return torch.tanh(torch.clamp(x, min=0.0))


def gaussian_stim_kernel(n: int, k: int, sigma: float = DEFAULT_STIM_SIGMA) -> Tensor:
    """Stimulation kernel ``(k, n)``: row ``j`` is a Gaussian over neuron positions ``0..n-1``
    centred at ``n (j + 1) / (k + 1)`` with standard deviation ``sigma`` (in neuron-index units),
    normalised to sum to 1 (``utils.array_weights(n, k, norm(0, sigma).pdf, normalize=True)``).

    Computed as a softmax of ``-d^2 / (2 sigma^2)`` in float64, which is the normalised pdf
    without underflow for tiny ``sigma``.
    """
    if k < 0 or n < 1:
        raise ValueError(f"need n >= 1 and k >= 0, got n={n}, k={k}")
    if k >= n and k > 1:  # as array_weights
        raise ValueError(f"need fewer stimulation channels ({k}) than neurons ({n})")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    centres = n * np.arange(1, k + 1, dtype=np.float64) / (k + 1)
    d = np.arange(n, dtype=np.float64)[None, :] - centres[:, None]
    logits = -(d**2) / (2.0 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True) if k else 0.0
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True) if k else 1.0
    return torch.tensor(w, dtype=torch.float32).reshape(k, n)


@dataclass
class BrainState:
    """Recurrent state for ``batch`` parallel episodes: internal state ``x``, rates ``r``
    (both ``(batch, 3n)``) and the stimulation current on M1 ``c`` (``(batch, n)``)."""

    x: Tensor
    r: Tensor
    c: Tensor

    def clone(self) -> BrainState:
        return BrainState(self.x.clone(), self.r.clone(), self.c.clone())


class MichaelsBrain(nn.Module):
    """Modular M1/F5/AIP rate RNN with an M1 readout and an MLP action head (a ``Brain``).

    ``act`` advances the internal recurrent state by one tick (one env step) without gradients;
    ``rollout`` runs a whole sequence differentiably from a fresh state and leaves the ``act``
    state alone. Parameters are drawn from ``seed`` (a private torch generator state, so
    construction neither reads nor changes the global RNG).

    Args:
        obs_dim, action_dim: sizes of the observation (the input ``u``, into AIP) and action.
        stim_dim: ``k`` stimulation channels over M1 (0 allowed).
        n: neurons per module (the paper's code: 100; quick: 32).
        seed: initialisation seed (weights and sparsity masks).
        readout_dim: width of the linear M1 readout ``fc`` (code: 256).
        head_hidden: ReLU MLP layers between the readout and the action mean (code: 256, 256).
        tau: time constant in ticks (code: 10; ``dt = 1``).
        sparsity: fraction of connections between connected modules (code: 0.1).
        stim_sigma: Gaussian kernel width in neuron-index units (CopAC: 0.1).
        temporal: stimulation decays by ``stim_decay`` per tick instead of lasting one tick.
        stim_decay: decay used when ``temporal`` (default 0.3; ``temporal=False`` means 1).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        stim_dim: int = 2,
        *,
        n: int = 32,
        seed: int = 0,
        readout_dim: int = 64,
        head_hidden: Sequence[int] = (64, 64),
        tau: float = 10.0,
        sparsity: float = 0.1,
        stim_sigma: float = DEFAULT_STIM_SIGMA,
        temporal: bool = False,
        stim_decay: float = TEMPORAL_STIM_DECAY,
    ):
        super().__init__()
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
        if not 0.0 < stim_decay <= 1.0:
            raise ValueError(f"stim_decay must be in (0, 1], got {stim_decay}")
        self.obs_dim, self.action_dim, self.stim_dim = int(obs_dim), int(action_dim), int(stim_dim)
        self.n, self.tau, self.sparsity = int(n), float(tau), float(sparsity)
        self.stim_sigma = float(stim_sigma)
        self.temporal = bool(temporal)
        self.stim_decay = float(stim_decay) if temporal else 1.0
        N = 3 * self.n

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            J_mask = self._connectivity_mask()
            J = torch.zeros(N, N)
            nn_ = self.n
            for m in range(3):  # dense within a module
                s = slice(m * nn_, (m + 1) * nn_)
                J[s, s] = torch.randn(nn_, nn_) * (1.2 / math.sqrt(nn_))
            for out_m, in_m in ((1, 0), (2, 1), (0, 1), (1, 2)):  # M1->F5, F5->AIP, F5->M1, AIP->F5
                so = slice(out_m * nn_, (out_m + 1) * nn_)
                si = slice(in_m * nn_, (in_m + 1) * nn_)
                J[so, si] = torch.randn(nn_, nn_) * (1.0 / math.sqrt(nn_))
            I_mask = torch.zeros(N, self.obs_dim)
            I_mask[2 * nn_ :] = 1.0  # input enters AIP
            I_init = torch.randn(N, self.obs_dim) / math.sqrt(max(self.obs_dim, 1))
            b = torch.rand(N) * 2.0 - 1.0
            self.J = nn.Parameter(J * J_mask)
            self.I = nn.Parameter(I_init * I_mask)
            self.b = nn.Parameter(b)
            self.x0 = nn.Parameter(torch.zeros(N))
            self.readout = nn.Linear(nn_, readout_dim)
            layers: list[nn.Module] = []
            width = readout_dim
            for h in head_hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, self.action_dim))
            self.head = nn.Sequential(*layers)

        self.register_buffer("J_mask", J_mask)
        self.register_buffer("I_mask", I_mask)
        self.register_buffer("lesion_mask", torch.ones(N))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))
        self.register_buffer("stim_kernel", gaussian_stim_kernel(nn_, self.stim_dim, stim_sigma))
        self._state: BrainState | None = None

    # ----------------------------------------------------------------------------- structure
    def _connectivity_mask(self) -> Tensor:
        """0/1 ``(3n, 3n)`` mask (rows = receiving neuron): dense diagonal blocks, and exactly
        ``int(sparsity n^2)`` random entries in each of the blocks M1->F5, F5->AIP, F5->M1,
        AIP->F5 (``mRNN.py``). Uses the current torch RNG (seeded by the constructor)."""
        n, N = self.n, 3 * self.n
        mask = torch.zeros(N, N)
        for m in range(3):
            mask[m * n : (m + 1) * n, m * n : (m + 1) * n] = 1.0
        count = int(self.sparsity * n * n)
        for out_m, in_m in ((1, 0), (2, 1), (0, 1), (1, 2)):
            block = torch.zeros(n * n)
            block[torch.randperm(n * n)[:count]] = 1.0
            mask[out_m * n : (out_m + 1) * n, in_m * n : (in_m + 1) * n] = block.view(n, n)
        return mask

    def module_slice(self, module: str | int) -> slice:
        """Neuron indices of a module ("M1", "F5", "AIP" or 0..2)."""
        m = MODULES.index(module) if isinstance(module, str) else int(module)
        return slice(m * self.n, (m + 1) * self.n)

    @torch.no_grad()
    def apply_masks_(self) -> None:
        """Re-zero the masked entries of ``J`` and ``I`` (call after every optimiser step)."""
        self.J.mul_(self.J_mask)
        self.I.mul_(self.I_mask)

    @torch.no_grad()
    def set_obs_normalization(self, mean, std, min_std: float = 1e-2) -> None:
        """Fixed sensory encoding ``u = (obs - mean) / max(std, min_std)`` (default 0 and 1)."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=self.obs_mean.dtype))
        self.obs_std.copy_(torch.as_tensor(std, dtype=self.obs_std.dtype).clamp_min(min_std))

    @torch.no_grad()
    def lesion(self, p: float, rng: np.random.Generator, module: str | int = "M1") -> np.ndarray:
        """Silence exactly ``round(p n)`` neurons of ``module`` chosen by ``rng`` (replacing any
        earlier lesion); returns their global indices, sorted. ``p = 0`` heals the brain."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"lesion fraction must be in [0, 1], got {p}")
        sl = self.module_slice(module)
        k = int(round(p * self.n))
        idx = np.sort(rng.choice(self.n, size=k, replace=False)) + sl.start
        self.lesion_mask.fill_(1.0)
        self.lesion_mask[torch.as_tensor(idx, dtype=torch.long)] = 0.0
        return idx

    @property
    def lesioned(self) -> np.ndarray:
        """Global indices of the silenced neurons."""
        return np.flatnonzero(self.lesion_mask.cpu().numpy() == 0.0)

    # ------------------------------------------------------------------------------ dynamics
    def initial_state(self, batch: int) -> BrainState:
        """``x = x0`` (lesioned), ``r = ReTanh(x)``, no stimulation current (``mRNN.forward`` on
        first use)."""
        x = (self.x0 * self.lesion_mask).expand(batch, -1)
        c = torch.zeros(batch, self.n, device=x.device, dtype=x.dtype)
        return BrainState(x=x, r=retanh(x), c=c)

    def _input_drive(self, obs: Tensor) -> Tensor:
        """``I u + b`` with the fixed sensory encoding ``u = (obs - mean) / std``."""
        u = (obs - self.obs_mean) / self.obs_std
        return u @ (self.I * self.I_mask).T + self.b

    def _update(self, x: Tensor, r: Tensor, inp: Tensor, Jt: Tensor, c: Tensor | None):
        """``x + (-x + J r + inp + [c, 0, 0]) / tau``, lesioned; returns ``(x', ReTanh(x'))``."""
        drive = torch.addmm(inp, r, Jt)
        if c is not None:
            drive = drive + nn.functional.pad(c, (0, 2 * self.n))
        x = (x + (drive - x) / self.tau) * self.lesion_mask
        return x, retanh(x)

    def tick(self, state: BrainState, obs: Tensor, stim: Tensor | None = None) -> BrainState:
        """One differentiable tick. ``obs`` ``(B, obs_dim)``; ``stim`` ``(B, stim_dim)`` or None.

        ``c = kernel^T stim + (1 - decay) c_prev`` is added to M1's input, then
        ``x' = x + (-x + J r + I u + b + [c, 0, 0]) / tau``, lesioned, and ``r' = ReTanh(x')``.
        """
        c = state.c * (1.0 - self.stim_decay)
        if stim is not None and self.stim_dim > 0:
            c = c + stim.to(c.dtype) @ self.stim_kernel
        Jt = (self.J * self.J_mask).T
        x, r = self._update(state.x, state.r, self._input_drive(obs), Jt, c)
        return BrainState(x=x, r=r, c=c)

    def action_from(self, state: BrainState) -> Tensor:
        """``tanh(head(readout(r_M1)))`` in [-1, 1]."""
        return self._act_head(state.r[..., : self.n])

    def _act_head(self, r_m1: Tensor) -> Tensor:
        return torch.tanh(self.head(self.readout(r_m1)))

    def rollout(
        self,
        obs_seq: Tensor,
        stim_seq: Tensor | None = None,
        *,
        state: BrainState | None = None,
        tbptt: int | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, BrainState]:
        """Differentiable run over ``obs_seq`` ``(T, B, obs_dim)`` (and ``stim_seq``
        ``(T, B, stim_dim)``, or None for no stimulation) from ``state`` (default: a fresh
        state); returns actions ``(T, B, action_dim)`` (and the final state if
        ``return_state``). Same dynamics as ``T`` calls of :meth:`tick`, with the input drive
        and the action head batched over time. ``tbptt``: detach the recurrent state every that
        many ticks (truncated BPTT)."""
        T, B = obs_seq.shape[0], obs_seq.shape[1]
        s = self.initial_state(B) if state is None else state
        x, r, c = s.x, s.r, s.c
        Jt = (self.J * self.J_mask).T
        inp = self._input_drive(obs_seq)
        stim_in = None
        if stim_seq is not None and self.stim_dim > 0:
            stim_in = stim_seq.to(inp.dtype) @ self.stim_kernel
        use_c = stim_in is not None or state is not None
        rates = []
        for t in range(T):
            if tbptt is not None and t > 0 and t % tbptt == 0:
                x, r, c = x.detach(), r.detach(), c.detach()
            if use_c:
                c = c * (1.0 - self.stim_decay)
                if stim_in is not None:
                    c = c + stim_in[t]
            x, r = self._update(x, r, inp[t], Jt, c if use_c else None)
            rates.append(r[:, : self.n])
        if rates:
            actions = self._act_head(torch.stack(rates))
        else:
            actions = obs_seq.new_zeros(0, B, self.action_dim)
        if return_state:
            return actions, BrainState(x=x, r=r, c=c)
        return actions

    # ----------------------------------------------------------------------- Brain protocol
    def reset(self, n: int = 1) -> None:
        """Fresh recurrent state for ``n`` parallel episodes."""
        with torch.no_grad():
            self._state = self.initial_state(n).clone()

    @torch.no_grad()
    def act(self, obs: Tensor, stim: Tensor | None = None) -> Tensor:
        """One tick (one env step) of the ``n`` episodes; returns actions ``(n, action_dim)`` in
        [-1, 1]. ``stim`` ``(n, stim_dim)`` or None (no stimulation)."""
        obs = torch.as_tensor(obs, dtype=self.b.dtype, device=self.b.device)
        if obs.dim() == 1:
            obs = obs.unsqueeze(0)
        if self._state is None or self._state.x.shape[0] != obs.shape[0]:
            if self._state is not None:
                raise RuntimeError(
                    f"act got {obs.shape[0]} observations but the brain was reset for "
                    f"{self._state.x.shape[0]}; call reset(n) first"
                )
            self.reset(obs.shape[0])
        if stim is not None:
            stim = torch.as_tensor(stim, dtype=self.b.dtype, device=self.b.device)
            if stim.dim() == 1:
                stim = stim.unsqueeze(0)
        self._state = self.tick(self._state, obs, stim)
        return self.action_from(self._state)

    @property
    def state(self) -> BrainState | None:
        """The ``act`` state (``x``, ``r``, ``c``); None before the first reset/act."""
        return self._state

    def snapshot(self) -> BrainState | None:
        """A copy of the ``act`` state (e.g. to simulate a stimulation and roll back)."""
        return None if self._state is None else self._state.clone()

    def restore(self, snapshot: BrainState | None) -> None:
        self._state = None if snapshot is None else snapshot.clone()


# ------------------------------------------------------------------------------- teachers
_REACHER_L1, _REACHER_L2 = 0.1, 0.11  # Reacher's link lengths (reacher.xml)


def reacher_pd_teacher(obs: Tensor, kp: float = 20.0, kd: float = 2.0) -> Tensor:
    """A hand-written operational-space PD controller for Reacher-v5 (test/benchmark teacher):
    Cartesian force ``F = -kp e - kd v`` on the fingertip (``e = obs[8:10]``, ``v = J qdot``),
    joint torques ``J^T F``, clipped to [-1, 1]. Mean return about -5.2 (-4.9 to -5.5 on sets of
    100 episodes; doing nothing: about -11.5)."""
    c1, c2, s1, s2 = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3]
    c12, s12 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
    qd, e = obs[:, 6:8], obs[:, 8:10]
    L1, L2 = _REACHER_L1, _REACHER_L2
    j00, j01 = -L1 * s1 - L2 * s12, -L2 * s12
    j10, j11 = L1 * c1 + L2 * c12, L2 * c12
    vx = j00 * qd[:, 0] + j01 * qd[:, 1]
    vy = j10 * qd[:, 0] + j11 * qd[:, 1]
    fx, fy = -kp * e[:, 0] - kd * vx, -kp * e[:, 1] - kd * vy
    tau = torch.stack([j00 * fx + j10 * fy, j01 * fx + j11 * fy], dim=1)
    return tau.clamp(-1.0, 1.0)


def pendulum_swingup_teacher(obs: Tensor, k: float = 1.0, kp: float = 20.0, kd: float = 5.0):
    """A hand-written Pendulum-v1 controller (test/benchmark teacher): energy pumping
    ``u = k (E* - E) sign(w)`` with ``E = w^2/2 + 15 cos th`` (the env's ``th'' = 15 sin th +
    3 u``), and PD ``u = -kp th - kd w`` near the top (cos th > 0.85); torque / 2 clipped to
    [-1, 1]. Mean return about -160 to -180 (doing nothing: about -1200)."""
    c, s, w = obs[:, 0], obs[:, 1], obs[:, 2]
    th = torch.atan2(s, c)
    energy = 0.5 * w * w + 15.0 * c
    sign = torch.where(w.abs() > 1e-3, torch.sign(w), torch.ones_like(w))
    u = torch.where(c > 0.85, -kp * th - kd * w, k * (15.0 - energy) * sign)
    return (u / 2.0).clamp(-1.0, 1.0).unsqueeze(1)


# ---------------------------------------------------------------------------- episodes
def _unscale(action: np.ndarray, space) -> np.ndarray:
    lo, hi = space.low, space.high
    return (lo + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo)).astype(space.dtype)


def run_episodes(
    envs: list,
    policy: Callable[[Tensor], Tensor],
    rng: np.random.Generator,
    *,
    reset: Callable[[int], None] | None = None,
    teacher: Callable[[Tensor], Tensor] | None = None,
    beta: float = 0.0,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """One episode in each env, in lockstep, with ``policy`` (obs ``(n, d)`` -> action in
    [-1, 1]); ``reset(n)`` first if given (recurrent policies). With a ``teacher``, each step of
    each episode executes the teacher's action with probability ``beta`` (DAgger's mixture) and
    every visited observation is labelled with the teacher's action.

    Returns per-episode observations ``(T_e, d)``, teacher labels ``(T_e, A)`` (empty arrays
    without a teacher) and returns ``(n,)``. Env seeds are drawn from ``rng``.
    """
    E = len(envs)
    obs = np.stack([env.reset(seed=int(rng.integers(2**31)))[0] for env in envs])
    if reset is not None:
        reset(E)
    active = np.ones(E, dtype=bool)
    rets = np.zeros(E)
    obs_log: list[list[np.ndarray]] = [[] for _ in range(E)]
    lab_log: list[list[np.ndarray]] = [[] for _ in range(E)]
    while active.any():
        o = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            a = policy(o).detach().cpu().numpy()
            if teacher is not None:
                ta = teacher(o).detach().cpu().numpy()
                use = rng.random(E) < beta
                a = np.where(use[:, None], ta, a)
        for i in np.flatnonzero(active):
            obs_log[i].append(obs[i].copy())
            if teacher is not None:
                lab_log[i].append(ta[i])
            nxt, r, term, trunc, _ = envs[i].step(_unscale(a[i], envs[i].action_space))
            rets[i] += float(r)
            obs[i] = nxt
            if term or trunc:
                active[i] = False
    obs_eps = [np.asarray(x, dtype=np.float32) for x in obs_log]
    labs = [np.asarray(x, dtype=np.float32) for x in lab_log]
    return obs_eps, labs, rets


def evaluate(
    policy: Callable[[Tensor], Tensor] | MichaelsBrain,
    make_env: Callable[[], object],
    *,
    episodes: int,
    rng: np.random.Generator,
    stim: Tensor | None = None,
) -> np.ndarray:
    """Returns of ``episodes`` episodes (run in lockstep) of a brain (``act(obs, stim)``, reset
    first) or of a stateless callable policy."""
    envs = [make_env() for _ in range(episodes)]
    try:
        if isinstance(policy, MichaelsBrain):
            brain = policy
            _, _, rets = run_episodes(envs, lambda o: brain.act(o, stim), rng, reset=brain.reset)
        else:
            _, _, rets = run_episodes(envs, policy, rng)
    finally:
        for env in envs:
            env.close()
    return rets


def _pad(seqs: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Episodes ``(T_e, d)`` -> ``(T_max, B, d)`` zero-padded and a ``(T_max, B)`` mask."""
    T = max(len(s) for s in seqs)
    out = np.zeros((T, len(seqs), seqs[0].shape[1]), dtype=np.float32)
    mask = np.zeros((T, len(seqs)), dtype=np.float32)
    for j, s in enumerate(seqs):
        out[: len(s), j] = s
        mask[: len(s), j] = 1.0
    return torch.from_numpy(out), torch.from_numpy(mask)


def train_dagger(
    brain: MichaelsBrain,
    make_env: Callable[[], object],
    teacher: Callable[[Tensor], Tensor],
    *,
    iterations: int,
    episodes_per_iter: int,
    epochs: int,
    lr: float,
    rng: np.random.Generator,
    beta_decay: float = 0.7,
    batch_episodes: int = 16,
    recurrent_lr: float | None = 3e-2,
    tbptt: int | None = None,
    max_grad_norm: float | None = 1.0,
    normalize_obs: bool = True,
    eval_episodes: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Clone ``teacher`` (obs ``(n, obs_dim)`` -> action in [-1, 1]) into ``brain`` by DAgger
    (Ross, Gordon & Bagnell 2011, Alg. 3.1).

    Iteration ``i`` (``beta_i = beta_decay ** i``, so ``beta_0 = 1``: teacher-only data first)
    runs ``episodes_per_iter`` episodes of the mixture (per step: the teacher's action with
    probability ``beta_i``, else the brain's), labels every visited state with the teacher,
    adds the episodes to the aggregate, and then trains for ``epochs`` passes over all episodes
    gathered so far, in minibatches of ``batch_episodes`` whole episodes: BPTT from a fresh
    state (truncated every ``tbptt`` ticks if given), masked MSE to the labels, Adam, gradient
    clipping, and re-masking of the sparse weights after each step. Env actions are unscaled
    from [-1, 1] to the env's Box. The lesion and stimulation are left as they are (clone a
    healthy, unstimulated brain). ``progress(i)`` is called after iteration ``i``.

    - ``lr`` is the Adam step of the readout and head; the recurrent core (``J``, ``I``, ``b``,
      ``x0``) uses ``recurrent_lr`` (None: ``lr``). The core's gradients pass through the
      ``1/tau = 0.1`` leak of up to three modules, and the clone must grow strong weights to
      react within a few ticks: on Reacher-v5 (n = 32, head lr 1e-3) a core step of 1e-3 or
      1e-2 leaves the brain too slow (returns about 1.5-2x the teacher's), 3e-2 reaches about
      1.1-1.2x, 1e-1 is unstable. Head steps of 1e-3 and 3e-3 did about equally well.
    - ``normalize_obs``: set the brain's fixed sensory encoding (observation mean and std)
      from iteration 0's teacher-driven states.
    - ``eval_episodes > 0``: after each iteration, run the student alone (beta = 0) on the same
      ``eval_episodes`` validation seeds and keep the best iterate ("return the best policy on
      validation", as DAgger does); the teacher is scored on the same seeds once.

    Returns metrics: ``loss`` (mean loss per epoch, all iterations), ``iteration_loss`` (last
    epoch's loss per iteration), ``mixture_return`` and ``beta`` per iteration, with
    validation ``student_return`` per iteration, ``teacher_return``, ``best_iteration``
    (1-based) and ``best_return``; ``episodes``, ``transitions``, ``gradient_steps``,
    ``cpu_seconds`` (this process's CPU time, validation included) and ``wall_seconds``.
    """
    if iterations < 1 or episodes_per_iter < 1 or epochs < 0 or eval_episodes < 0:
        raise ValueError(
            "need iterations >= 1, episodes_per_iter >= 1, epochs >= 0, eval_episodes >= 0"
        )
    if not 0.0 <= beta_decay <= 1.0:
        raise ValueError(f"beta_decay must be in [0, 1], got {beta_decay}")
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    envs = [make_env() for _ in range(episodes_per_iter)]
    val_envs = [make_env() for _ in range(eval_episodes)]
    val_seed = int(rng.integers(2**31))
    core = [brain.J, brain.I, brain.b, brain.x0]
    rest = [p for p in brain.parameters() if all(p is not q for q in core)]
    opt = torch.optim.Adam(
        [
            {"params": core, "lr": lr if recurrent_lr is None else recurrent_lr},
            {"params": rest, "lr": lr},
        ]
    )
    data_obs: list[np.ndarray] = []
    data_lab: list[np.ndarray] = []
    metrics: dict = {
        "loss": [],
        "iteration_loss": [],
        "mixture_return": [],
        "beta": [],
        "student_return": [],
    }
    best: tuple[float, int, dict] | None = None
    steps = 0
    was_training = brain.training
    try:
        if val_envs:
            _, _, t_rets = run_episodes(val_envs, teacher, np.random.default_rng(val_seed))
            metrics["teacher_return"] = float(np.mean(t_rets))
        for it in range(iterations):
            beta = beta_decay**it
            brain.eval()
            obs_eps, labs, rets = run_episodes(
                envs,
                lambda o: brain.act(o, None),
                rng,
                reset=brain.reset,
                teacher=teacher,
                beta=beta,
            )
            data_obs += obs_eps
            data_lab += labs
            if it == 0 and normalize_obs:
                allo = np.concatenate(obs_eps)
                brain.set_obs_normalization(allo.mean(axis=0), allo.std(axis=0))
            metrics["beta"].append(beta)
            metrics["mixture_return"].append(float(np.mean(rets)))
            brain.train()
            for _ in range(epochs):
                order = rng.permutation(len(data_obs))
                total, weight = 0.0, 0.0
                for start in range(0, len(order), batch_episodes):
                    idx = order[start : start + batch_episodes]
                    o, mask = _pad([data_obs[j] for j in idx])
                    y, _ = _pad([data_lab[j] for j in idx])
                    pred = brain.rollout(o, tbptt=tbptt)
                    err = ((pred - y) ** 2).mean(dim=2) * mask
                    loss = err.sum() / mask.sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if max_grad_norm is not None:
                        nn.utils.clip_grad_norm_(brain.parameters(), max_grad_norm)
                    opt.step()
                    brain.apply_masks_()
                    steps += 1
                    total += loss.item() * float(mask.sum())
                    weight += float(mask.sum())
                metrics["loss"].append(total / weight)
            if epochs:
                metrics["iteration_loss"].append(metrics["loss"][-1])
            if val_envs:
                brain.eval()
                _, _, s_rets = run_episodes(
                    val_envs,
                    lambda o: brain.act(o, None),
                    np.random.default_rng(val_seed),
                    reset=brain.reset,
                )
                score = float(np.mean(s_rets))
                metrics["student_return"].append(score)
                if best is None or score > best[0]:
                    snapshot = {k: v.detach().clone() for k, v in brain.state_dict().items()}
                    best = (score, it + 1, snapshot)
            if progress is not None:
                progress(it + 1)
    finally:
        for env in envs + val_envs:
            env.close()
        brain.train(was_training)
        brain._state = None
    if best is not None:
        brain.load_state_dict(best[2])
        metrics["best_return"], metrics["best_iteration"] = best[0], best[1]
    metrics["episodes"] = len(data_obs)
    metrics["transitions"] = int(sum(len(x) for x in data_obs))
    metrics["gradient_steps"] = steps
    metrics["cpu_seconds"] = time.process_time() - t_cpu
    metrics["wall_seconds"] = time.perf_counter() - t_wall
    return metrics


__all__ = [
    "DEFAULT_STIM_SIGMA",
    "MODULES",
    "TEMPORAL_STIM_DECAY",
    "BrainState",
    "MichaelsBrain",
    "evaluate",
    "gaussian_stim_kernel",
    "pendulum_swingup_teacher",
    "reacher_pd_teacher",
    "retanh",
    "run_episodes",
    "train_dagger",
]
