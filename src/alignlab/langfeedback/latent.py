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
  identity) with Φ; the paper preset finetunes MiniLM's layers (on a GPU).
- The checkpoint kept is the one with the best validation cos(ΔΦ, e), the original's rule.
- **Accuracy**: the share of (ordered test pair, test utterance of the pair's class) with
  ΔΦ·e > 0, over all test pairs x all test utterances, both orders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alignlab.core.config import param
from alignlab.core.errors import AlignlabError, check_choice

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
    emb: np.ndarray,
    utt_class: np.ndarray,
    val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: StageConfig,
    rng: np.random.Generator,
    label_noise: str = "none",
    on_step: Callable[[int, dict], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train Φ (and the adapter, when given) for one stage on `device`; keep the state with
    the best validation cos(ΔΦ, e) (the modules end on the CPU). `val` is (obs, feats, emb,
    utt_class) of the validation split."""
    encoder.to(device)
    if adapter is not None:
        adapter.to(device)
    params = list(encoder.parameters()) + (
        list(adapter.parameters()) if adapter is not None else []
    )
    opt = torch.optim.Adam(params, lr=cfg.lr)
    x = torch.as_tensor(obs, dtype=torch.float32)
    e_all = torch.as_tensor(emb, dtype=torch.float32, device=device)
    feat_std = feats.std(0)
    v_obs = torch.as_tensor(val[0], dtype=torch.float32, device=device)

    def language(e: torch.Tensor) -> torch.Tensor:
        return adapter(e) if adapter is not None else e

    def validate() -> float:
        encoder.eval()
        with torch.no_grad():
            v_emb = language(torch.as_tensor(val[2], dtype=torch.float32, device=device))
            r = pair_accuracy(encoder(v_obs).cpu(), val[1], v_emb.cpu(), val[3])
        encoder.train()
        return r["cos"]

    best = validate()
    best_state = _state(encoder, adapter)
    history = [(0, best)]
    for step in range(cfg.steps):
        rows = rng.choice(len(x), size=min(cfg.trajectories, len(x)), replace=False)
        a, b, u = sample_triplets(rng, feats[rows], cfg.triplets, utt_class, label_noise, feat_std)
        phi = encoder(x[torch.as_tensor(rows)].to(device))
        e = language(e_all[torch.as_tensor(u, device=device)])
        loss = alignment_loss(phi[a], phi[b], e)
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.steps, cfg.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1, {"loss": loss.item()})
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            cos = validate()
            history.append((step + 1, cos))
            if cos > best:
                best, best_state = cos, _state(encoder, adapter)
    _load(encoder, adapter, best_state)
    encoder.to("cpu")
    if adapter is not None:
        adapter.to("cpu")
    return {"best_val_cos": best, "val_cos": history}


def _state(encoder, adapter) -> dict:
    out = {f"encoder.{k}": v.detach().clone() for k, v in encoder.state_dict().items()}
    if adapter is not None:
        out.update({f"adapter.{k}": v.detach().clone() for k, v in adapter.state_dict().items()})
    return out


def _load(encoder, adapter, state: dict) -> None:
    encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
    if adapter is not None:
        adapter.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("adapter.")})
