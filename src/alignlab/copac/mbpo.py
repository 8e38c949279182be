"""Model-Based Policy Optimization (Janner, Fu, Zhang & Levine, NeurIPS 2019, "When to Trust
Your Model"), the model-based baseline of CopAC (Pan et al., ICML 2024).

The official CopAC code runs MBPO through a vendored mbrl-lib (Pineda et al. 2021,
`mbrl-lib/mbrl/algorithms/mbpo.py`, configs `conf/algorithm/mbpo.yaml`,
`conf/dynamics_model/gaussian_mlp_ensemble.yaml` and `conf/overrides/mbpo_coproc_*.yaml`),
which needs gym < 0.26; this is a compact reimplementation with the same algorithm and values.

Per real env step (Janner et al. 2019, Alg. 2):

1. **Model.** Every `freq_train_model` (250) steps an ensemble of 7 probabilistic MLPs
   (PETS, Chua et al. 2018; mbrl-lib `GaussianMLP`: 4 hidden layers of 200 SiLU units) is
   refitted on all real data: inputs (s, a) normalised by the data's mean and std, targets
   (s' - s, r), Gaussian NLL with the log-variance soft-clamped between bounds (-10, 0.5)
   by softplus, plus 0.01 (sum max_logvar - sum min_logvar); Adam lr 1e-3, weight decay
   1e-5, batch 256, each member on its own bootstrap resample; 20 % of the data held out;
   training stops after 5 epochs without a relative validation-MSE improvement above 1 %
   for any member; every member keeps its weights of best validation MSE, and the 5 best
   members are the elites. All members run in one batched matmul per layer.
2. **Branched rollouts.** Right after each refit, `rollouts_per_step * freq_train_model`
   rollouts start from real states drawn uniformly and run the current policy (sampled
   actions) for h steps through the model; each step each rollout is predicted by a random
   elite (mbrl-lib's "random_model" propagation, balanced as there) and its next state and
   reward are sampled from that elite's Gaussian. h follows the schedule (20, 150, 1, 15):
   h = 1 up to epoch 20, 15 from epoch 150, linear between (mbrl-lib's `truncated_linear`,
   evaluated at epoch + 1 as mbrl-lib does; an epoch is `epoch_length` real steps after the
   exploration). The rollouts fill the model buffer of capacity h x rollouts x
   ceil(epoch_length / freq_train_model) x retained epochs (mbrl-lib's
   `sac_buffer_capacity`), which keeps its newest transitions when h grows.
3. **Agent.** 40 SAC updates (`alignlab.rl.sac`; hidden 512, fixed alpha 0.2, target update
   every 4 steps, batch 256, lr 3e-4) on model data; a fraction `real_data_ratio` of the
   updates (0 in the coproc configs) would use real data instead.

The real env is first explored for 5,000 steps (`initial_exploration_steps`) with the
untrained agent's sampled actions (`random_initial_explore: false`), then acted on with the
policy's mean action (mbrl-lib's `step_env_and_add_to_buffer` calls `agent.act(obs)`, whose
default is the mean). Two choices follow Janner et al.'s code rather than mbrl-lib's: the
first model refit happens right after the exploration (mbrl-lib waits for step 250 of its
loop, acting meanwhile with the untrained policy), and the exploration counts in the
episodes `run` is given (mbrl-lib collects it before its `data_size` patient episodes).
Termination: the env's `terminated` flag for real data; model rollouts use `term_fn`, by
default "never terminates" (mbrl-lib's `no_termination`, the coproc configs' choice).

**QUICK setting** (`quick_config()`): SAC hidden 256, 10 updates per step, 100 rollouts per
step, exploration = 2 episodes. With the patient budgets of the CopAC experiments (10-25
episodes) the paper setting would spend its whole budget in its 5,000-step exploration (25
Pendulum-v1 or 100 Reacher-v5 episodes) and never train the agent; QUICK starts learning
after 2 episodes, so per patient sample it is the stronger baseline (its fewer updates and
rollouts only cost it compute), and comparisons against it are conservative.

Usage: `MBPO(make_env, cfg, seed=...)` holds the env, `.agent` (the SAC) and `.model` (the
ensemble); `.run(episodes, on_episode_end=..., progress=...)` plays that many more real
episodes and returns their returns, and `.predict(obs)` is the greedy agent (env-scale
actions) for tests between episodes. `run_mbpo(...)` does both in one call. All randomness
comes from `seed`: a numpy Generator (env reset seeds, data splits, minibatches, elite
choice), a torch Generator (model samples) and torch's global generator, seeded at
construction (network weights, the actor's noise, as `alignlab.rl.sac`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.config import ConfigError, config_problems, param
from alignlab.core.seeding import generator, seed_torch, torch_generator
from alignlab.rl.replay import ReplayBuffer
from alignlab.rl.sac import SAC, SACConfig

PROPAGATIONS = ("random_model", "fixed_model")
STD_EPS = 1e-12  # mbrl-lib's Normalizer: a feature with std below this is left unscaled
MIN_MODEL_DATA = 2  # real transitions needed before the model can be fitted at all

TermFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | np.ndarray]


@dataclass
class MBPOConfig:
    """MBPO's hyperparameters; defaults are the official coproc configs' (mbrl-lib
    `mbpo_coproc_*.yaml`, `algorithm/mbpo.yaml`, `dynamics_model/gaussian_mlp_ensemble.yaml`)."""

    # dynamics model
    ensemble_size: int = param(7, ge=1, help="ensemble members")
    num_elites: int = param(5, ge=1, help="elite members used for rollouts (best validation MSE)")
    model_hidden: int = param(200, ge=1, help="hidden width of each member")
    model_layers: int = param(4, ge=1, help="hidden layers of each member (SiLU)")
    model_lr: float = param(1e-3, gt=0, help="model Adam step size")
    model_weight_decay: float = param(1e-5, ge=0, help="model Adam weight decay")
    model_batch_size: int = param(256, ge=1, help="model minibatch size")
    validation_ratio: float = param(0.2, ge=0, lt=1, help="share of real data held out")
    patience: int = param(5, ge=1, help="model epochs without improvement before stopping")
    improvement_threshold: float = param(
        0.01, ge=0, help="relative validation-MSE gain that counts as an improvement"
    )
    max_model_epochs: int = param(0, ge=0, help="cap on model epochs per refit (0: none)")
    learn_logvar_bounds: bool = param(
        False, help="learn the log-variance bounds (PETS; mbrl-lib's MBPO config: false)"
    )
    bootstrap: bool = param(True, help="each member trains on its own bootstrap resample")
    freq_train_model: int = param(250, ge=1, help="real steps between model refits")
    # model rollouts
    rollouts_per_step: int = param(
        400, ge=1, help="model rollouts per real step (all run right after each refit)"
    )
    rollout_schedule: tuple[int, int, int, int] = param(
        (20, 150, 1, 15), ge=0, help="(min_epoch, max_epoch, min_h, max_h) of the horizon"
    )
    epoch_length: int = param(
        0, ge=0, help="real steps per epoch of the schedule (0: the env's episode length)"
    )
    retain_epochs: int = param(1, ge=1, help="epochs of rollouts the model buffer holds")
    propagation: str = param(
        "random_model",
        choices=PROPAGATIONS,
        help="random_model: a random elite per rollout each step; fixed_model: per rollout",
    )
    sac_samples_action: bool = param(True, help="rollouts sample the policy (else its mean)")
    # agent
    sac_hidden: int = param(512, ge=1, help="SAC width (actor and critics, two layers)")
    updates_per_step: int = param(40, ge=0, help="SAC gradient steps per real step")
    sac_batch_size: int = param(256, ge=1, help="SAC minibatch size")
    sac_lr: float = param(3e-4, gt=0, help="SAC Adam step size")
    gamma: float = param(0.99, ge=0, le=1, help="discount")
    tau: float = param(0.005, ge=0, le=1, help="Polyak rate of the target critics")
    ent_coef: float = param(0.2, ge=0, help="fixed temperature alpha")
    target_update_interval: int = param(4, ge=1, help="SAC steps between target updates")
    real_data_ratio: float = param(0.0, ge=0, le=1, help="share of SAC updates on real data")
    # real env
    exploration_steps: int = param(5000, ge=0, help="real steps explored before learning")
    explore_episodes: int = param(
        0, ge=0, help="real episodes explored before learning (either budget extends it)"
    )
    random_initial_explore: bool = param(
        False, help="explore with uniform actions (else the untrained agent's samples)"
    )
    real_env_sample_action: bool = param(
        False, help="act in the real env with sampled actions (else the policy's mean)"
    )
    real_buffer_size: int = param(1_000_000, ge=1, help="real transitions kept")

    def validate(self) -> None:
        if self.num_elites > self.ensemble_size:
            raise ConfigError(
                "num_elites",
                f"must be <= ensemble_size ({self.ensemble_size}), got {self.num_elites}",
            )
        schedule = tuple(self.rollout_schedule)
        if len(schedule) != 4 or min(schedule[2:], default=0) < 1 or schedule[1] < schedule[0]:
            raise ConfigError(
                "rollout_schedule",
                "needs (min_epoch, max_epoch, min_h, max_h) with max_epoch >= min_epoch and "
                f"horizons >= 1, got {schedule!r}",
            )

    def sac_config(self) -> SACConfig:
        return SACConfig(
            net_arch=(self.sac_hidden, self.sac_hidden),
            learning_rate=self.sac_lr,
            buffer_size=1,  # the SAC's own buffer is unused: MBPO feeds it the model buffer
            learning_starts=0,
            batch_size=self.sac_batch_size,
            tau=self.tau,
            gamma=self.gamma,
            ent_coef=float(self.ent_coef),
            target_update_interval=self.target_update_interval,
        )


def quick_config(
    sac_hidden: int = 256,
    updates_per_step: int = 10,
    rollouts_per_step: int = 100,
    explore_episodes: int = 2,
    ensemble_size: int = 7,
    num_elites: int = 5,
    model_hidden: int = 200,
    **overrides,
) -> MBPOConfig:
    """The QUICK setting (module docstring): the paper's MBPO with a smaller agent, fewer
    updates and rollouts, and `explore_episodes` whole episodes of exploration instead of
    5,000 steps. `overrides` set any other MBPOConfig field."""
    return check(
        MBPOConfig(
            sac_hidden=sac_hidden,
            updates_per_step=updates_per_step,
            rollouts_per_step=rollouts_per_step,
            exploration_steps=0,
            explore_episodes=explore_episodes,
            ensemble_size=ensemble_size,
            num_elites=num_elites,
            model_hidden=model_hidden,
            **overrides,
        )
    )


def check(cfg: MBPOConfig) -> MBPOConfig:
    """`cfg`, or one ValueError naming every broken field."""
    if not isinstance(cfg, MBPOConfig):
        raise TypeError(f"cfg must be an MBPOConfig, got {type(cfg).__name__}")
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("MBPOConfig", "is invalid: " + "; ".join(problems))
    return cfg


def truncated_linear(min_x: float, max_x: float, min_y: float, max_y: float, x: float) -> float:
    """min_y up to min_x, max_y from max_x, linear between (mbrl-lib `util/math.py`)."""
    if max_x - min_x < 1e-10:
        return max_y
    if x <= min_x:
        return min_y
    return min_y + min((x - min_x) / (max_x - min_x), 1.0) * (max_y - min_y)


def rollout_horizon(epoch: int, schedule=(20, 150, 1, 15)) -> int:
    """The rollout length at `epoch` (0-based): int(truncated_linear(*schedule, epoch + 1)),
    as mbrl-lib's MBPO loop. With (20, 150, 1, 15): 1 at epochs 0-20, 8 at 85, 15 from 149."""
    return int(truncated_linear(*schedule, epoch + 1))


