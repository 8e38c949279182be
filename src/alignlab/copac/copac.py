"""Coprocessor Actor Critic (Pan et al., ICML 2024; the method as the official code runs it).

The paper's full text was not available offline (only its abstract), so this module cites
the official code (michelllepan/neural-coprocessors@af10179) for every step.

A coprocessor picks a stimulation x; the injured brain maps (s, x) to a world action a. CopAC
splits the problem in two:

1. **Act optimally in the world.** Q*(s, a) is the healthy brain's own SAC critic, learned on
   the world without the patient.
2. **Learn to induce actions.** f_phi(s, x) -> a_hat in [-1, 1]^|A| (`ActionNet`: MLP 64-32-8,
   tanh output; `coprocessors/action_converter/basics/action_net.py`) is fitted by MSE to the
   brain's scaled actions seen in patient episodes, and the coprocessor acts by Q-max through
   the model:

       x*(s) = argmax_{x in [-5, 5]^k} min(Q1, Q2)(s, f_phi(s, x))

   by grid search (`utils/optimization_methods.py::grid_search`; L-BFGS and dual annealing
   are options).
3. **Q-updates** (`policies/qmax_only.py`, `train_q`): after each
   patient episode beyond `update_start`, run simulated episodes in the free world simulator
   with a_hat = f_phi(s, x*) and fit Q to the TD target

       y = r + gamma * min(Q1', Q2')(s', f_phi(s', x*'))

   so that Q values the actions the injured brain can actually reach. As in the code there is
   no done mask (the gym tasks used never terminate early), x*' is chosen on a coarser grid
   when the step is simulated and stored, and Q' trails Q by Polyak averaging per batch.

Every fit follows the official `train()` loops: a fresh Adam, batch 64, warm start, at most
75 (f) or 50 (Q) epochs, and every 10 epochs the fit stops if the mean epoch-to-epoch drop of
the training loss since the last check is below 1e-3 (`StopRule`).

Methods (README of the official code): `copac` (Q-max + Q-updates), `copac_noq` (no
Q-updates), `random_f` (uniform random stimulation collects f's data; tests act by Q-max
through f), `inverse` (x = g(s, pi*(s)) with g an inverse model; `FInversePolicy`; its role in
the paper is unconfirmed), `true_f` (an oracle: Q-max through the real brain, nothing learned).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alignlab.copac.brain import STIM_HIGH, STIM_LOW
from alignlab.copac.envs import to_env_action
from alignlab.core.config import param
from alignlab.rl.polyak import polyak_update

METHODS = ("copac", "copac_noq", "random_f", "inverse", "true_f")
OPTIMIZERS = ("grid", "lbfgs", "anneal")
MAX_GRID = 1_000_000  # disc^k candidates beyond this are refused


@dataclass
class CopACConfig:
    """CopAC's hyperparameters; defaults are the official code's (`train_action_conv.py`)."""

    disc_act: int = param(100, ge=2, help="grid points per stimulation dimension when acting")
    disc_td: int = param(50, ge=2, help="grid points per dimension for the TD target's x*'")
    optimizer: str = param("grid", choices=OPTIMIZERS, help="how x* is found")
    f_lr: float = param(5e-3, gt=0, help="f's Adam step size")
    f_epochs: int = param(75, ge=1, help="f's maximum epochs per fit")
    refit_every: int = param(10, ge=1, help="patient steps between f's refits (within episode)")
    refit_start: int = param(5, ge=0, help="patient steps before f's first refit")
    batch_size: int = param(64, ge=1, help="minibatch of every fit")
    q_episodes: int = param(5, ge=0, help="simulated episodes of Q-updates per patient episode")
    update_start: int = param(3, ge=0, help="patient episodes before Q-updates begin")
    sim_fill: int = param(500, ge=0, help="simulated steps collected before the first Q fit")
    q_fit_every: int = param(50, ge=1, help="simulated steps between Q fits")
    q_lr: float = param(1e-4, gt=0, help="Q's Adam step size")
    q_epochs: int = param(50, ge=1, help="Q's maximum epochs per fit")
    q_tau: float = param(1e-3, gt=0, le=1, help="Polyak rate of Q's target, per batch")
    gamma: float = param(0.99, gt=0, le=1, help="discount of the TD target")
    done_mask: bool = param(False, help="mask the TD target at terminal states (the code: no)")
    stop_every: int = param(10, ge=1, help="epochs between the stop rule's checks")
    stop_min_drop: float = param(1e-3, ge=0, help="mean loss drop below which a fit stops")


def check_grid(disc: int, k: int) -> None:
    if disc**k > MAX_GRID:
        raise ValueError(
            f"a grid of {disc}^{k} = {disc**k:,} stimulations is over the limit of "
            f"{MAX_GRID:,}: lower disc_act/disc_td or use optimizer 'lbfgs' or 'anneal'"
        )


class ActionNet(nn.Module):
    """f_phi(s, x) -> a_hat in [-1, 1]^|A|: MLP 64-32-8 with ReLU and a tanh output
    (`ActionNet`); with `inverse`, g(s, a) -> x in [-5, 5]^k (`InverseActionNet`, whose
    tanh output we scale by 5: unscaled it could not reach the stimulation box)."""

    def __init__(self, obs_dim: int, in_dim: int, out_dim: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.layers = nn.Sequential(
            nn.Linear(obs_dim + in_dim, 64),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 8),
            nn.ReLU(),
            nn.Linear(8, out_dim),
            nn.Tanh(),
        )

    def forward(self, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(torch.cat([obs, x], dim=-1))
        return out * self.scale if self.scale != 1.0 else out


class StopRule:
    """The official fits' early stop: each epoch appends (previous loss - this loss), with the
    previous loss 10,000 before the first epoch; at epochs 0, every, 2 every, ... the fit stops
    if the mean of the appended drops is below `min_drop`, and otherwise the list is cleared."""

    def __init__(self, every: int = 10, min_drop: float = 1e-3):
        self.every, self.min_drop = every, min_drop
        self.prev, self.drops = 10_000.0, []

    def __call__(self, epoch: int, loss: float) -> bool:
        self.drops.append(self.prev - loss)
        self.prev = loss
        if epoch % self.every == 0:
            if float(np.mean(self.drops)) < self.min_drop:
                return True
            self.drops = []
        return False


def fit(
    loss_fn: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    params,
    data: tuple[torch.Tensor, ...],
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
    stop: StopRule,
    after_step: Callable[[], None] | None = None,
) -> dict:
    """Minibatch Adam on `loss_fn(batch)` over shuffled `data` (a fresh optimiser: each official
    fit builds one); returns the epochs run and the last epoch's mean loss."""
    opt = torch.optim.Adam(params, lr=lr)
    n = len(data[0])
    loss_mean = float("nan")
    epoch = -1
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = loss_fn(tuple(d[idx] for d in data))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(idx)
        loss_mean = total / n
        if stop(epoch, loss_mean):
            break
    return {"epochs": epoch + 1, "loss": loss_mean}


