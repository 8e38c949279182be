"""Soft Actor-Critic with Stable-Baselines3 2.9's semantics, numerics and names.

SAC (Haarnoja et al. 2018a, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep RL with a
Stochastic Actor", arXiv:1801.01290; Haarnoja et al. 2018b, "Soft Actor-Critic Algorithms and
Applications", arXiv:1812.05905) as SB3 implements it (stable_baselines3/sac/sac.py and
sac/policies.py): a tanh-squashed Gaussian actor, two Q networks with a Polyak-averaged target
copy (clipped double Q), and a learned temperature alpha ("ent_coef").

One gradient step (`SAC.train_step`, one iteration of SB3's `SAC.train`), with B the batch,
a~ = tanh(mu + sigma * eps) the actor's reparameterised action (2018b, Eq. 8) and
log pi(a~|s) its log-density with the tanh change of variables (2018a, App. C, Eq. 21):

1. temperature (2018b, Eq. 18, on log alpha as SB3 and softlearning do):
   J(log alpha) = -mean(log alpha * (log pi(a~|s) + H_target)), with log pi detached;
   alpha for this step is exp(log alpha) before the step;
2. soft Q target (2018b, Eqs. 3 and 5, with the minimum of the two target critics):
   y = r + (1 - d) * gamma * (min_i Q'_i(s', a~') - alpha * log pi(a~'|s')), a~' ~ pi(.|s');
   J_Q = 0.5 * sum_i mean((Q_i(s, a) - y)^2);
3. actor (2018b, Eq. 7/9), through the critics just updated:
   J_pi = mean(alpha * log pi(a~|s) - min_i Q_i(s, a~)), with a~ and log pi from step 1;
4. target critics: theta' <- (1 - tau) theta' + tau theta, every `target_update_interval`-th
   step of a `train` call (SB3 counts the step within the call).

The noise eps is drawn by torch.distributions.Normal(...).rsample() on torch's global
generator, first for s (step 1) and then for s' (step 2), as SB3 does, so one torch seed gives
SB3's noise; weights are initialised by the same generator in SB3's order (actor, critic,
target critic), so the same seed also gives SB3's initial weights.

What differs from SB3 is speed only; the arithmetic is SB3's op for op except where noted:
- no logger, no argument validation in torch.distributions, losses kept as tensors and
  converted once per `train` call;
- the networks run as direct F.linear/relu calls on their own parameters, ReLU in place;
- the temperature's gradient is formed with the ops autograd would run for its loss;
- the actor loss reaches the critics through `Critic.q_min_action`: each row backpropagates
  through the critic that attains the minimum only, and no critic weight gradient is formed
  (SB3 fills the critics' .grad there too, which their next zero_grad discards unread);
- Adam steps are issued directly (`_adam_step`) with torch's fused kernel. The fused kernel
  rounds differently from SB3's single-tensor loop (about 1e-8 on the weights after a few
  steps); with non-fused Adam optimizers in `actor_optimizer` etc. the same code runs SB3's
  loop arithmetic and the whole update is bitwise SB3's (tests/rl/test_sac.py checks both);
- the target update is two multi-tensor ops with SB3's arithmetic (theta' * (1 - tau), then
  + tau * theta); alignlab.rl.polyak_update's lerp is the same average, rounded differently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from alignlab.core.config import ConfigError, config_problems, param
from alignlab.rl.replay import ReplayBatch, ReplayBuffer

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp of the actor's log standard deviation
TANH_EPS = 1e-6  # SB3's epsilon in log(1 - tanh(u)^2 + eps)


ENT_COEF_OPTIONS = (
    "'auto' (learned, initial value 1), 'auto_<init>' with a float init > 0 (learned from init, "
    "e.g. 'auto_0.1') or a fixed float >= 0"
)


def _ent_coef_ok(value) -> bool:
    if isinstance(value, str):
        if value == "auto":
            return True
        try:
            init = float(value[len("auto_") :]) if value.startswith("auto_") else math.nan
        except ValueError:
            return False
        return math.isfinite(init) and init > 0
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


@dataclass
class SACConfig:
    """SAC's hyperparameters, with SB3's defaults."""

    net_arch: tuple[int, ...] = param(
        (256, 256), ge=1, help="hidden widths of the actor and of each of the two critics"
    )
    learning_rate: float = param(3e-4, gt=0, help="Adam step size (actor, critics, temperature)")
    buffer_size: int = param(1_000_000, ge=1, help="replay buffer capacity (transitions)")
    learning_starts: int = param(100, ge=0, help="uniform-random env steps before learning")
    batch_size: int = param(256, ge=1, help="transitions per gradient step")
    tau: float = param(0.005, ge=0, le=1, help="Polyak rate of the target critics")
    gamma: float = param(0.99, ge=0, le=1, help="discount factor")
    train_freq: int = param(1, ge=1, help="env steps between training calls")
    gradient_steps: int = param(
        1, ge=-1, help="gradient steps per training call (-1: as many as env steps collected)"
    )
    ent_coef: float | str = param(
        "auto", help="temperature alpha: 'auto' (learned, init 1), 'auto_<init>', or a fixed float"
    )
    target_entropy: float | str = param(
        "auto", help="target entropy of the learned alpha: 'auto' (= -|A|) or a float"
    )
    target_update_interval: int = param(
        1, ge=1, help="gradient steps (within a training call) between target updates"
    )

    def validate(self) -> None:
        if not _ent_coef_ok(self.ent_coef):
            raise ConfigError("ent_coef", f"must be {ENT_COEF_OPTIONS}, got {self.ent_coef!r}")
        te = self.target_entropy
        ok = (
            te == "auto"
            if isinstance(te, str)
            else (isinstance(te, (int, float)) and not isinstance(te, bool) and math.isfinite(te))
        )
        if not ok:
            raise ConfigError(
                "target_entropy", f"must be 'auto' (= -|A|) or a finite float, got {te!r}"
            )

    @property
    def learns_ent_coef(self) -> bool:
        return isinstance(self.ent_coef, str)

    def ent_coef_init(self) -> float:
        """alpha's initial (learned) or fixed value."""
        if isinstance(self.ent_coef, str):
            return float(self.ent_coef[len("auto_") :]) if "_" in self.ent_coef else 1.0
        return float(self.ent_coef)