# ---------------------------------------------------------------------------------------
# the dynamics model


@dataclass
class FitResult:
    """One refit: epochs run, each member's best validation MSE (the weights it keeps), the
    elites, and the rows used for training and validation (validation on the training rows
    when too few to hold any out, as mbrl-lib)."""

    epochs: int
    best_val: np.ndarray
    elites: list[int]
    train_idx: np.ndarray
    val_idx: np.ndarray


class GaussianEnsemble(nn.Module):
    """E Gaussian MLPs (s, a) -> N(mean, exp(logvar)) over (s' - s, r), evaluated together.

    Weights are (E, in, out) tensors, so a layer for all members is one batched matmul
    (`torch.baddbmm`), as mbrl-lib's `EnsembleLinearLayer`; initialised by a normal
    truncated at 2 std with std 1 / (2 sqrt(fan_in)) and zero biases (mbrl-lib
    `truncated_normal_init`). The log-variance is soft-clamped: logvar = max - softplus(max
    - raw), then min + softplus(logvar - min) (PETS, Chua et al. 2018, App. A.1)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        ensemble_size: int = 7,
        num_elites: int = 5,
        hidden: int = 200,
        layers: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        learn_logvar_bounds: bool = False,
    ):
        super().__init__()
        if num_elites > ensemble_size:
            raise ValueError(
                f"num_elites ({num_elites}) must be <= ensemble_size ({ensemble_size})"
            )
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.ensemble_size, self.num_elites = int(ensemble_size), int(num_elites)
        dims = [self.in_dim] + [int(hidden)] * int(layers) + [2 * self.out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            w = torch.empty(self.ensemble_size, d_in, d_out)
            std = 1.0 / (2.0 * math.sqrt(d_in))
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(self.ensemble_size, 1, d_out)))
        self.min_logvar = nn.Parameter(
            -10.0 * torch.ones(1, self.out_dim), requires_grad=learn_logvar_bounds
        )
        self.max_logvar = nn.Parameter(
            0.5 * torch.ones(1, self.out_dim), requires_grad=learn_logvar_bounds
        )
        self.register_buffer("in_mean", torch.zeros(1, self.in_dim))
        self.register_buffer("in_std", torch.ones(1, self.in_dim))
        self.elites: list[int] = list(range(self.num_elites))
        self.optimizer = torch.optim.Adam(
            [p for p in self.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
        )

    # ---- forward ---------------------------------------------------------------------------

    def set_normaliser(self, inputs: np.ndarray) -> None:
        """Input statistics of all the data (in float64, as mbrl-lib's
        `normalize_double_precision`); a constant feature keeps std 1."""
        x = np.asarray(inputs, dtype=np.float64).reshape(-1, self.in_dim)
        mean, std = x.mean(0), x.std(0)
        std[std < STD_EPS] = 1.0
        self.in_mean.copy_(torch.as_tensor(mean, dtype=torch.float32)[None])
        self.in_std.copy_(torch.as_tensor(std, dtype=torch.float32)[None])

    def forward(
        self, x: torch.Tensor, members: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each (M, B, out_dim), for raw inputs x (M, B, in_dim), member i of
        `members` (default: all E) on x[i]; one batched matmul per layer."""
        ws, bs = list(self.weights), list(self.biases)
        if members is not None:
            idx = torch.as_tensor(members, dtype=torch.long)
            ws, bs = [w[idx] for w in ws], [b[idx] for b in bs]
        h = (x - self.in_mean) / self.in_std
        last = len(ws) - 1
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.silu(h)
        mean, raw = h[..., : self.out_dim], h[..., self.out_dim :]
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def forward_assigned(
        self, x: torch.Tensor, assignment: np.ndarray, members: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each (B, out_dim), of row j of x (B, in_dim) under member
        members[assignment[j]]: the rows are grouped by member (padded to the largest group)
        so that all members still run in one batched matmul per layer."""
        assignment = np.asarray(assignment, dtype=np.int64)
        n, m = assignment.shape[0], len(members)
        order = np.argsort(assignment, kind="stable")
        sorted_members = assignment[order]
        counts = np.bincount(assignment, minlength=m)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(n) - starts[sorted_members]
        rows_t = torch.as_tensor(sorted_members)
        slot_t = torch.as_tensor(slot)
        grouped = x.new_zeros(m, max(int(counts.max()), 1), self.in_dim)
        grouped[rows_t, slot_t] = x[torch.as_tensor(order)]
        mean_g, logvar_g = self(grouped, members)
        mean, logvar = x.new_empty(n, self.out_dim), x.new_empty(n, self.out_dim)
        mean[torch.as_tensor(order)] = mean_g[rows_t, slot_t]
        logvar[torch.as_tensor(order)] = logvar_g[rows_t, slot_t]
        return mean, logvar

    # ---- training --------------------------------------------------------------------------

    def nll_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mbrl-lib `GaussianMLP._nll_loss`: the Gaussian NLL (squared error / var + logvar)
        averaged over rows and outputs, summed over members, plus 0.01 (sum max_logvar -
        sum min_logvar). x (E, B, in), y (E, B, out)."""
        mean, logvar = self(x)
        nll = ((mean - y) ** 2 * torch.exp(-logvar) + logvar).mean((1, 2)).sum()
        return nll + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def mse(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> np.ndarray:
        """Each member's MSE of its mean on (x (B, in), y (B, out)), averaged over rows and
        outputs (mbrl-lib `eval_score`), (E,)."""
        total = torch.zeros(self.ensemble_size, dtype=torch.float64)
        for lo in range(0, x.shape[0], chunk):
            xb, yb = x[lo : lo + chunk], y[lo : lo + chunk]
            mean, _ = self(xb.expand(self.ensemble_size, *xb.shape))
            total += ((mean - yb) ** 2).sum((1, 2)).double()
        return (total / (x.shape[0] * self.out_dim)).numpy()

    def fit(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        rng: np.random.Generator,
        *,
        batch_size: int = 256,
        validation_ratio: float = 0.2,
        patience: int = 5,
        improvement_threshold: float = 0.01,
        max_epochs: int = 0,
        bootstrap: bool = True,
    ) -> FitResult:
        """Refit on all data (mbrl-lib `train_model_and_save_model_and_data` and
        `ModelTrainer.train`): normalise, shuffle and hold out `validation_ratio` of the rows,
        draw each member's bootstrap resample of the rest, then train epoch by epoch (rows
        reshuffled each epoch) until `patience` epochs pass in which no member's validation
        MSE improves by more than `improvement_threshold` relative to the reference score
        (which moves only on such an improvement, as mbrl-lib's `best_val_score`). Each member
        ends with its own weights of lowest validation MSE; the elites are the `num_elites`
        members with the lowest. The optimiser's state carries over between refits."""
        x_all = torch.as_tensor(np.asarray(inputs, dtype=np.float32).reshape(-1, self.in_dim))
        y_all = torch.as_tensor(np.asarray(targets, dtype=np.float32).reshape(-1, self.out_dim))
        n = x_all.shape[0]
        if n < 1:
            raise ValueError("GaussianEnsemble.fit needs at least one row")
        self.set_normaliser(x_all.numpy())
        perm = rng.permutation(n)
        n_val = int(n * validation_ratio)
        train_idx, val_idx = perm[: n - n_val], perm[n - n_val :]
        if n_val == 0:
            val_idx = train_idx
        x_tr, y_tr = x_all[torch.as_tensor(train_idx)], y_all[torch.as_tensor(train_idx)]
        x_val, y_val = x_all[torch.as_tensor(val_idx)], y_all[torch.as_tensor(val_idx)]
        n_tr, e = len(train_idx), self.ensemble_size
        if bootstrap:
            members_rows = rng.integers(0, n_tr, size=(e, n_tr))
        else:
            members_rows = np.tile(np.arange(n_tr), (e, 1))

        params = [p for p in self.parameters() if p.requires_grad]
        best_params = [p.detach().clone() for p in params]
        per_member = [p.dim() == 3 and p.shape[0] == e for p in params]
        best = self.mse(x_val, y_val)
        reference = best.copy()
        epochs, since = 0, 0
        while not max_epochs or epochs < max_epochs:
            order = rng.permutation(n_tr)
            for lo in range(0, n_tr, batch_size):
                rows = torch.as_tensor(members_rows[:, order[lo : lo + batch_size]])
                loss = self.nll_loss(x_tr[rows], y_tr[rows])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            epochs += 1
            score = self.mse(x_val, y_val)
            better = score < best
            if better.any():
                with torch.no_grad():
                    keep = torch.as_tensor(np.flatnonzero(better))
                    for p, saved, is_member in zip(params, best_params, per_member):
                        if is_member:
                            saved[keep] = p.detach()[keep]
                        else:  # shared tensors (learned log-variance bounds): latest gain
                            saved.copy_(p.detach())
                best = np.where(better, score, best)
            gain = (reference - score) / np.maximum(np.abs(reference), 1e-12)
            if (gain > improvement_threshold).any():
                reference = np.minimum(reference, score)
                since = 0
            else:
                since += 1
            if since >= patience:
                break
        with torch.no_grad():
            for p, saved in zip(params, best_params):
                p.copy_(saved)
        self.elites = [int(i) for i in np.argsort(best, kind="stable")[: self.num_elites]]
        return FitResult(epochs, best, list(self.elites), train_idx, val_idx)


# ---------------------------------------------------------------------------------------
# MBPO


class _MixedSource:
    """What SAC.train samples from when some updates use real data: each minibatch comes
    whole from the real buffer with probability `ratio`, else from the model buffer
    (mbrl-lib's per-update `rng.random() < real_data_ratio`)."""

    def __init__(self, real: ReplayBuffer, model: ReplayBuffer, ratio: float):
        self.real, self.model, self.ratio = real, model, ratio

    def sample(self, batch_size: int, rng: np.random.Generator):
        use_real = rng.random() < self.ratio and len(self.real) > 0
        return (self.real if use_real else self.model).sample(batch_size, rng)


class MBPO:
    """MBPO on one gymnasium env with Box observations and actions (module docstring).

    make_env() builds the real env (its episode length, `spec.max_episode_steps`, is the
    schedule's epoch unless cfg.epoch_length is set). term_fn(actions, next_obs) -> (n,) bool
    says which model transitions terminate (env-scale actions, torch tensors in); None:
    never. Attributes: env, cfg, agent (the SAC), model (the ensemble), real (real
    transitions), model_buffer (rollouts), refits (one dict per model refit), steps
    (real steps), episodes (real episodes finished).
    """

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        cfg: MBPOConfig | None = None,
        *,
        seed: int,
        term_fn: TermFn | None = None,
    ):
        self.cfg = check(MBPOConfig() if cfg is None else cfg)
        self.env = make_env()
        spaces = {"observation": self.env.observation_space, "action": self.env.action_space}
        for what, space in spaces.items():
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise ValueError(f"MBPO needs a flat Box {what} space, got {space}")
        self.obs_dim = int(self.env.observation_space.shape[0])
        self.action_dim = int(self.env.action_space.shape[0])
        spec = getattr(self.env, "spec", None)
        episode_length = getattr(spec, "max_episode_steps", None) if spec is not None else None
        self.epoch_length = int(self.cfg.epoch_length or episode_length or 0)
        if self.epoch_length < 1:
            raise ValueError("the env has no spec.max_episode_steps: set MBPOConfig.epoch_length")
        self.term_fn = term_fn
        self.seed = int(seed)
        self.rng = generator(self.seed, "mbpo")
        self.noise = torch_generator(self.seed, "mbpo-model-noise")
        seed_torch(self.seed, "mbpo-init")
        cfg = self.cfg
        self.agent = SAC(
            self.obs_dim,
            self.action_dim,
            cfg.sac_config(),
            action_low=self.env.action_space.low,
            action_high=self.env.action_space.high,
        )
        self.model = GaussianEnsemble(
            self.obs_dim + self.action_dim,
            self.obs_dim + 1,
            ensemble_size=cfg.ensemble_size,
            num_elites=cfg.num_elites,
            hidden=cfg.model_hidden,
            layers=cfg.model_layers,
            lr=cfg.model_lr,
            weight_decay=cfg.model_weight_decay,
            learn_logvar_bounds=cfg.learn_logvar_bounds,
        )
        self.real = ReplayBuffer(cfg.real_buffer_size, self.obs_dim, self.action_dim)
        self.model_buffer: ReplayBuffer | None = None
        self.refits: list[dict] = []
        self.steps = 0  # real steps
        self.episodes = 0  # real episodes finished
        self.learn_steps = 0  # real steps after the exploration
        self._last_refit: int | None = None  # learn_steps at the last refit

    # ---- acting ------------------------------------------------------------------------------

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """The greedy agent: env-scale action(s) tanh(mean) for obs (d,) or (n, d)."""
        return self.agent.predict(obs, deterministic=True)

    def exploring(self) -> bool:
        """Whether the next real step still explores (either exploration budget unspent)."""
        cfg = self.cfg
        return self.steps < cfg.exploration_steps or self.episodes < cfg.explore_episodes

    def _act(self, obs: np.ndarray, exploring: bool) -> np.ndarray:
        """The action in [-1, 1] for one real step."""
        if exploring and self.cfg.random_initial_explore:
            return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
        sample = exploring or self.cfg.real_env_sample_action
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, self.obs_dim))
        with torch.no_grad():
            return self.agent.actor(x, deterministic=not sample)[0].numpy()

    # ---- the model -----------------------------------------------------------------------------

    def horizon(self) -> int:
        return rollout_horizon(self.learn_steps // self.epoch_length, self.cfg.rollout_schedule)

    def model_buffer_capacity(self, horizon: int) -> int:
        """mbrl-lib's `sac_buffer_capacity`: h x rollouts per refit x refits per epoch x
        retained epochs."""
        cfg = self.cfg
        per_epoch = math.ceil(self.epoch_length / cfg.freq_train_model)
        batch = cfg.rollouts_per_step * cfg.freq_train_model
        return horizon * batch * per_epoch * cfg.retain_epochs

    def _resize_model_buffer(self, capacity: int) -> None:
        """A new buffer of `capacity` holding the old one's transitions, oldest first (mbrl-lib
        `maybe_replace_sac_buffer`)."""
        old = self.model_buffer
        if old is not None and old.capacity == capacity:
            return
        new = ReplayBuffer(capacity, self.obs_dim, self.action_dim)
        if old is not None and len(old):
            state = old.state()
            shift = -int(state["pos"][0]) if bool(state["full"][0]) else 0
            fields = ("observations", "next_observations", "actions", "rewards", "dones")
            f = {k: np.roll(state[k], shift, axis=0) for k in fields}
            new.add(
                f["observations"], f["next_observations"], f["actions"], f["rewards"], f["dones"]
            )
        self.model_buffer = new

    def fit_model(self) -> FitResult:
        """Refit the ensemble on all real transitions."""
        state = self.real.state()
        obs, act, nxt = state["observations"], state["actions"], state["next_observations"]
        inputs = np.concatenate([obs, act], axis=1)
        targets = np.concatenate([nxt - obs, state["rewards"]], axis=1)
        cfg = self.cfg
        return self.model.fit(
            inputs,
            targets,
            self.rng,
            batch_size=cfg.model_batch_size,
            validation_ratio=cfg.validation_ratio,
            patience=cfg.patience,
            improvement_threshold=cfg.improvement_threshold,
            max_epochs=cfg.max_model_epochs,
            bootstrap=cfg.bootstrap,
        )

    def _assignment(self, n: int) -> np.ndarray:
        """Each of n rows' elite (index into model.elites), balanced as mbrl-lib's
        "random_model": a random permutation dealt round the elites."""
        return self.rng.permutation(n) % len(self.model.elites)

    @torch.no_grad()
    def model_rollouts(self, n: int, horizon: int) -> dict[str, np.ndarray]:
        """n branched rollouts of at most `horizon` steps from real states drawn uniformly;
        a rollout stops after a step `term_fn` calls terminal. Returns every transition
        (observations, actions in [-1, 1], next_observations, rewards (k,), dones (k,)) with
        its rollout id and step index."""
        members = list(self.model.elites)
        start = self.real.sample(n, self.rng).observations
        obs, ids = start, torch.arange(n)
        fixed = self._assignment(n) if self.cfg.propagation == "fixed_model" else None
        keys = ("observations", "actions", "next_observations", "rewards", "dones", "rollout")
        out: dict[str, list] = {k: [] for k in (*keys, "step")}
        for t in range(horizon):
            action = self.agent.actor(obs, deterministic=not self.cfg.sac_samples_action)
            x = torch.cat([obs, action], dim=1)
            assignment = fixed[ids.numpy()] if fixed is not None else self._assignment(len(ids))
            mean, logvar = self.model.forward_assigned(x, assignment, members)
            noise = torch.randn(mean.shape, generator=self.noise)
            pred = mean + torch.exp(0.5 * logvar) * noise
            next_obs, reward = obs + pred[:, : self.obs_dim], pred[:, self.obs_dim]
            if self.term_fn is None:
                done = torch.zeros(len(ids), dtype=torch.bool)
            else:
                env_action = torch.as_tensor(
                    self.agent.unscale_action(action.numpy()), dtype=torch.float32
                )
                done = torch.as_tensor(self.term_fn(env_action, next_obs)).reshape(-1).bool()
            step = torch.full((len(ids),), t)
            for k, v in zip(out, (obs, action, next_obs, reward, done, ids, step)):
                out[k].append(v.numpy())
            alive = ~done
            obs, ids = next_obs[alive], ids[alive]
            if len(ids) == 0:
                break
        return {k: np.concatenate(v) for k, v in out.items()}

    def refit(self) -> dict:
        """Refit the model, then fill the model buffer with this period's rollouts."""
        cfg = self.cfg
        fit = self.fit_model()
        h = self.horizon()
        self._resize_model_buffer(self.model_buffer_capacity(h))
        data = self.model_rollouts(cfg.rollouts_per_step * cfg.freq_train_model, h)
        self.model_buffer.add(
            data["observations"],
            data["next_observations"],
            data["actions"],
            data["rewards"],
            data["dones"].astype(np.float32),
        )
        self._last_refit = self.learn_steps
        info = {
            "step": self.steps,
            "epoch": self.learn_steps // self.epoch_length,
            "horizon": h,
            "model_epochs": fit.epochs,
            "elite_val_mse": float(np.mean(fit.best_val[fit.elites])),
            "real_transitions": len(self.real),
            "rollout_transitions": int(len(data["rewards"])),
        }
        self.refits.append(info)
        return info

    def _refit_due(self) -> bool:
        if len(self.real) < MIN_MODEL_DATA:
            return False
        return self._last_refit is None or (
            self.learn_steps - self._last_refit >= self.cfg.freq_train_model
        )

    def _train_agent(self) -> None:
        cfg, buf = self.cfg, self.model_buffer
        if cfg.updates_per_step == 0 or buf is None or len(buf) < cfg.sac_batch_size:
            return  # mbrl-lib skips the updates while the buffer is smaller than a batch
        source = (
            buf if cfg.real_data_ratio == 0 else _MixedSource(self.real, buf, cfg.real_data_ratio)
        )
        self.agent.train(cfg.updates_per_step, self.rng, buffer=source)

    # ---- the loop ------------------------------------------------------------------------------

    def run(
        self,
        episodes: int,
        on_episode_end: Callable[[int, float], bool | None] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> list[float]:
        """Play `episodes` more real episodes, learning as MBPO; returns their returns.

        Each step: explore while the exploration budget lasts; after it, refit the model and
        roll it out when due (first right after the exploration, then every
        freq_train_model steps), act, store the real transition, and run updates_per_step SAC
        updates on model data. on_episode_end(episode_index, episode_return) is called after
        each episode (index over this object's life); returning False stops the run.
        progress(1) is called after each real step."""
        if int(episodes) != episodes or episodes < 0:
            raise ValueError(f"episodes must be an integer >= 0, got {episodes!r}")
        returns: list[float] = []
        for _ in range(int(episodes)):
            obs, _ = self.env.reset(seed=int(self.rng.integers(0, 2**31 - 1)))
            total, done = 0.0, False
            while not done:
                exploring = self.exploring()
                if not exploring and self._refit_due():
                    self.refit()
                action = self._act(obs, exploring)
                env_action = self.agent.unscale_action(action).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = self.env.step(env_action)
                self.real.add(obs, next_obs, action, float(reward), bool(terminated))
                total += float(reward)
                self.steps += 1
                if not exploring:
                    self.learn_steps += 1
                    self._train_agent()
                if progress is not None:
                    progress(1)
                done = bool(terminated or truncated)
                obs = next_obs
            index = self.episodes
            self.episodes += 1
            returns.append(total)
            if on_episode_end is not None and on_episode_end(index, total) is False:
                break
        return returns

    def close(self) -> None:
        self.env.close()


def run_mbpo(
    make_env: Callable[[], gym.Env],
    cfg: MBPOConfig | None = None,
    *,
    episodes: int,
    seed: int,
    on_episode_end: Callable[[int, float], bool | None] | None = None,
    progress: Callable[[int], object] | None = None,
    term_fn: TermFn | None = None,
) -> list[float]:
    """MBPO for `episodes` real episodes; their returns. For greedy tests between episodes use
    `MBPO(...)` and its `.predict` inside on_episode_end."""
    mbpo = MBPO(make_env, cfg, seed=seed, term_fn=term_fn)
    try:
        return mbpo.run(episodes, on_episode_end=on_episode_end, progress=progress)
    finally:
        mbpo.close()
