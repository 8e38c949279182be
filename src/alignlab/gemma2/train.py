"""Training a Gemma 2 model: next-token prediction or knowledge distillation, one loop.

Gemma 2 (Gemma Team 2024, §3.2 "Knowledge distillation") trains the 2B and 9B models by
distillation: instead of the one-hot next token, the student minimises the cross-entropy to
a frozen teacher's full next-token distribution,

    min_{P_S}  Σ_x −P_T(x | x_c) log P_S(x | x_c),                                  (KD)

which is the forward KL(P_T ‖ P_S) plus the teacher's entropy (a constant for the student).
The 27B model is trained from scratch with ordinary next-token prediction (NTP). Both
objectives share one loop here (nanoGPT-style, top to bottom in `train`):

    sample a global batch of random windows -> (DDP: take this rank's rows) -> forward
    -> loss (`ntp_loss` or `kd_loss`) -> backward -> clip the global grad norm
    -> AdamW step at the scheduled lr (linear warmup, cosine decay to min_lr)
    -> log (train loss, lr, grad norm, tokens/s) -> validate (loss, perplexity)
    -> checkpoint (weights, AdamW state, sampler RNG) every `checkpoint_every` steps.

Determinism: the sampler is a numpy Generator seeded with `TrainConfig.seed` and saved in
every checkpoint; validation uses one fixed set of windows (the stream's first ones); the
optional top-k teacher sampling draws from a generator seeded by (seed, step, row). A run
interrupted and resumed therefore ends with bit-identical weights and losses.

Data parallelism: under `torchrun` (`python -m torch.distributed.run --nproc_per_node 2 -m
alignlab.gemma2.train ...`) every rank draws the same global batch and trains on its own
contiguous slice of rows inside `DistributedDataParallel`; the loss is normalised by the
global token count, so the averaged gradient equals the single-process gradient of the same
global batch, and the logged losses are all-reduced. Only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core import config as cfglib
from alignlab.core.errors import AlignlabError
from alignlab.core.checkpoint import Checkpointer
from alignlab.gemma2.data import eval_batches, sample_batch

OBJECTIVES = ("ntp", "kd")
IGNORE_INDEX = -100  # targets with this id carry no loss (F.cross_entropy's convention)


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of one training run; the loop validates them before it starts."""

    objective: Literal["ntp", "kd"] = "ntp"  # next-token prediction, or distillation (KD)
    steps: int = 1000  # optimiser updates
    batch_size: int = 8  # global batch, in sequences (split across DDP ranks)
    seq_len: int = 128  # tokens per sequence
    lr: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # decoupled (AdamW), on matrices only (`param_groups`)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global L2 norm of the gradient; 0 disables clipping
    kd_temperature: float = 1.0  # Gemma 2 uses the plain distribution (1.0)
    kd_top_k: int | None = None  # Gemma 3's sub-sampled teacher (see `subsample_teacher`)
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4  # validation windows = eval_batches * batch_size
    checkpoint_every: int = 100  # 0: never (a final checkpoint is still written)
    seed: int = 0  # the batch sampler's seed

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; valid objectives: {', '.join(OBJECTIVES)}"
            )
        for name in ("steps", "batch_size", "seq_len", "log_every", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ValueError("weight_decay and grad_clip must be >= 0 and eps > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not self.kd_temperature > 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.kd_top_k is not None and self.kd_top_k < 1:
            raise ValueError(
                f"kd_top_k must be >= 1 or null (full distribution), got {self.kd_top_k}"
            )


# ---------------------------------------------------------------------------------------
# the losses: small pure functions of logits


def _float(logits: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (bf16 logits lose the tail of the softmax), float64 kept."""
    return logits if logits.dtype == torch.float64 else logits.float()


def ntp_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy −log P(x_{t+1} | x_{≤t}) over positions (B, T, V) vs (B, T).

    Targets equal to IGNORE_INDEX (-100) are skipped; "mean" averages over the others.
    """
    return F.cross_entropy(
        _float(logits).flatten(0, -2),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def teacher_probs(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P_T(x | x_c) = softmax(z_T / τ): the teacher's full next-token distribution."""
    return torch.softmax(_float(teacher_logits) / temperature, dim=-1)


def subsample_teacher(
    probs: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep k token ids per position, sampled by teacher probability; zero the rest, renormalise.

    This is the *Gemma 3* recipe (Gemma 3 report §2.2: "we sample 256 logits per token,
    weighted by teacher probabilities ... non-sampled logits are set to zero probability and
    renormalized"); it is NOT part of Gemma 2, which distils on the full distribution. The k
    ids are drawn without replacement with the Gumbel-top-k / exponential-race trick: the k
    largest p_i / E_i, E_i ~ Exp(1), are a sample without replacement proportional to p.
    """
    if k >= probs.shape[-1]:
        return probs
    race = torch.empty_like(probs).exponential_(generator=generator)
    idx = (probs / race).topk(k, dim=-1).indices
    kept = torch.zeros_like(probs).scatter_(-1, idx, probs.gather(-1, idx))
    return kept / kept.sum(-1, keepdim=True)


def kd_loss(
    student_logits: torch.Tensor,
    probs: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Distillation loss, Gemma 2 §3.2: Σ_x −P_T(x | x_c) log P_S(x | x_c), per position.

    `probs` is the teacher's distribution P_T (B, T, V) (`teacher_probs`, optionally
    `subsample_teacher`); P_S = softmax(z_S / τ). With τ ≠ 1 the loss is multiplied by τ² so
    its gradient keeps its scale (Hinton et al. 2015); Gemma 2 uses τ = 1. It equals
    H(P_T) + KL(P_T ‖ P_S), so it is the forward KL up to a constant, and equals `ntp_loss`
    when P_T is one-hot. `mask` (B, T) selects the positions that count.
    """
    log_ps = torch.log_softmax(_float(student_logits) / temperature, dim=-1)
    # xlogy-style: a zero teacher probability contributes 0 even where log P_S = -inf, while a
    # NaN in the student's logits stays NaN (a diverged run must not report a falling loss)
    terms = torch.where(probs > 0, probs * log_ps, torch.zeros_like(log_ps))
    per_pos = -terms.sum(-1) * temperature**2
    if mask is not None:
        per_pos = per_pos[mask]
    return per_pos.sum() if reduction == "sum" else per_pos.mean()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(P) = −Σ_x P(x) log P(x) over the last dimension (0 log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def kl_divergence(probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_T ‖ P_S) per position: the forward KL that (KD) minimises, = KD − H(P_T)."""
    log_ps = torch.log_softmax(_float(student_logits), dim=-1)
    return (torch.special.xlogy(probs, probs) - probs * log_ps).sum(-1)


# ---------------------------------------------------------------------------------------
# optimiser and schedule


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The lr of update `step` (0-based): linear warmup, then cosine decay to lr·min_lr_ratio.

    Warmup: lr·(step+1)/warmup_steps for step < warmup_steps, so the last warmup step is at
    the peak. Then lr_min + ½(lr − lr_min)(1 + cos(π·p)) with p = (step − warmup_steps) /
    (steps − warmup_steps) going from 0 (peak) towards 1 (lr_min at step = steps).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay the weight matrices, not the norms, biases or embeddings.

    Norm gains and biases (1-D) set scales and offsets that decay would pull towards
    arbitrary values; the (tied) embedding is a lookup table whose rows for rare tokens
    would just shrink, the usual choice in nanoGPT-style LM training. A parameter shared
    by several modules (the tied embedding / lm_head) is listed once.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() lists a shared tensor once
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) over `param_groups`."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )


# ---------------------------------------------------------------------------------------
# data: random training windows, fixed validation windows

#: a batch source: (rng, batch_size, seq_len) -> (input_ids, targets), each (batch, seq_len)
BatchFn = Callable[[np.random.Generator, int, int], tuple[Any, Any]]


def _as_long(x: Any, device: str | torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).long().to(device)


def _batch_source(data: np.ndarray | BatchFn, seq_len: int, vocab: int | None) -> BatchFn:
    if callable(data):
        return data
    tokens = _token_stream(data, "train_data", seq_len + 2, vocab)

    def sample(rng: np.random.Generator, batch_size: int, seq_len: int):
        windows = sample_batch(tokens, batch_size, seq_len, rng)  # nanoGPT's get_batch
        return windows[:, :-1], windows[:, 1:]

    return sample


def _token_stream(data: Any, name: str, min_len: int, vocab: int | None) -> np.ndarray:
    tokens = np.asarray(data)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise AlignlabError(
            f"{name} must be a 1-D integer token stream or a batch function "
            f"(rng, batch_size, seq_len) -> (input_ids, targets); got {tokens.dtype} {tokens.shape}."
        )
    if len(tokens) < min_len:
        raise AlignlabError(f"{name} has {len(tokens)} tokens; it needs at least {min_len}.")
    if vocab is not None and (tokens.min() < 0 or tokens.max() >= vocab):
        raise AlignlabError(f"{name} has token ids outside the model's vocabulary [0, {vocab}).")
    return tokens


# ---------------------------------------------------------------------------------------
# checkpoint tensors: the model's weights and AdamW's state as flat named tensors


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied aliases dropped (safetensors stores no shared memory)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            continue  # e.g. lm_head.weight, tied to the embedding
        seen.add(key)
        out[name] = t
    return out


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    aliases = set(model.state_dict()) - set(model_tensors(model))
    if unexpected or set(missing) - aliases:
        raise AlignlabError(
            "The checkpoint does not fit this model: "
            f"missing {sorted(set(missing) - aliases)}, unexpected {sorted(unexpected)}."
        )


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW's state dict as named tensors `optim.<param>.<key>` plus its JSON part."""
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                extra.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": extra}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["state"].items():
        state.setdefault(int(pid), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    teacher: nn.Module | None = None,
) -> dict[str, float]:
    """Summed NTP loss (and KL(P_T ‖ P_S) to the teacher) over (input_ids, targets) batches.

    Returns sums and the target count ("nll", "kl", "n"), so data-parallel ranks can add
    theirs up; val loss = nll / n and perplexity = exp(val loss).
    """
    was_training = model.training
    model.eval()
    nll = kl = n = 0.0
    for x, y in batches:
        if len(x) == 0:
            continue
        logits = model(x)
        nll += float(ntp_loss(logits, y, reduction="sum"))
        n += float((y != IGNORE_INDEX).sum())
        if teacher is not None:
            kl += float(kl_divergence(teacher_probs(teacher(x)), logits)[y != IGNORE_INDEX].sum())
    model.train(was_training)
    return {"nll": nll, "kl": kl, "n": n}


# ---------------------------------------------------------------------------------------
# the loop


@dataclasses.dataclass
class TrainResult:
    """What a training run gives back. `to_dict()` (deterministic) leaves out the timing."""

    steps: int
    tokens: int  # training tokens seen (global)
    final_val_loss: float
    final_val_ppl: float
    curve: list[tuple[int, float]]  # (training tokens, validation perplexity)
    train_curve: list[tuple[int, float]]  # (step, mean training loss since the last log)
    final_val_kl: float | None = None  # KL(P_T ‖ P_S) on validation, when there is a teacher
    tokens_per_s: float = 0.0  # this process's throughput: not deterministic

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("tokens_per_s")
        return d


def _dist() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_sum(values: list[float], world: int, device) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _row_generator(seed: int, step: int, row: int, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, step, row]).generate_state(1)[0]))
    return gen


def _max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def _vocab(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "vocab_size", None)


def check_setup(
    model: nn.Module, cfg: TrainConfig, teacher: nn.Module | None, world: int = 1
) -> None:
    """One clear error for a config that cannot train this model (before any work)."""
    cfglib.validate(cfg)
    if cfg.objective == "kd" and teacher is None:
        raise AlignlabError("objective 'kd' needs a teacher model (pass teacher=...).")
    limit = _max_positions(model)
    if limit is not None and cfg.seq_len > limit:
        raise AlignlabError(
            f"seq_len={cfg.seq_len} exceeds the model's max_position_embeddings={limit}."
        )
    if teacher is not None:
        t_limit, s_vocab, t_vocab = _max_positions(teacher), _vocab(model), _vocab(teacher)
        if t_limit is not None and cfg.seq_len > t_limit:
            raise AlignlabError(
                f"seq_len={cfg.seq_len} exceeds the teacher's max_position_embeddings={t_limit}."
            )
        if s_vocab is not None and t_vocab is not None and s_vocab != t_vocab:
            raise AlignlabError(
                f"teacher vocab_size={t_vocab} differs from the student's {s_vocab}; "
                "distillation needs one shared vocabulary."
            )
    if cfg.batch_size % world:
        raise AlignlabError(
            f"batch_size={cfg.batch_size} is not divisible by the {world} data-parallel ranks."
        )


class _Progress:
    """A rich progress bar with the training throughput; silent when quiet or not rank 0."""

    def __init__(self, enabled: bool, total: int, done: int, description: str):
        self.bar = None
        if not enabled:
            return
        from rich.progress import TextColumn

        from alignlab.core.console import progress

        self.bar = progress()
        self.bar.columns = (
            *self.bar.columns[:3],
            TextColumn("{task.fields[rate]}"),
            *self.bar.columns[3:],
        )
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, completed=done, rate="")

    def update(self, tokens_per_s: float | None = None, loss: float | None = None) -> None:
        if self.bar is None:
            return
        fields = {}
        if tokens_per_s is not None:
            fields["rate"] = f"{tokens_per_s:,.0f} tok/s  loss {loss:.3f}"
        self.bar.update(self.task, advance=1, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_data: np.ndarray | BatchFn,
    val_data: np.ndarray | Sequence[tuple[Any, Any]],
    *,
    teacher: nn.Module | None = None,
    ctx: Any = None,
    device: str | torch.device = "cpu",
    checkpointer: Checkpointer | None = None,
    resume: bool | None = None,
    key: str = "train",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` (a module mapping (B, T) token ids to (B, T, V) logits) for cfg.steps.

    train_data: a 1-D numpy token stream (random windows are drawn from it), or a function
        (rng, batch_size, seq_len) -> (input_ids, targets) giving a global batch.
    val_data: a token stream (its first eval_batches * batch_size windows, in order, as
        `data.eval_batches` walks it) or a list of fixed (input_ids, targets) batches.
    teacher: the frozen KD teacher (objective "kd"): put in eval mode, never updated. With
        objective "ntp" a teacher is only used to report the validation KL(P_T ‖ P_S).
    ctx: a core RunContext (or None): metrics go to ctx.log_metrics, the checkpoint to
        ctx.checkpoint, and the progress bar is shown unless ctx.quiet.
    checkpointer / resume: override ctx.checkpoint / ctx.resume, e.g. for a second training
        stage in one run (its own folder), or for DDP ranks > 0, which read but never write.
    key: names this training in its checkpoints; a checkpoint with another key is ignored.
        A finished run leaves a final checkpoint, so resuming it just reloads the weights.
    on_step(step, metrics): called after every update (tests use it to interrupt a run).
    Under an initialised torch.distributed process group the model is wrapped in DDP.
    """
    rank, world = _dist()
    check_setup(model, cfg, teacher, world)
    main_rank = rank == 0
    checkpointer = checkpointer if checkpointer is not None else getattr(ctx, "checkpoint", None)
    resume = bool(getattr(ctx, "resume", False)) if resume is None else resume
    vocab = _vocab(model)
    sample = _batch_source(train_data, cfg.seq_len, vocab)
    val = []
    for x, y in _val_batches(val_data, cfg, vocab):
        x, y = _as_long(x, device), _as_long(y, device)
        mine = slice(rank * len(x) // world, (rank + 1) * len(x) // world)  # this rank's rows
        val.append((x[mine], y[mine]))

    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    start, tokens, curve, train_curve, last_val, last_kl = 0, 0, [], [], math.nan, None

    ckpt = checkpointer.load() if checkpointer is not None and resume else None
    if ckpt is not None and ckpt.state.get("key") == key:
        load_model_tensors(model, {k[6:]: v for k, v in ckpt.tensors.items() if k[:6] == "model."})
        load_optimizer_tensors(opt, ckpt.tensors, ckpt.state["optimizer"])
        rng.bit_generator.state = ckpt.state["rng"]
        start, tokens = ckpt.state["step"], ckpt.state["tokens"]
        curve = [tuple(c) for c in ckpt.state["curve"]]
        train_curve = [tuple(c) for c in ckpt.state["train_curve"]]
        last_val, last_kl = ckpt.state["val_loss"], ckpt.state["val_kl"]
        if ctx is not None and main_rank:
            ctx.log(f"{key}: resuming at step {start}")

    net = model
    if world > 1:  # DDP broadcasts rank 0's weights and averages gradients over ranks
        net = nn.parallel.DistributedDataParallel(model, device_ids=None)
    rows = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)

    def validate() -> tuple[float, float | None]:
        s = evaluate(model, val, teacher)
        nll, kl, n = _all_sum([s["nll"], s["kl"], s["n"]], world, device)
        return nll / n, (kl / n if teacher is not None else None)

    def log_eval(step: int) -> None:
        nonlocal last_val, last_kl
        last_val, last_kl = validate()
        curve.append((tokens, math.exp(min(last_val, 700.0))))
        if ctx is not None and main_rank:
            extra = {} if last_kl is None else {"val_kl": last_kl}
            ctx.log_metrics(step, tokens=tokens, val_loss=last_val, val_ppl=curve[-1][1], **extra)

    def save(step: int, finished: bool) -> None:
        if checkpointer is None or not main_rank:
            return
        opt_tensors, opt_meta = optimizer_tensors(opt)
        tensors = {f"model.{k}": v for k, v in model_tensors(model).items()} | opt_tensors
        state = {
            "key": key,
            "step": step,
            "tokens": tokens,
            "rng": rng.bit_generator.state,
            "optimizer": opt_meta,
            "curve": curve,
            "train_curve": train_curve,
            "val_loss": last_val,
            "val_kl": last_kl,
            "finished": finished,
            "window": [window_loss, window_steps],  # the training-loss average being built
        }
        checkpointer.save(step, tensors, state)

    if start == 0:
        log_eval(0)
    bar = _Progress(
        ctx is not None and not getattr(ctx, "quiet", True) and main_rank,
        cfg.steps,
        start,
        f"gemma2 {cfg.objective}",
    )
    tokens_per_step = cfg.batch_size * cfg.seq_len
    window_loss, window_steps = 0.0, 0
    if ckpt is not None and ckpt.state.get("key") == key:  # a resumed log line averages the
        window_loss, window_steps = ckpt.state.get("window", [0.0, 0])  # same steps as unbroken
    t0, rate_steps = time.perf_counter(), 0  # tokens/s counts only steps timed in this process
    t_start, steps_run = t0, 0
    try:
        for step in range(start, cfg.steps):
            x, y = sample(rng, cfg.batch_size, cfg.seq_len)
            x, y = _as_long(x, device), _as_long(y, device)
            n_tokens = int((y != IGNORE_INDEX).sum())  # the global count: every rank has y
            x, y = x[rows], y[rows]
            logits = net(x)
            if cfg.objective == "ntp":
                loss_sum = ntp_loss(logits, y, reduction="sum")
            else:
                probs = distillation_targets(teacher, x, cfg, step, first_row=rows.start)
                loss_sum = kd_loss(
                    logits, probs, cfg.kd_temperature, mask=y != IGNORE_INDEX, reduction="sum"
                )
            # DDP averages gradients over ranks: scaling by world / N gives d(global mean)
            (loss_sum * world / n_tokens).backward()
            grad_norm = (
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if cfg.grad_clip > 0
                else _grad_norm(model)
            )
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)

            (loss_total,) = _all_sum([float(loss_sum.detach())], world, device)
            loss = loss_total / n_tokens
            tokens += tokens_per_step
            done = step + 1
            steps_run += 1
            window_loss, window_steps = window_loss + loss, window_steps + 1
            rate_steps += 1
            metrics = {"train_loss": loss, "lr": lr, "grad_norm": float(grad_norm)}
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                rate = rate_steps * tokens_per_step / max(now - t0, 1e-9)
                train_curve.append((done, window_loss / window_steps))
                if ctx is not None and main_rank:
                    ctx.log_metrics(
                        done,
                        tokens=tokens,
                        train_loss=window_loss / window_steps,
                        lr=lr,
                        grad_norm=float(grad_norm),
                        tokens_per_s=rate,
                    )
                t0, rate_steps, window_loss, window_steps = now, 0, 0.0, 0
                bar.update(rate, loss)
            else:
                bar.update()
            if done % cfg.eval_every == 0 or done == cfg.steps:
                log_eval(done)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                save(done, finished=False)
            if on_step is not None:
                on_step(done, metrics)
    finally:
        bar.close()
    if start < cfg.steps:
        save(cfg.steps, finished=True)
    elapsed = time.perf_counter() - t_start
    return TrainResult(
        steps=cfg.steps,
        tokens=tokens,
        final_val_loss=last_val,
        final_val_ppl=curve[-1][1],
        curve=curve,
        train_curve=train_curve,
        final_val_kl=last_kl,
        tokens_per_s=steps_run * tokens_per_step / elapsed if steps_run else 0.0,
    )


@torch.no_grad()
def distillation_targets(
    teacher: nn.Module, x: torch.Tensor, cfg: TrainConfig, step: int, first_row: int = 0
) -> torch.Tensor:
    """P_T for a batch: the frozen teacher's full distribution (Gemma 2), or with
    `cfg.kd_top_k` its sub-sample (Gemma 3), drawn per row from a generator seeded by
    (seed, step, global row index), so a resumed or data-parallel run draws the same ids."""
    probs = teacher_probs(teacher(x), cfg.kd_temperature)
    if cfg.kd_top_k is None:
        return probs
    rows = [
        subsample_teacher(p, cfg.kd_top_k, _row_generator(cfg.seed, step, first_row + i, x.device))
        for i, p in enumerate(probs)
    ]
    return torch.stack(rows)


def _grad_norm(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _val_batches(val_data: Any, cfg: TrainConfig, vocab: int | None) -> list[tuple[Any, Any]]:
    """A stream's first eval_batches * batch_size windows in order (`data.eval_batches`), or
    the given (input_ids, targets) batches: the same validation set at every evaluation."""
    if isinstance(val_data, (list, tuple)):
        if not all(isinstance(b, (list, tuple)) and len(b) == 2 for b in val_data) or not val_data:
            raise AlignlabError(
                "val_data must be a 1-D token stream or a non-empty list of "
                "(input_ids, targets) batches."
            )
        return list(val_data)
    tokens = _token_stream(val_data, "val_data", 2, vocab)
    windows = eval_batches(tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches * cfg.batch_size)
    return [(w[:, :-1], w[:, 1:]) for w in windows]


# ---------------------------------------------------------------------------------------
# command line: single process, or data-parallel under torchrun


def synthetic_tokens(vocab_size: int, n: int, period: int = 64, seed: int = 0) -> np.ndarray:
    """A random sequence of `period` tokens repeated to length n: learnable by memorising it."""
    pattern = np.random.default_rng(seed).integers(0, vocab_size, size=period)
    return np.resize(pattern, n).astype(np.int64)


def _load_tokens(source: str, vocab_size: int, n: int, seed: int) -> np.ndarray:
    if source == "synthetic":
        return synthetic_tokens(vocab_size, n, seed=seed)
    path = Path(source)
    if path.suffix != ".npy" or not path.is_file():
        raise AlignlabError(
            f"--data {source!r}: expected 'synthetic' or an existing .npy file of token ids."
        )
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _context(out: Path, cfg: TrainConfig, device: str, resume: bool, quiet: bool):
    """A core RunContext for a training run started from the command line (rank 0 only)."""
    from alignlab.core.config import PRESETS
    from alignlab.core.experiment import Experiment
    from alignlab.core.io import atomic_write_text
    from alignlab.core.context import RunContext, read_metrics

    exp = Experiment(
        name="gemma2.train",
        paper="Gemma Team 2024, Gemma 2",
        description="python -m alignlab.gemma2.train",
        config=TrainConfig,
        presets={p: cfg for p in PRESETS},
        run=lambda ctx: {},
    )
    rng = np.random.default_rng(cfg.seed)
    ctx = RunContext(exp, cfg, "cli", cfg.seed, out, device, resume, quiet, rng)
    last = ctx.checkpoint.last_step() if resume else None
    rows = [r for r in read_metrics(out) if last is not None and r["step"] <= last]
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return ctx


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m alignlab.gemma2.train --out DIR [--set steps=200 ...]`; under torchrun the
    ranks train one model data-parallel (gloo on CPU, nccl on CUDA). Writes, on rank 0 only,
    DIR/{config.json, metrics.jsonl, log.txt, checkpoint/, results.json}."""
    parser = argparse.ArgumentParser(prog="python -m alignlab.gemma2.train", description=__doc__)
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field, e.g. --set steps=200 (repeatable)",
    )
    parser.add_argument("--model", default="tiny", help="a Gemma2Config preset (default tiny)")
    parser.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Gemma2Config field, e.g. --model-set num_layers=2",
    )
    parser.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (a repeating random sequence) or a .npy token stream",
    )
    parser.add_argument("--val-data", default=None, help="like --data (default: --data)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)  # fmt: skip

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if args.device == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    device = args.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    try:
        from alignlab.gemma2.config import Gemma2Config
        from alignlab.gemma2.model import Gemma2ForCausalLM

        cfg = cfglib.apply_overrides(TrainConfig(), args.set)
        cfglib.validate(cfg)
        model_cfg = cfglib.apply_overrides(Gemma2Config.preset(args.model), args.model_set)
        out = Path(args.out)
        checkpointer = Checkpointer(out)
        if checkpointer.last_step() is not None and not args.resume:
            raise AlignlabError(f"{out} holds a checkpoint; pass --resume or choose another --out.")
        n = max(20_000, 4 * cfg.batch_size * (cfg.seq_len + 1))
        train_tokens = _load_tokens(args.data, model_cfg.vocab_size, n, cfg.seed)
        val_tokens = _load_tokens(args.val_data or args.data, model_cfg.vocab_size, n, cfg.seed)
        torch.manual_seed(cfg.seed)  # the initial weights (DDP then broadcasts rank 0's)
        model = Gemma2ForCausalLM(model_cfg)
        ctx = None
        if rank == 0:
            from alignlab.core.io import atomic_write_json

            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                out / "config.json",
                {"train": cfglib.to_dict(cfg), "model": dataclasses.asdict(model_cfg),
                 "data": args.data, "val_data": args.val_data or args.data, "world_size": world},
            )  # fmt: skip
            ctx = _context(out, cfg, device, args.resume, args.quiet)
        result = train(
            model, cfg, train_tokens, val_tokens, ctx=ctx, device=device,
            checkpointer=checkpointer, resume=args.resume,
        )  # fmt: skip
        if rank == 0:
            from alignlab.core.io import atomic_write_json

            atomic_write_json(out / "results.json", result.to_dict())
            ctx.log(
                f"done: val loss {result.final_val_loss:.4f}, ppl {result.final_val_ppl:.2f}, "
                f"{result.tokens_per_s:,.0f} tokens/s on {world} process(es)"
            )
    except AlignlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