def check_config(config: SACConfig) -> None:
    """Every broken field of `config` in one ValueError, each named with its valid values."""
    if not isinstance(config, SACConfig):
        raise TypeError(f"config must be a SACConfig, got {type(config).__name__}")
    problems = config_problems(config)
    if problems:
        raise ConfigError("SACConfig", "is invalid: " + "; ".join(problems))


def _adam(params, lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where the parameters' device has one (CPU since torch
    2.4): the same update as SB3's single-tensor loop, to float rounding (about 1e-8 on the
    weights after a few steps), in one pass over each tensor instead of seven ops."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def _zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.zero_grad() (set_to_none) without its profiling wrapper."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def _step_dtype() -> torch.dtype:
    """The dtype of a non-fused Adam's step counter (torch.optim's _get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


@torch.no_grad()
def _adam_step(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step() for a plain torch.optim.Adam, without the per-call Python machinery
    (hooks, profiling records, grouping by device), which costs more than the update itself
    at SAC's sizes. The state stays in the optimizer, as its own step would leave it.

    A fused Adam runs torch's fused kernel with the arguments its step would pass; any other
    Adam runs SB3's single-tensor arithmetic (torch's `_single_tensor_adam`: lerp, mul,
    addcmul, sqrt, div, add, addcdiv) as multi-tensor ops, the same per-tensor kernels in the
    same order, so the result is bitwise that of SB3's Adam. Settings beyond one group without
    weight decay, amsgrad or maximize, a tensor learning rate, or parameters without a
    gradient go to optimizer.step()."""
    groups = optimizer.param_groups
    group = groups[0]
    params = group["params"]
    if (
        type(optimizer) is not torch.optim.Adam
        or len(groups) != 1
        or group["weight_decay"] != 0
        or group["amsgrad"]
        or group["maximize"]
        or group.get("differentiable")
        or group.get("capturable")
        or group.get("decoupled_weight_decay")
        or not isinstance(group["lr"], float)
        or any(p.grad is None for p in params)
    ):
        optimizer.step()
        return
    fused = bool(group.get("fused"))
    states = [optimizer.state[p] for p in params]
    for p, st in zip(params, states):
        if not st:  # Adam's lazy initialisation (_init_group)
            st["step"] = (
                torch.zeros((), dtype=torch.float32, device=p.device)
                if fused
                else torch.tensor(0.0, dtype=_step_dtype())
            )
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    grads = [p.grad for p in params]
    steps = [st["step"] for st in states]
    exp_avgs = [st["exp_avg"] for st in states]
    exp_avg_sqs = [st["exp_avg_sq"] for st in states]
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    if not fused:
        step_values = {float(s) for s in steps}
        if len(step_values) != 1:  # parameters that missed steps: torch's own loop
            optimizer.step()
            return
    torch._foreach_add_(steps, 1)
    if fused:
        torch._fused_adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
        return
    step = step_values.pop() + 1
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)