def grid(disc: int, k: int) -> torch.Tensor:
    """All disc^k stimulations of the grid on [-5, 5]^k, (disc^k, k), the last dimension
    fastest."""
    axis = torch.linspace(STIM_LOW, STIM_HIGH, disc)
    mesh = torch.meshgrid(*([axis] * k), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


@torch.no_grad()
def qmax(
    critic: nn.Module,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: torch.Tensor,
    candidates: torch.Tensor,
    chunk: int = 262_144,
) -> torch.Tensor:
    """x*(s) = argmax over `candidates` of min(Q1, Q2)(s, model(s, x)) for each row of obs,
    (B, k), in one batch of B * G rows (chunked); ties go to the first candidate."""
    b, g = len(obs), len(candidates)
    best = torch.empty(b, dtype=torch.long)
    rows = max(1, chunk // g)
    for i in range(0, b, rows):
        o = obs[i : i + rows]
        o_rep = o.repeat_interleave(g, dim=0)
        x_rep = candidates.repeat(len(o), 1)
        q = critic.q_min(o_rep, model(o_rep, x_rep)).reshape(len(o), g)
        best[i : i + rows] = q.argmax(dim=1)
    return candidates[best]


def qmax_scipy(critic, model, obs: torch.Tensor, k: int, method: str, seed: int) -> torch.Tensor:
    """x* by scipy's L-BFGS-B from x = 0 (`lbfgs`) or dual annealing, maxiter 100
    (`sim_anneal`), one state at a time, as `utils/optimization_methods.py`."""
    from scipy import optimize

    bounds = [(STIM_LOW, STIM_HIGH)] * k
    out = []
    for s in obs:

        def objective(x, s=s):
            x = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(-1, k))
            with torch.no_grad():
                o = s[None].expand(len(x), -1)
                return float(-critic.q_min(o, model(o, x)).sum())

        if method == "lbfgs":
            res = optimize.minimize(objective, np.zeros(k), bounds=bounds)
        else:
            res = optimize.dual_annealing(objective, bounds=bounds, maxiter=100, seed=seed)
        out.append(np.asarray(res.x, dtype=np.float32))
    return torch.as_tensor(np.stack(out))


class CopAC:
    """One coprocessor learning for one patient (`method` in METHODS).

    `brain` is the patient's brain (used only by `true_f`, and to read the world actions the
    patient env reports); `critic` is Q*, copied so that Q-updates never touch the cache;
    `healthy_actor` (scaled pi*) serves `inverse`. Randomness comes from `seed`.
    """

    def __init__(
        self,
        method: str,
        cfg: CopACConfig,
        *,
        obs_dim: int,
        action_dim: int,
        stim_dim: int,
        critic: nn.Module,
        brain,
        healthy_actor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        if cfg.optimizer == "grid":
            check_grid(cfg.disc_act, stim_dim)
            check_grid(cfg.disc_td, stim_dim)
        self.method, self.cfg, self.k = method, cfg, stim_dim
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.brain, self.healthy_actor = brain, healthy_actor
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.f = ActionNet(obs_dim, stim_dim, action_dim)
        self.g = ActionNet(obs_dim, action_dim, stim_dim, scale=STIM_HIGH)
        self.q = copy.deepcopy(critic)
        for p in self.q.parameters():
            p.requires_grad_(True)
        self.q_target = copy.deepcopy(self.q)
        for p in self.q_target.parameters():
            p.requires_grad_(False)
        self.grid_act = grid(cfg.disc_act, stim_dim) if cfg.optimizer == "grid" else None
        self.grid_td = grid(cfg.disc_td, stim_dim) if cfg.optimizer == "grid" else None
        self.data: dict[str, list] = {"obs": [], "stim": [], "action": []}
        self.sim: dict[str, list] = {
            k: [] for k in ("obs", "next_obs", "reward", "action", "next_stim", "done")
        }
        self.steps = 0  # patient steps
        self.sim_steps = 0
        self.fits: list[dict] = []
        self.q_fits: list[dict] = []

    # -- the model of the brain -------------------------------------------------------------

    def model(self, obs: torch.Tensor, stim: torch.Tensor) -> torch.Tensor:
        """The action a stimulation is predicted to induce: f_phi, or the brain for true_f."""
        if self.method == "true_f":
            return self.brain.act(obs, stim)
        return self.f(obs, stim)

    def select(self, obs: torch.Tensor, disc: str = "act") -> torch.Tensor:
        """Stimulations (B, k) for states (B, d) by Q-max through the model (or g for inverse)."""
        if self.method == "inverse":
            with torch.no_grad():
                return self.g(obs, self.healthy_actor(obs)).clamp(STIM_LOW, STIM_HIGH)
        if self.cfg.optimizer != "grid":
            return qmax_scipy(self.q, self.model, obs, self.k, self.cfg.optimizer, self.seed)
        cands = self.grid_act if disc == "act" else self.grid_td
        return qmax(self.q, self.model, obs, cands)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """The stimulation used during a patient episode: greedy, except random_f's uniform
        draws."""
        if self.method == "random_f":
            return torch.as_tensor(
                self.rng.uniform(STIM_LOW, STIM_HIGH, size=(len(obs), self.k)), dtype=torch.float32
            )
        return self.select(obs)

    def fit_model(self) -> dict:
        """Refit f (or g for inverse) on all patient data, warm-started (`train()`)."""
        obs = torch.as_tensor(np.asarray(self.data["obs"]), dtype=torch.float32)
        stim = torch.as_tensor(np.asarray(self.data["stim"]), dtype=torch.float32)
        act = torch.as_tensor(np.asarray(self.data["action"]), dtype=torch.float32)
        if self.method == "inverse":
            net, target, inp = self.g, stim, act
        else:
            net, target, inp = self.f, act, stim
        out = fit(
            lambda b: nn.functional.mse_loss(net(b[0], b[1]), b[2]),
            net.parameters(),
            (obs, inp, target),
            lr=self.cfg.f_lr,
            epochs=self.cfg.f_epochs,
            batch_size=self.cfg.batch_size,
            gen=self.gen,
            stop=StopRule(self.cfg.stop_every, self.cfg.stop_min_drop),
        )
        self.fits.append(out)
        return out

    # -- patient episodes -------------------------------------------------------------------

    def observe(self, obs: np.ndarray, stim: np.ndarray, world_action: np.ndarray, j: int) -> None:
        """Record one patient step (j: its index within the episode) and refit on schedule."""
        self.data["obs"].append(np.asarray(obs, np.float32))
        self.data["stim"].append(np.asarray(stim, np.float32))
        self.data["action"].append(np.asarray(world_action, np.float32))
        if (
            self.method != "true_f"
            and j % self.cfg.refit_every == 0
            and self.steps >= self.cfg.refit_start
        ):
            self.fit_model()
        self.steps += 1

    def patient_episode(self, env, seed: int) -> float:
        """One episode on the patient (a PatientEnv), acting by `explore`; returns its return."""
        obs, _ = env.reset(seed=seed)
        total, done, j = 0.0, False, 0
        while not done:
            x = self.explore(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            nxt, r, term, trunc, info = env.step(x)
            self.observe(obs, x, info["world_action"], j)
            total += float(r)
            obs, done, j = nxt, term or trunc, j + 1
        return total

    # -- Q-updates in the simulator ---------------------------------------------------------

    @torch.no_grad()
    def td_target(self, nxt, rew, next_stim, done) -> torch.Tensor:
        """y = r + gamma (1 - done) min(Q1', Q2')(s', f(s', x*')), done all 0 without
        `done_mask`; x*' was chosen when the step was simulated."""
        nq = self.q_target.q_min(nxt, self.model(nxt, next_stim))
        return rew + self.cfg.gamma * (1.0 - done) * nq

    def q_fit(self) -> dict:
        """Fit Q on the simulated buffer to y = r + gamma min Q'(s', f(s', x*'))."""
        cfg = self.cfg
        sim = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in self.sim.items()}
        for p in self.f.parameters():
            p.requires_grad_(False)

        def loss(b):
            obs, nxt, rew, act, nstim, done = b
            y = self.td_target(nxt, rew, nstim, done)
            q1, q2 = self.q(obs, act)
            pred = torch.stack([q1[:, 0], q2[:, 0]])
            return nn.functional.mse_loss(pred, y.expand(2, -1))

        out = fit(
            loss,
            self.q.parameters(),
            tuple(sim[k] for k in ("obs", "next_obs", "reward", "action", "next_stim", "done")),
            lr=cfg.q_lr,
            epochs=cfg.q_epochs,
            batch_size=cfg.batch_size,
            gen=self.gen,
            stop=StopRule(cfg.stop_every, cfg.stop_min_drop),
            after_step=lambda: polyak_update(self.q_target, self.q, cfg.q_tau),
        )
        for p in self.f.parameters():
            p.requires_grad_(True)
        self.q_fits.append(out)
        return out

    def sim_episode(self, world, seed: int, train: bool) -> float:
        """One simulated episode in the world with a_hat = f(s, x*) (`execute_q_tune_episode`)."""
        obs, _ = world.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            x = self.select(o)
            with torch.no_grad():
                a = self.model(o, x)[0].numpy()
            nxt, r, term, trunc, _ = world.step(to_env_action(a, world.action_space))
            x_next = self.select(torch.as_tensor(nxt, dtype=torch.float32)[None], disc="td")[0]
            self.sim["obs"].append(np.asarray(obs, np.float32))
            self.sim["next_obs"].append(np.asarray(nxt, np.float32))
            self.sim["reward"].append(float(r))
            self.sim["done"].append(float(term and self.cfg.done_mask))
            self.sim["action"].append(a.astype(np.float32))
            self.sim["next_stim"].append(x_next.numpy())
            total += float(r)
            if train and self.sim_steps % self.cfg.q_fit_every == 0:
                self.q_fit()
            self.sim_steps += 1
            obs, done = nxt, term or trunc
        return total

    def q_updates(self, world, seeds: Callable[[], int]) -> None:
        """After a patient episode: a fresh simulated buffer, filled to `sim_fill` steps the
        first time, then `q_episodes` training episodes (`collect_and_train`)."""
        for k in self.sim:
            self.sim[k] = []
        while self.sim_steps < self.cfg.sim_fill:
            self.sim_episode(world, seeds(), train=False)
        for _ in range(self.cfg.q_episodes):
            self.sim_episode(world, seeds(), train=True)

    @property
    def uses_q_updates(self) -> bool:
        return self.method == "copac" and self.cfg.q_episodes > 0
