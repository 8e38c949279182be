"""The SAC brain: a healthy policy trained on the world, then lesioned and stimulated.

CopAC's brain for gym tasks (the official code's `coprocessors/utils/injured_sac.py`
and `get_sac_brain` in `coprocessors/utils/setup_brain.py`) is an SB3 SAC actor with two
hidden layers of 32 units:

    h1 = ReLU(W1 s + b1),  h2 = ReLU(W2 h1 + b2),  a = tanh(W_mu (h2 + E x) + b_mu),

where the brain acts with the deterministic tanh(mu) and its own twin critic is Q*, the
world-action value that CopAC maximises.

- **Lesion.** round(p * n1 * n2) entries of W2 (the second layer's 32 x 32 = 1024 weights) are
  zeroed; which ones is a permutation of all (i, j) drawn from the injury seed. The official
  code truncates (`int(pct * 1024)`); we round, so p = 0.75 zeroes 768 either way.
- **Stimulation.** stim_dim = k channels x in [-5, 5]^k; channel j is added to hidden unit
  i_j of h2, after the ReLU and before the heads (E's row j is the one-hot of i_j). The units
  are the first k of a permutation of the n2 units drawn from the stimulation seed, sorted.
  So atanh(a(s, x)) - atanh(a(s, 0)) = W_mu[:, i] x exactly: the map from stimulation to
  pre-tanh action is affine, which is why a few hundred patient samples fit f.

The healthy brain (actor and critic) is cached as safetensors in `$ALIGNLAB_CACHE/copac/`,
keyed by everything its weights depend on, as gemma2 caches its teacher.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alignlab.copac.envs import check_world, make_world
from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import param
from alignlab.core.errors import AlignlabError
from alignlab.core.resources import torch_threads
from alignlab.core.seeding import int_seed, seed_torch
from alignlab.rl.sac import SAC, SACConfig

CACHE_KIND = "copac"
STIM_LOW, STIM_HIGH = -5.0, 5.0  # the coprocessor's action box (`SACCoprocessorWrapper`)


@dataclass
class BrainTraining:
    """How the healthy SAC brain is trained on the world (SB3 semantics, `train_sac_env.py`)."""

    steps: int = param(25_000, ge=1, help="SAC environment steps on the world")
    hidden: tuple[int, ...] = param(
        (32, 32), ge=1, nonempty=True, help="actor and critic hidden layers (the brain's size)"
    )
    learning_rate: float = param(3e-4, gt=0, help="Adam step size")
    batch_size: int = param(256, ge=1, help="SAC minibatch")
    learning_starts: int = param(100, ge=0, help="uniform-random steps before learning")
    seed: int = param(0, ge=0, help="the healthy brain's seed (shared by all patients)")

    def sac(self) -> SACConfig:
        return SACConfig(
            net_arch=tuple(self.hidden),
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            learning_starts=self.learning_starts,
            tau=0.005,
            gamma=0.99,
        )


def brain_key(world: str, t: BrainTraining) -> str:
    spec = {"world": world, **asdict(t), "torch": torch.__version__.split("+")[0], "v": 1}
    return content_key(spec)


class HealthyBrain:
    """The trained SAC actor and twin critic (Q*) for one world, with its training record."""

    def __init__(self, sac: SAC, info: dict, folder: Path | None = None):
        self.sac, self.info, self.folder = sac, info, folder

    @property
    def actor(self) -> nn.Module:
        return self.sac.actor

    @property
    def critic(self) -> nn.Module:
        return self.sac.critic


def _new_sac(world: str, t: BrainTraining) -> SAC:
    env = make_world(world)
    sac = SAC(
        env.observation_space.shape[0],
        env.action_space.shape[0],
        t.sac(),
        action_low=env.action_space.low,
        action_high=env.action_space.high,
    )
    env.close()
    return sac


def load_brain(folder: Path, world: str, t: BrainTraining) -> HealthyBrain:
    """A cached brain, or one error naming the corrupt file."""
    from safetensors.torch import load_file

    path = Path(folder) / "brain.safetensors"
    try:
        tensors = load_file(str(path))
        info = json.loads((Path(folder) / "brain.json").read_text(encoding="utf-8"))
        sac = _new_sac(world, t)
        sac.load_state_tensors(tensors)
    except Exception as e:
        raise AlignlabError(
            f"the cached brain at {path} is corrupt or incomplete ({type(e).__name__}: {e}); "
            f"delete {folder} to train it again"
        ) from e
    return HealthyBrain(sac, info, Path(folder))


def healthy_brain(ctx, world: str, t: BrainTraining) -> HealthyBrain:
    """The healthy brain of `world`: from the cache, or trained now (SB3-semantics SAC,
    `t.steps` world steps) in the run's stage `brain-<world>` and cached."""
    check_world(world)
    stage = ctx.stage(f"brain-{world}", t.steps)
    key = brain_key(world, t)
    folder = artifact_dir(CACHE_KIND, key)
    if is_complete(folder):
        ctx.log(f"brain: reusing the cached {world} brain {folder}")
        return load_brain(folder, world, t)
    ctx.log(f"brain: training SAC {list(t.hidden)} on {world} for {t.steps} steps")
    seed_torch(t.seed, "copac-brain", world)
    sac = _new_sac(world, t)
    env = make_world(world)
    rng = np.random.default_rng(int_seed(t.seed, "copac-brain-env", world))
    returns: list[float] = []
    # networks this small train fastest on one thread (more threads spin and wait)
    with torch_threads(1), stage.bar(t.steps, f"brain {world}") as bar:
        sac.learn(
            env,
            t.steps,
            rng=rng,
            on_episode_end=lambda i, r: returns.append(float(r)),
            progress=bar.advance,
        )
    env.close()
    info = {
        "world": world,
        "training": asdict(t),
        "key": key,
        "train_returns": returns,
        "torch": torch.__version__,
    }

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in sac.state_tensors().items()}, tmp / "brain.safetensors"
        )
        (tmp / "brain.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

    cached_folder(CACHE_KIND, key, build)
    ctx.log(f"brain: cached at {folder}")
    return HealthyBrain(sac, info, folder)


class SACBrain(nn.Module):
    """An injured, stimulable copy of a healthy SAC actor (module docstring); the Brain
    protocol: `act(obs, stim) -> a in [-1, 1]`, deterministic and stateless."""

    def __init__(
        self,
        actor: nn.Module,
        *,
        p: float = 0.0,
        injury_seed: int = 0,
        stim_dim: int = 2,
        stim_seed: int = 0,
    ):
        super().__init__()
        layers = [m for m in actor.latent_pi if isinstance(m, nn.Linear)]
        if len(layers) < 2:
            raise ValueError("the SAC brain needs at least two hidden layers")
        hidden = layers[1].out_features
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"lesion fraction p must be in [0, 1], got {p}")
        if not 1 <= stim_dim <= hidden:
            raise ValueError(
                f"stim_dim must be in [1, {hidden}] (the hidden width), got {stim_dim}"
            )
        self.actor = copy.deepcopy(actor).eval()
        for q in self.actor.parameters():
            q.requires_grad_(False)
        self.obs_dim = layers[0].in_features
        self.action_dim = self.actor.mu.out_features
        self.stim_dim, self.p = stim_dim, p
        w = [m for m in self.actor.latent_pi if isinstance(m, nn.Linear)][1].weight
        n_out, n_in = w.shape
        order = np.random.default_rng(injury_seed).permutation(n_out * n_in)
        burned = order[: int(round(p * n_out * n_in))]
        with torch.no_grad():
            w.view(-1)[torch.as_tensor(burned, dtype=torch.long)] = 0.0
        self.lesioned = burned
        units = np.sort(np.random.default_rng(stim_seed).permutation(hidden)[:stim_dim])
        self.units = units
        embed = torch.zeros(stim_dim, hidden)
        embed[torch.arange(stim_dim), torch.as_tensor(units)] = 1.0
        self.register_buffer("embed", embed)

    def reset(self, n: int = 1) -> None:  # stateless
        return None

    def latent(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.latent_pi(obs)

    def act_from_latent(self, h: torch.Tensor, stim: torch.Tensor | None) -> torch.Tensor:
        if stim is not None:
            h = h + stim.to(h.dtype) @ self.embed
        return torch.tanh(self.actor.mu(h))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, stim: torch.Tensor | None = None) -> torch.Tensor:
        return self.act_from_latent(self.latent(obs), stim)