def _mlp(in_dim: int, widths, out_dim: int | None) -> list[nn.Module]:
    """Linear, ReLU per width (SB3's create_mlp), then a Linear to out_dim if given."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_dim, w), nn.ReLU()]
        in_dim = w
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return layers


def _linears(seq: nn.Sequential) -> list[nn.Linear]:
    return [m for m in seq if isinstance(m, nn.Linear)]


def _run(x: torch.Tensor, layers: list[nn.Linear], relu_last: bool) -> torch.Tensor:
    """The MLP of `layers` on x: ReLU after every layer but the last (and after it too if
    relu_last); the same ops as nn.Sequential(Linear, ReLU, ...) without module dispatch."""
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        x = F.linear(x, layer.weight, layer.bias)
        if i < last or relu_last:
            x = torch.relu_(x)  # in place on the fresh linear output (autograd allows it)
    return x


class Actor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)) (SB3's sac.policies.Actor without gSDE):
    latent_pi = (Linear, ReLU) per net_arch entry, then two linear heads, mu and log_std."""

    def __init__(self, obs_dim: int, action_dim: int, net_arch=(256, 256)):
        super().__init__()
        self.latent_pi = nn.Sequential(*_mlp(obs_dim, net_arch, None))
        last = net_arch[-1] if len(net_arch) else obs_dim
        self.mu = nn.Linear(last, action_dim)
        self.log_std = nn.Linear(last, action_dim)
        self._latent_layers = _linears(self.latent_pi)

    def latent(self, obs: torch.Tensor) -> torch.Tensor:
        return _run(obs, self._latent_layers, relu_last=True)

    def heads(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the Gaussian before the tanh; log_std clamped to [-20, 2]."""
        mean = F.linear(latent, self.mu.weight, self.mu.bias)
        log_std = F.linear(latent, self.log_std.weight, self.log_std.bias)
        return mean, torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The Gaussian before the tanh. std = exp(log_std) broadcast as SB3 builds it; no
        argument validation (SB3's default validation only costs time)."""
        mean, log_std = self.heads(self.latent(obs))
        return Normal(mean, log_std.exp(), validate_args=False)

    def action_log_prob(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action a = tanh(u), u = mean + std * eps (eps from torch's
        global generator), and log pi(a|s) (B,) = sum_j [log N(u_j; mean_j, std_j)
        - log(1 - a_j^2 + 1e-6)] (Haarnoja et al. 2018a, App. C, Eq. 21; SB3's
        SquashedDiagGaussianDistribution)."""
        dist = self.distribution(obs)
        gaussian = dist.rsample()
        action = torch.tanh(gaussian)
        log_prob = dist.log_prob(gaussian).sum(dim=1)
        log_prob = log_prob - torch.sum(torch.log(1 - action**2 + TANH_EPS), dim=1)
        return action, log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """tanh(mean): SB3's deterministic action, in (-1, 1)."""
        mean, _ = self.heads(self.latent(obs))
        return torch.tanh(mean)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """tanh(mean + std * eps): SB3's stochastic action (one rsample), without log-prob."""
        return torch.tanh(self.distribution(obs).rsample())

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.deterministic(obs) if deterministic else self.sample(obs)


class _TwinMinQ(torch.autograd.Function):
    """min(Q_1, Q_2)(s, a) (B, 1), differentiable in the action only (Critic.q_min_action)."""

    @staticmethod
    def forward(ctx, action, obs, critic):
        x = torch.cat([obs, action], dim=1)
        qs, saved = [], []
        for layers in critic._layers:
            h = x
            for layer in layers[:-1]:
                h = torch.relu_(F.linear(h, layer.weight, layer.bias))
                saved.append(h)
            qs.append(F.linear(h, layers[-1].weight, layers[-1].bias))
        first = qs[0] <= qs[1]  # th.min over dim 1 picks the first critic on ties
        # the weights are saved too, so that changing them before backward is an error
        weights = [layer.weight for layers in critic._layers for layer in layers]
        ctx.depth, ctx.obs_dim = len(critic._layers[0]), obs.shape[1]
        ctx.save_for_backward(first, *weights, *saved)
        return torch.where(first, qs[0], qs[1])

    @staticmethod
    def backward(ctx, grad_q):
        """Per critic, only the rows it wins: the ops of autograd's backward of
        Linear/ReLU (grad @ W, ReLU mask of the saved output), on those rows."""
        first, *rest = ctx.saved_tensors
        depth = ctx.depth
        weights, hidden = rest[: 2 * depth], rest[2 * depth :]
        grad_action = grad_q.new_zeros(grad_q.shape[0], weights[0].shape[1] - ctx.obs_dim)
        for k in range(2):
            rows = (first if k == 0 else ~first).reshape(-1).nonzero().reshape(-1)
            w, h = (
                weights[k * depth : (k + 1) * depth],
                hidden[k * (depth - 1) : (k + 1) * (depth - 1)],
            )
            g = grad_q.index_select(0, rows)
            for i in range(depth - 1, 0, -1):
                g = torch.ops.aten.threshold_backward(g.mm(w[i]), h[i - 1].index_select(0, rows), 0)
            grad_action.index_copy_(0, rows, g.mm(w[0])[:, ctx.obs_dim :])
        return grad_action, None, None


class Critic(nn.Module):
    """Two Q networks Q_i(s, a) = MLP_i(concat(s, a)) (SB3's ContinuousCritic, n_critics=2)."""

    def __init__(self, obs_dim: int, action_dim: int, net_arch=(256, 256)):
        super().__init__()
        self.q_networks = nn.ModuleList(
            nn.Sequential(*_mlp(obs_dim + action_dim, net_arch, 1)) for _ in range(2)
        )
        self._layers = [_linears(q) for q in self.q_networks]

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q_1(s, a), Q_2(s, a)), each (B, 1)."""
        x = torch.cat([obs, action], dim=1)
        return tuple(_run(x, layers, relu_last=False) for layers in self._layers)

    def q_min(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """min_i Q_i(s, a), (B,)."""
        q1, q2 = self(obs, action)
        return torch.minimum(q1, q2).squeeze(1)

    def q_min_action(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """min_i Q_i(s, a) (B, 1), differentiable in the action only (not in obs or the critic's
        parameters): SAC's actor loss term, each row's gradient through the minimising critic
        (Q_1 on ties, as SB3's th.min over the concatenated values), at half the backward
        cost of differentiating both critics."""
        return _TwinMinQ.apply(action, obs, self)


class SAC:
    """SB3's SAC for a flat Box observation and action space (module docstring).

    Attributes as SB3 names them: `actor`, `critic`, `critic_target`, `log_ent_coef` (learned
    alpha; else `ent_coef_tensor`), `actor_optimizer`, `critic_optimizer`,
    `ent_coef_optimizer` (None for a fixed alpha), `target_entropy`, `replay` (the
    ReplayBuffer `learn` fills), `num_timesteps` (env steps taken by `learn`), `num_updates`
    (gradient steps) and `num_episodes` (episodes finished by `learn`).

    Parameters are initialised by torch's global generator: seed it before constructing.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: SACConfig | None = None,
        *,
        action_low=None,
        action_high=None,
        device: torch.device | str = "cpu",
    ):
        config = SACConfig() if config is None else config
        check_config(config)
        if (
            int(obs_dim) != obs_dim
            or obs_dim < 1
            or int(action_dim) != action_dim
            or action_dim < 1
        ):
            raise ValueError(
                f"obs_dim and action_dim must be integers >= 1, got {obs_dim!r}, {action_dim!r}"
            )
        self.config, self.obs_dim, self.action_dim = config, int(obs_dim), int(action_dim)
        self.device = torch.device(device)
        self.action_low, self.action_high = self._bounds(action_low, action_high)

        arch = tuple(int(w) for w in config.net_arch)
        # SB3's construction order (actor, critic, target critic), so that a torch seed gives
        # SB3's initial weights; the target is then a copy of the critic
        self.actor = Actor(self.obs_dim, self.action_dim, arch).to(self.device)
        self.critic = Critic(self.obs_dim, self.action_dim, arch).to(self.device)
        self.critic_target = Critic(self.obs_dim, self.action_dim, arch).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.critic_target.train(False)

        lr = float(config.learning_rate)
        self.actor_optimizer = _adam(self.actor.parameters(), lr)
        self.critic_optimizer = _adam(self.critic.parameters(), lr)
        if config.target_entropy == "auto":
            self.target_entropy = float(-np.prod((self.action_dim,)).astype(np.float32))
        else:
            self.target_entropy = float(config.target_entropy)
        self.log_ent_coef: torch.Tensor | None = None
        self.ent_coef_optimizer: torch.optim.Adam | None = None
        self.ent_coef_tensor: torch.Tensor | None = None
        if config.learns_ent_coef:
            init = config.ent_coef_init()
            self.log_ent_coef = torch.log(torch.ones(1, device=self.device) * init).requires_grad_(
                True
            )
            self.ent_coef_optimizer = _adam([self.log_ent_coef], lr)
        else:
            self.ent_coef_tensor = torch.tensor(config.ent_coef_init(), device=self.device)

        self.replay = ReplayBuffer(config.buffer_size, self.obs_dim, self.action_dim)
        self.num_timesteps = self.num_updates = self.num_episodes = 0

    def _bounds(self, low, high) -> tuple[np.ndarray, np.ndarray]:
        if (low is None) != (high is None):
            raise ValueError("give both action_low and action_high, or neither (for [-1, 1])")
        if low is None:
            low, high = -np.ones(self.action_dim), np.ones(self.action_dim)
        low = np.broadcast_to(np.asarray(low, dtype=np.float32), (self.action_dim,)).copy()
        high = np.broadcast_to(np.asarray(high, dtype=np.float32), (self.action_dim,)).copy()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(
                f"action bounds must be finite with high > low, got low={low}, high={high}"
            )
        return low, high

    # ---- action scale ------------------------------------------------------------------------

    def scale_action(self, action) -> np.ndarray:
        """Env-scale action -> [-1, 1]: 2 (a - low) / (high - low) - 1 (SB3's scale_action)."""
        low, high = self.action_low, self.action_high
        return 2.0 * ((np.asarray(action) - low) / (high - low)) - 1.0

    def unscale_action(self, scaled) -> np.ndarray:
        """[-1, 1] -> env scale: low + (scaled + 1) / 2 (high - low) (SB3's unscale_action)."""
        low, high = self.action_low, self.action_high
        return low + (0.5 * (np.asarray(scaled) + 1.0) * (high - low))

    @property
    def alpha(self) -> float:
        """The current temperature alpha (SB3's ent_coef value)."""
        if self.log_ent_coef is not None:
            return float(torch.exp(self.log_ent_coef.detach()))
        return float(self.ent_coef_tensor)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Env-scale action(s) for obs (obs_dim,) or (n, obs_dim): tanh(mean), or with
        deterministic=False one draw from the actor (torch's global generator)."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        x = torch.as_tensor(obs.reshape(-1, self.obs_dim), device=self.device)
        scaled = self.actor(x, deterministic=deterministic).cpu().numpy()
        action = self.unscale_action(scaled.reshape(-1, self.action_dim))
        return action[0] if single else action

    # ---- training ----------------------------------------------------------------------------

    def _update(self, batch: ReplayBatch, update_target: bool) -> tuple[torch.Tensor, ...]:
        """One gradient step; returns (actor_loss, critic_loss, ent_coef, ent_coef_loss or
        None) as detached tensors."""
        actor, critic, gamma = self.actor, self.critic, self.config.gamma
        obs, next_obs = batch.observations, batch.next_observations

        actions_pi, log_prob = actor.action_log_prob(obs)  # noise draw 1
        log_prob = log_prob.reshape(-1, 1)

        ent_coef_loss = None
        if self.ent_coef_optimizer is not None:
            # alpha for this step is the value before its update; log pi is detached so
            # that only log alpha moves (2018b, Eq. 18)
            ent_coef = torch.exp(self.log_ent_coef.detach())
            c = (log_prob + self.target_entropy).detach()
            ent_coef_loss = -(self.log_ent_coef.detach() * c).mean()
            # d loss / d log alpha, with autograd's ops for the graph above (neg, mean, mul)
            grad = torch.full_like(c, -1.0).div_(c.numel()).mul_(c).sum(0)
            self.log_ent_coef.grad = grad
            _adam_step(self.ent_coef_optimizer)
        else:
            ent_coef = self.ent_coef_tensor

        with torch.no_grad():
            next_actions, next_log_prob = actor.action_log_prob(next_obs)  # noise draw 2
            q1_next, q2_next = self.critic_target(next_obs, next_actions)
            next_q = torch.minimum(q1_next, q2_next)
            next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
            target_q = batch.rewards + (1 - batch.dones) * gamma * next_q

        q1, q2 = critic(obs, batch.actions)
        critic_loss = 0.5 * (F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q))
        _zero_grad(self.critic_optimizer)
        critic_loss.backward()
        _adam_step(self.critic_optimizer)

        # min_i Q_i(s, a~) with the critics just updated; its gradient reaches the actor only
        # (SB3 also fills the critics' .grad here, which their next zero_grad discards unread)
        min_q_pi = critic.q_min_action(obs, actions_pi)
        actor_loss = (ent_coef * log_prob - min_q_pi).mean()
        _zero_grad(self.actor_optimizer)
        actor_loss.backward()
        _adam_step(self.actor_optimizer)

        if update_target:
            self.polyak_update()
        self.num_updates += 1
        return (
            actor_loss.detach(),
            critic_loss.detach(),
            ent_coef,
            None if ent_coef_loss is None else ent_coef_loss.detach(),
        )

    @torch.no_grad()
    def polyak_update(self) -> None:
        """theta' <- theta' * (1 - tau) + tau * theta over the critics' parameters, in SB3's
        arithmetic (stable_baselines3.common.utils.polyak_update), as two multi-tensor ops."""
        tau = self.config.tau
        target = list(self.critic_target.parameters())
        torch._foreach_mul_(target, 1 - tau)
        torch._foreach_add_(target, list(self.critic.parameters()), alpha=tau)

    @staticmethod
    def _summary(records: list[tuple]) -> dict[str, float]:
        stacked = [torch.stack([r[i] for r in records]).reshape(len(records), -1) for i in range(3)]
        out = {
            "actor_loss": float(stacked[0].double().mean()),
            "critic_loss": float(stacked[1].double().mean()),
            "ent_coef": float(stacked[2].double().mean()),
        }
        if records[0][3] is not None:
            out["ent_coef_loss"] = float(torch.stack([r[3] for r in records]).double().mean())
        return out

    def train_step(self, batch: ReplayBatch) -> dict[str, float]:
        """Exactly one gradient step of SB3's SAC.train on `batch` (target update included):
        {"actor_loss", "critic_loss", "ent_coef", "ent_coef_loss" (learned alpha only)}."""
        return self._summary([self._update(batch.to(self.device), update_target=True)])

    def train(
        self,
        gradient_steps: int,
        rng: np.random.Generator,
        buffer: ReplayBuffer | None = None,
    ) -> dict[str, float]:
        """SB3's SAC.train: `gradient_steps` steps on minibatches of config.batch_size drawn
        from `buffer` (default self.replay) with `rng`; the target critics move on steps
        0, k, 2k, ... of this call (k = target_update_interval). Returns the losses and alpha
        averaged over the steps (empty for 0 steps)."""
        buffer = self.replay if buffer is None else buffer
        interval, batch_size = self.config.target_update_interval, self.config.batch_size
        records = []
        for step in range(gradient_steps):
            batch = buffer.sample(batch_size, rng).to(self.device)
            records.append(self._update(batch, update_target=step % interval == 0))
        return self._summary(records) if records else {}

    def learn(
        self,
        env,
        total_timesteps: int,
        *,
        rng: np.random.Generator,
        on_episode_end: Callable[[int, float], bool | None] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> SAC:
        """SB3's collect-and-train loop on one gymnasium env for `total_timesteps` more steps.

        The env is reset at the start with a seed drawn from `rng`, later episodes without a
        seed (gymnasium envs continue their own generator, as SB3's VecEnv does). While
        num_timesteps < learning_starts actions are uniform in [low, high] (from `rng`), then
        drawn from the actor (torch's global generator); the transition stores the action in
        [-1, 1] and `terminated` as done (time-limit truncation bootstraps, as SB3's
        handle_timeout_termination). Every train_freq steps, once num_timesteps >
        learning_starts, `train(gradient_steps)` runs (minibatch indices from `rng`). As in
        SB3 a rollout always collects train_freq steps, so the last one may go past
        total_timesteps by up to train_freq - 1 steps.

        on_episode_end(episode_index, episode_return) is called after each episode (index
        counted over the SAC's life); returning False stops learning at once (the episode's
        last transition is stored, nothing more is trained). progress(n) is called with the
        number of env steps taken since its previous call.
        """
        if int(total_timesteps) != total_timesteps or total_timesteps < 0:
            raise ValueError(f"total_timesteps must be an integer >= 0, got {total_timesteps!r}")
        cfg = self.config
        obs, _ = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
        episode_return, done_steps = 0.0, 0
        while done_steps < total_timesteps:
            collected = 0
            while collected < cfg.train_freq:
                if self.num_timesteps < cfg.learning_starts:
                    env_action = rng.uniform(self.action_low, self.action_high).astype(np.float32)
                else:
                    env_action = self.predict(obs, deterministic=False)
                buffer_action = self.scale_action(env_action)  # SB3's round trip
                env_action = self.unscale_action(buffer_action)
                next_obs, reward, terminated, truncated, _ = env.step(env_action)
                self.num_timesteps += 1
                collected += 1
                self.replay.add(obs, next_obs, buffer_action, reward, terminated)
                episode_return += float(reward)
                if terminated or truncated:
                    index, ret = self.num_episodes, episode_return
                    self.num_episodes += 1
                    episode_return = 0.0
                    obs, _ = env.reset()
                    if on_episode_end is not None and on_episode_end(index, ret) is False:
                        if progress is not None:
                            progress(collected)
                        return self
                else:
                    obs = next_obs
            done_steps += collected
            if self.num_timesteps > cfg.learning_starts:
                steps = cfg.gradient_steps if cfg.gradient_steps >= 0 else collected
                if steps > 0:
                    self.train(steps, rng)
            if progress is not None:
                progress(collected)
        return self

    # ---- state -------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Networks and alpha as flat, unshared CPU tensors ("actor.*", "critic.*",
        "critic_target.*", "log_ent_coef" or "ent_coef_tensor"), e.g. for safetensors."""
        out = {}
        for name in ("actor", "critic", "critic_target"):
            for key, value in getattr(self, name).state_dict().items():
                out[f"{name}.{key}"] = value.detach().cpu().clone()
        if self.log_ent_coef is not None:
            out["log_ent_coef"] = self.log_ent_coef.detach().cpu().clone()
        else:
            out["ent_coef_tensor"] = self.ent_coef_tensor.detach().cpu().clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` gave (same net_arch and alpha mode); optimiser states
        are left as they are."""
        alpha_key = "log_ent_coef" if self.log_ent_coef is not None else "ent_coef_tensor"
        expected = {
            f"{n}.{k}"
            for n in ("actor", "critic", "critic_target")
            for k in getattr(self, n).state_dict()
        } | {alpha_key}
        missing, unexpected = expected - set(tensors), set(tensors) - expected
        if missing or unexpected:
            raise ValueError(
                f"SAC.load_state_tensors: missing {sorted(missing)}, unexpected "
                f"{sorted(unexpected)} (a different net_arch or ent_coef mode?)"
            )
        for name in ("actor", "critic", "critic_target"):
            module = getattr(self, name)
            prefix = name + "."
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        with torch.no_grad():
            target = self.log_ent_coef if self.log_ent_coef is not None else self.ent_coef_tensor
            target.copy_(tensors[alpha_key].reshape(target.shape))
