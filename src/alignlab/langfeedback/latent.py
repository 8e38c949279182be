"""The shared trajectory-language latent space (Yang et al. 2024, CoRL; official
`feature_learning/learn_features.py` and `lang_pref_learning/model/encoder.py`).

- **Trajectory encoder Φ**: per time step Linear(24 -> 128) - ReLU - Linear(128 -> 384), then
  the mean over time (`NLTrajAutoencoder`'s trajectory branch). The second Linear commutes with
  the mean, so `TrajEncoder.forward` takes the mean of the hidden layer first and applies the
  second Linear once per trajectory: the same function (`forward_per_step` is the official
  order; the tests check values and gradients), about 7x cheaper. Observations are standardised
  with the training pool's mean and std (buffers of the module).
- **Loss** (not InfoNCE): for a triplet (τ_a, τ_b, l), where the utterance l says how to turn
  τ_a into τ_b, L = -log σ((Φ(τ_b) - Φ(τ_a))·e_l) + 0.01 Σ_{τ∈{a,b}} relu(‖Φ(τ)‖ - 1)
  (`traj_reg_coeff` 1e-2, margin 1).
- **Triplets**: a random pair of the step's sampled trajectories and a random feature k; the
  class is sign(f_k(b) - f_k(a)), ties dropped; the utterance is a random training utterance
  of that class. `label_noise="sigmoid"`: P(greater) = σ(Δf / std_f) with each feature's own
  std (the original uses speed's std for every feature).
- **Stage 1**, language frozen: Adam with cosine decay, `steps` of `triplets` triplets over
  `trajectories` sampled trajectories. **Stage 2**, co-finetuning: the quick preset trains a
  residual adapter e + W₂ relu(W₁ e) (384 -> 256 -> 384, W₂ = 0 at init, so it starts as the
  identity) with Φ; `Finetuned` co-finetunes MiniLM itself, as the paper co-finetunes its
  sentence encoder (all six layers and the embeddings, in train mode with BERT's dropout 0.1,
  at their own learning rate `lm_lr`, 1e-4 the paper's `--finetune-lr`, cosine-decayed like
  Φ's; the paper preset's stage 2, for a GPU).
- **The language side** of a stage is a `Language`: `Frozen` (precomputed embeddings),
  `Adapted` (the adapter on them) or `Finetuned` (MiniLM run on the step's distinct sampled
  sentences). `train_stage(encoder, adapter, ...)` keeps its form (adapter None: frozen) and
  takes `language=` for the others.
- The checkpoint kept is the one with the best validation cos(ΔΦ, e), the original's rule
  (over Φ and the language side's weights together).
- **Accuracy**: the share of (ordered test pair, test utterance of the pair's class) with
  ΔΦ·e > 0, over all test pairs x all test utterances, both orders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from alignlab.core.config import param
from alignlab.core.errors import AlignlabError, check_choice

if TYPE_CHECKING:
    from alignlab.langfeedback.minilm import MiniLMEncoder

LABEL_NOISE = ("none", "sigmoid")
HIDDEN = 128
LATENT = 384


class TrajEncoder(nn.Module):
    """Φ: (B, T, obs_dim) observations -> (B, 384), the mean over time of a per-step MLP."""

    def __init__(self, obs_dim: int = 24, hidden: int = HIDDEN, latent: int = LATENT):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, hidden)
        self.fc2 = nn.Linear(hidden, latent)
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def set_normaliser(self, obs: np.ndarray) -> None:
        """Standardise with the training pool's per-dimension mean and std (std floor 1e-6)."""
        flat = torch.as_tensor(obs, dtype=torch.float32).reshape(-1, obs.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-6))

    def hidden(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc1((obs - self.mean) / self.std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(obs).mean(dim=-2))

    def forward_per_step(self, obs: torch.Tensor) -> torch.Tensor:
        """The official order: the MLP on every step, then the mean (the reference)."""
        return self.fc2(self.hidden(obs)).mean(dim=-2)


class Adapter(nn.Module):
    """Stage 2's residual language adapter: e + W₂ relu(W₁ e), W₂ = 0 at init."""

    def __init__(self, dim: int = LATENT, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.fc2(torch.relu(self.fc1(e)))


class Language:
    """The language side of a stage: the utterance embeddings e that the loss pairs with ΔΦ.

    - `train_embeddings(u)`: (len(u), 384) embeddings of training utterances `u` (indices
      into the training utterances), with gradients where the side trains;
    - `val_embeddings()`: every validation utterance's embedding, without gradients;
    - `parameters()`: what the optimiser trains (nothing: frozen);
    - `own_lr`: False to train in Φ's parameter group at Φ's learning rate, True for a
      parameter group of its own at `train_stage`'s `lm_lr`;
    - `state_dict()` / `load_state_dict()`: the weights the best-checkpoint rule keeps;
    - `to(device)`, `train(mode)`, `training`: as for a module (`train_stage` trains in train
      mode and gives the side back in the mode it came in).
    """

    own_lr: bool = False

    @property
    def n_train(self) -> int:
        raise NotImplementedError

    @property
    def n_val(self) -> int:
        raise NotImplementedError

    def train_embeddings(self, u: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def val_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def to(self, device: str | torch.device) -> Language:
        return self

    @property
    def training(self) -> bool:
        return False

    def train(self, mode: bool = True) -> Language:
        return self


class Frozen(Language):
    """Precomputed embeddings, not trained (stage 1)."""

    def __init__(self, emb_train: np.ndarray, emb_val: np.ndarray):
        self.emb_train = np.asarray(emb_train)
        self.emb_val = np.asarray(emb_val)
        self.to("cpu")

    @property
    def n_train(self) -> int:
        return len(self.emb_train)

    @property
    def n_val(self) -> int:
        return len(self.emb_val)

    def to(self, device: str | torch.device) -> Frozen:
        self._train = torch.as_tensor(self.emb_train, dtype=torch.float32, device=device)
        self._val = torch.as_tensor(self.emb_val, dtype=torch.float32, device=device)
        return self

    def _rows(self, u: np.ndarray) -> torch.Tensor:
        return self._train[torch.as_tensor(u, device=self._train.device)]

    def train_embeddings(self, u: np.ndarray) -> torch.Tensor:
        return self._rows(u)

    def val_embeddings(self) -> torch.Tensor:
        return self._val


class Adapted(Frozen):
    """The residual `Adapter` on precomputed embeddings, trained with Φ at Φ's rate."""

    def __init__(self, emb_train: np.ndarray, emb_val: np.ndarray, adapter: Adapter):
        self.adapter = adapter
        super().__init__(emb_train, emb_val)

    def to(self, device: str | torch.device) -> Adapted:
        self.adapter.to(device)
        super().to(device)
        return self

    def train_embeddings(self, u: np.ndarray) -> torch.Tensor:
        return self.adapter(self._rows(u))

    @torch.no_grad()
    def val_embeddings(self) -> torch.Tensor:
        return self.adapter(self._val)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.adapter.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.adapter.load_state_dict(state)

    @property
    def training(self) -> bool:
        return self.adapter.training

    def train(self, mode: bool = True) -> Adapted:
        self.adapter.train(mode)
        return self


class Finetuned(Language):
    """MiniLM itself, co-finetuned with Φ in a parameter group of its own (peak learning rate
    `train_stage`'s `lm_lr`, by default the paper's finetune lr 1e-4).

    A step encodes only the distinct training sentences among the sampled utterances
    (`SentenceBank.encode_indices`), in train mode (dropout 0.1) during training; validation
    encodes every validation sentence in eval mode."""

    own_lr = True

    def __init__(
        self,
        encoder: MiniLMEncoder,
        train_sentences: Sequence[str],
        val_sentences: Sequence[str],
        batch_size: int | None = 64,
    ):
        self.encoder = encoder
        self.train_bank = encoder.bank(train_sentences, batch_size)
        self.val_bank = encoder.bank(val_sentences, batch_size)

    @property
    def n_train(self) -> int:
        return len(self.train_bank)

    @property
    def n_val(self) -> int:
        return len(self.val_bank)

    def train_embeddings(self, u: np.ndarray) -> torch.Tensor:
        return self.train_bank.encode_indices(u)

    @torch.no_grad()
    def val_embeddings(self) -> torch.Tensor:
        mode = self.encoder.training
        self.encoder.eval()
        try:
            return self.val_bank.encode_all()
        finally:
            self.encoder.train(mode)

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.encoder.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.encoder.load_state_dict(state)

    def to(self, device: str | torch.device) -> Finetuned:
        self.encoder.to(device)
        return self

    @property
    def training(self) -> bool:
        return self.encoder.training

    def train(self, mode: bool = True) -> Finetuned:
        self.encoder.train(mode)
        return self


def alignment_loss(
    phi_a: torch.Tensor,
    phi_b: torch.Tensor,
    e: torch.Tensor,
    reg: float = 0.01,
    margin: float = 1.0,
) -> torch.Tensor:
    """Mean over triplets of -log σ((Φ_b - Φ_a)·e) + reg Σ_{a,b} relu(‖Φ‖ - margin)."""
    logits = ((phi_b - phi_a) * e).sum(-1)
    norms = torch.relu(phi_a.norm(dim=-1) - margin) + torch.relu(phi_b.norm(dim=-1) - margin)
    return (-nn.functional.logsigmoid(logits) + reg * norms).mean()


@dataclass
class StageConfig:
    """One training stage of the latent space."""

    steps: int = param(600, ge=0, help="optimiser steps")
    lr: float = param(3e-3, gt=0, help="Adam's peak learning rate (cosine decay to 0)")
    triplets: int = param(4096, ge=1, help="triplets per step")
    trajectories: int = param(
        512, ge=2, help="trajectories sampled per step (pairs drawn among them)"
    )
    eval_every: int = param(50, ge=1, help="steps between validations (the best one is kept)")


def class_index(k: int, direction: int) -> int:
    """Utterance class of feature k and direction +1 (greater) / -1 (less): 2k or 2k + 1."""
    return 2 * int(k) + (0 if direction > 0 else 1)


def sample_triplets(
    rng: np.random.Generator,
    feats: np.ndarray,
    n: int,
    utt_class: np.ndarray,
    label_noise: str = "none",
    feat_std: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n triplets over the rows of `feats` (N, K): (a, b, utterance index), ties dropped (so
    fewer than n may come back). The utterance is a random one of the triplet's class among
    `utt_class` (the class index of each available utterance)."""
    check_choice("label_noise", label_noise, LABEL_NOISE)
    N, K = feats.shape
    a = rng.integers(0, N, n)
    b = rng.integers(0, N, n)
    k = rng.integers(0, K, n)
    delta = feats[b, k] - feats[a, k]
    if label_noise == "sigmoid":
        std = np.asarray(feat_std, dtype=float)[k]
        p = 1.0 / (1.0 + np.exp(-delta / np.maximum(std, 1e-12)))
        direction = np.where(rng.random(n) < p, 1, -1)
        keep = a != b
    else:
        direction = np.sign(delta).astype(int)
        keep = direction != 0
    a, b, k, direction = a[keep], b[keep], k[keep], direction[keep]
    cls = 2 * k + (direction < 0)
    members = [np.flatnonzero(utt_class == c) for c in range(2 * K)]
    if any(len(m) == 0 for m in members):
        missing = [c for c, m in enumerate(members) if len(m) == 0]
        raise AlignlabError(f"no utterance of classes {missing}: every class needs one")
    u = np.empty(len(cls), dtype=int)
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        u[idx] = members[c][rng.integers(0, len(members[c]), len(idx))]
    return a, b, u


@torch.no_grad()
def pair_accuracy(
    phi: np.ndarray | torch.Tensor,
    feats: np.ndarray,
    emb: np.ndarray | torch.Tensor,
    utt_class: np.ndarray,
) -> dict:
    """Sign accuracy over all ordered pairs (a, b), a != b, of the pool and every utterance of
    the pair's class for each feature: the share with (Φ_b - Φ_a)·e > 0 (ties of f_k skipped).
    Returns the overall share and one per feature, and the mean cos(ΔΦ, e)."""
    phi = torch.as_tensor(phi, dtype=torch.float64)
    emb = torch.as_tensor(emb, dtype=torch.float64)
    s = phi @ emb.T  # (N, U)
    K = feats.shape[1]
    hits = np.zeros(K)
    total = np.zeros(K)
    cos_sum, cos_n = 0.0, 0
    sq = (phi * phi).sum(-1)
    gram = phi @ phi.T  # ‖Φ_b - Φ_a‖² = ‖Φ_a‖² + ‖Φ_b‖² - 2 Φ_a·Φ_b, without (N, N, d)
    dn = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0).sqrt().clamp_min(1e-12)
    for u in range(emb.shape[0]):
        c = int(utt_class[u])
        k, direction = c // 2, (1 if c % 2 == 0 else -1)
        f = torch.as_tensor(feats[:, k])
        mask = torch.sign(f[None, :] - f[:, None]) == direction  # (a, b)
        d = s[:, u][None, :] - s[:, u][:, None]  # (Φ_b - Φ_a)·e_u
        hits[k] += float((d[mask] > 0).sum())
        total[k] += float(mask.sum())
        cos = d[mask] / (dn[mask] * emb[u].norm())
        cos_sum += float(cos.sum())
        cos_n += int(mask.sum())
    per = {k: hits[k] / total[k] if total[k] else math.nan for k in range(K)}
    return {
        "accuracy": float(hits.sum() / max(total.sum(), 1)),
        "per_feature": per,
        "cos": cos_sum / max(cos_n, 1),
        "cases": int(total.sum()),
    }


def _cosine_lr(step: int, steps: int, lr: float) -> float:
    return 0.5 * lr * (1 + math.cos(math.pi * step / max(1, steps)))


def train_stage(
    encoder: TrajEncoder,
    adapter: Adapter | None,
    obs: np.ndarray,
    feats: np.ndarray,
    emb: np.ndarray | None,
    utt_class: np.ndarray,
    val: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
    cfg: StageConfig,
    rng: np.random.Generator,
    label_noise: str = "none",
    on_step: Callable[[int, dict], None] | None = None,
    device: str | torch.device = "cpu",
    *,
    language: Language | None = None,
    lm_lr: float = 1e-4,
) -> dict:
    """Train Φ and the language side for one stage on `device`; keep the state with the best
    validation cos(ΔΦ, e) (the modules end on the CPU). `val` is (obs, feats, emb,
    utt_class) of the validation split.

    The language side is `language` when given (then `adapter` must be None, and `emb` and
    `val[2]` are not read: they may be None), else `Adapted(emb, val[2], adapter)`, or
    `Frozen(emb, val[2])` when `adapter` is None. A side with a learning rate of its own
    (`Finetuned`) trains in a second parameter group at peak `lm_lr`; both groups follow the
    same cosine decay."""
    if language is None:
        language = Frozen(emb, val[2]) if adapter is None else Adapted(emb, val[2], adapter)
    elif adapter is not None:
        raise AlignlabError("train_stage takes an adapter or a language side, not both")
    if language.n_train != len(utt_class) or language.n_val != len(val[3]):
        raise AlignlabError(
            f"the language side has {language.n_train} training and {language.n_val} "
            f"validation utterances; utt_class has {len(utt_class)}, val's {len(val[3])}"
        )
    if isinstance(lm_lr, bool) or not isinstance(lm_lr, int | float) or not lm_lr >= 0:
        raise AlignlabError(f"lm_lr must be a learning rate >= 0, got {lm_lr!r}")
    encoder.to(device)
    language.to(device)
    if not language.own_lr:  # one group, Φ's parameters then the language side's
        groups = [{"params": list(encoder.parameters()) + language.parameters()}]
        peaks = [cfg.lr]
    else:
        groups = [
            {"params": list(encoder.parameters())},
            {"params": language.parameters(), "lr": float(lm_lr)},
        ]
        peaks = [cfg.lr, float(lm_lr)]
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    x = torch.as_tensor(obs, dtype=torch.float32)
    feat_std = feats.std(0)
    v_obs = torch.as_tensor(val[0], dtype=torch.float32, device=device)

    def validate() -> float:
        encoder.eval()
        with torch.no_grad():
            v_emb = language.val_embeddings()
            r = pair_accuracy(encoder(v_obs).cpu(), val[1], v_emb.cpu(), val[3])
        encoder.train()
        return r["cos"]

    mode = language.training
    language.train()
    best = validate()
    best_state = _state(encoder, language)
    history = [(0, best)]
    for step in range(cfg.steps):
        rows = rng.choice(len(x), size=min(cfg.trajectories, len(x)), replace=False)
        a, b, u = sample_triplets(rng, feats[rows], cfg.triplets, utt_class, label_noise, feat_std)
        phi = encoder(x[torch.as_tensor(rows)].to(device))
        e = language.train_embeddings(u)
        loss = alignment_loss(phi[a], phi[b], e)
        for g, peak in zip(opt.param_groups, peaks):
            g["lr"] = _cosine_lr(step, cfg.steps, peak)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1, {"loss": loss.item()})
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            cos = validate()
            history.append((step + 1, cos))
            if cos > best:
                best, best_state = cos, _state(encoder, language)
    _load(encoder, language, best_state)
    language.train(mode)
    encoder.to("cpu")
    language.to("cpu")
    return {"best_val_cos": best, "val_cos": history}


def _state(encoder: TrajEncoder, language: Language) -> dict:
    out = {f"encoder.{k}": v.detach().clone() for k, v in encoder.state_dict().items()}
    out.update({f"language.{k}": v.detach().clone() for k, v in language.state_dict().items()})
    return out


def _load(encoder: TrajEncoder, language: Language, state: dict) -> None:
    encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
    language.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("language.")})
