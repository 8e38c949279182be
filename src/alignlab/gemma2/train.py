"""Training a Gemma 2 model: next-token prediction or knowledge distillation, one loop.

Both objectives of Gemma 2 (the losses of `alignlab.gemma2.losses`) share one loop here
(nanoGPT-style, top to bottom in `train`):

    sample a global batch of random windows -> (DDP: take this rank's rows) -> forward
    -> loss (`ntp_loss` or `kd_loss`) -> backward -> clip the global grad norm
    -> AdamW step at the scheduled lr (linear warmup, cosine decay to min_lr)
    -> log (train loss, lr, grad norm, tokens/s) -> validate (loss, perplexity)
    -> checkpoint (weights, AdamW state, sampler RNG) every `checkpoint_every` steps.

`train` runs in a context (a run's stage, a unit, or the standalone context of the
command line, `alignlab.gemma2.cli`): metric lines, checkpoints, the log and the progress bar
are the context's.

Determinism: the sampler is a numpy Generator seeded with `TrainConfig.seed` and saved in
every checkpoint; validation uses one fixed set of windows (the stream's first ones); the
optional top-k teacher sampling draws from a generator seeded by (seed, step, row). A run
interrupted and resumed therefore ends with bit-identical weights and losses.

Data parallelism: under `torchrun` (`python -m alignlab.gemma2.cli`) every rank draws the
same global batch and trains on its own contiguous slice of rows inside
`DistributedDataParallel`; the loss is normalised by the global token count, so the averaged
gradient equals the single-process gradient of the same global batch, and the logged losses
are all-reduced. Only rank 0 writes files; the other ranks read the checkpoint to resume.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from alignlab.core import config as cfglib
from alignlab.core.config import ConfigError, param
from alignlab.core.console import Bar
from alignlab.core.context import Context, require_context
from alignlab.core.errors import AlignlabError
from alignlab.core.seeding import torch_generator
from alignlab.gemma2.data import eval_batches, sample_batch
from alignlab.gemma2.losses import (
    IGNORE_INDEX,
    kd_loss,
    kl_divergence,
    ntp_loss,
    subsample_teacher,
    teacher_probs,
)

OBJECTIVES = ("ntp", "kd")


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of one training run; the loop validates them before it starts."""

    objective: str = param("ntp", choices=OBJECTIVES, help="next-token pred. or distillation (KD)")
    steps: int = param(1000, ge=1, help="optimiser updates")
    batch_size: int = param(8, ge=1, help="global batch, in sequences (split across DDP ranks)")
    seq_len: int = param(128, ge=1, help="tokens per sequence")
    lr: float = param(3e-4, gt=0, help="peak learning rate, reached at the end of warmup")
    min_lr_ratio: float = param(0.1, ge=0, le=1, help="cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = param(100, ge=0, help="linear warmup from lr / warmup_steps to lr")
    weight_decay: float = param(0.1, ge=0, help="decoupled (AdamW), matrices only (`param_groups`)")
    betas: tuple[float, float] = param((0.9, 0.95), ge=0, lt=1, help="AdamW's (β1, β2)")
    eps: float = param(1e-8, gt=0, help="AdamW's ε")
    grad_clip: float = param(1.0, ge=0, help="max global L2 norm of the gradient; 0: no clipping")
    kd_temperature: float = param(1.0, gt=0, help="KD temperature of both softmaxes (Gemma 2: 1.0)")
    kd_top_k: int | None = param(None, ge=1, help="Gemma 3 teacher subsample: k ids/pos; null: all")
    log_every: int = param(10, ge=1, help="steps between training-loss metric lines")
    eval_every: int = param(100, ge=1, help="steps between validations")
    eval_batches: int = param(4, ge=1, help="validation windows = eval_batches * batch_size")
    checkpoint_every: int = param(100, ge=0, help="steps between checkpoints; 0: only the last")
    seed: int = param(0, ge=0, help="the batch sampler's seed")

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError("betas", f"must be two numbers, got {list(self.betas)}")


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


def val_perplexity(model: nn.Module, val: np.ndarray, seq_len: int) -> float:
    """Perplexity over a whole validation stream, each token a target exactly once."""
    device = next(model.parameters()).device
    batches = [
        (torch.from_numpy(b[:, :-1]).to(device), torch.from_numpy(b[:, 1:]).to(device))
        for b in eval_batches(val, seq_len, batch_size=16)
    ]
    s = evaluate(model, batches)
    return math.exp(s["nll"] / s["n"])


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


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_data: np.ndarray | BatchFn,
    val_data: np.ndarray | Sequence[tuple[Any, Any]],
    *,
    teacher: nn.Module | None = None,
    ctx: Context | None = None,
    device: str | torch.device | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` (a module mapping (B, T) token ids to (B, T, V) logits) for cfg.steps.

    train_data: a 1-D numpy token stream (random windows are drawn from it), or a function
        (rng, batch_size, seq_len) -> (input_ids, targets) giving a global batch.
    val_data: a token stream (its first eval_batches * batch_size windows, in order, as
        `data.eval_batches` walks it) or a list of fixed (input_ids, targets) batches.
    teacher: the frozen KD teacher (objective "kd"): put in eval mode, never updated. With
        objective "ntp" a teacher is only used to report the validation KL(P_T ‖ P_S).
    ctx: the context trained in (`ctx.stage(name, steps)` of a run, a unit, or
        `RunContext.standalone`): metric lines go to ctx.log_metrics, checkpoints to
        ctx.checkpoint (resumed from when ctx.resume), the progress bar to ctx.bar. A finished
        training leaves a final checkpoint, so resuming it just reloads the weights. None:
        nothing is written or resumed.
    device: where to train (default ctx.device, else "cpu").
    on_step(step, metrics): called after every update (tests use it to interrupt a run).
    Under an initialised torch.distributed process group the model is wrapped in DDP, and only
    rank 0 writes (metric lines, log, checkpoints); the other ranks only read the checkpoint.
    """
    if ctx is not None:
        require_context(ctx)
    device = device if device is not None else (ctx.device if ctx is not None else "cpu")
    rank, world = _dist()
    check_setup(model, cfg, teacher, world)
    writer = ctx if ctx is not None and rank == 0 else None  # who writes files
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
    # the training state, in the core's scheme (checkpoint.save / Checkpoint.restore)
    training = dict(
        modules={"model": model}, optimizers={"adamw": opt}, generators={"sampler": rng}
    )
    start, tokens, curve, train_curve, last_val, last_kl = 0, 0, [], [], math.nan, None
    window_loss, window_steps = 0.0, 0  # the training-loss average of the next log line

    ckpt = ctx.checkpoint.load() if ctx is not None and ctx.resume else None
    if ckpt is not None:
        ckpt.restore(**training)
        s = ckpt.state
        start, tokens = s["step"], s["tokens"]
        curve = [tuple(c) for c in s["curve"]]
        train_curve = [tuple(c) for c in s["train_curve"]]
        last_val, last_kl = s["val_loss"], s["val_kl"]
        window_loss, window_steps = s["window"]  # a resumed log line averages the same steps
        if writer is not None:
            writer.log(f"resuming at step {start}")

    net = model
    if world > 1:  # DDP broadcasts rank 0's weights and averages gradients over ranks
        net = nn.parallel.DistributedDataParallel(model, device_ids=None)
    rows = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)

    def log_eval(step: int) -> None:
        nonlocal last_val, last_kl
        s = evaluate(model, val, teacher)
        nll, kl, n = _all_sum([s["nll"], s["kl"], s["n"]], world, device)
        last_val, last_kl = nll / n, (kl / n if teacher is not None else None)
        curve.append((tokens, math.exp(min(last_val, 700.0))))
        if writer is not None:
            extra = {} if last_kl is None else {"val_kl": last_kl}
            writer.log_metrics(
                step, tokens=tokens, val_loss=last_val, val_ppl=curve[-1][1], **extra
            )

    def save(step: int, finished: bool) -> None:
        if writer is None:
            return
        state = {
            "step": step,
            "tokens": tokens,
            "curve": curve,
            "train_curve": train_curve,
            "val_loss": last_val,
            "val_kl": last_kl,
            "finished": finished,
            "window": [window_loss, window_steps],
        }
        writer.checkpoint.save(step, state=state, **training)

    if start == 0:
        log_eval(0)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    t0, rate_steps = time.perf_counter(), 0  # tokens/s counts only steps timed in this process
    t_start, steps_run = t0, 0
    if writer is not None:
        bar = writer.bar(cfg.steps, f"{writer.name} {cfg.objective}", completed=start)
    else:
        bar = Bar(cfg.steps, "", enabled=False)
    with bar:
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
            status = None
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                rate = rate_steps * tokens_per_step / max(now - t0, 1e-9)
                train_curve.append((done, window_loss / window_steps))
                if writer is not None:
                    writer.log_metrics(
                        done,
                        tokens=tokens,
                        train_loss=window_loss / window_steps,
                        lr=lr,
                        grad_norm=float(grad_norm),
                        tokens_per_s=rate,
                    )
                status = f"{rate:,.0f} tok/s  loss {window_loss / window_steps:.3f}"
                t0, rate_steps, window_loss, window_steps = now, 0, 0.0, 0
            bar.advance(1, status)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                log_eval(done)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                save(done, finished=False)
            if on_step is not None:
                on_step(done, {"train_loss": loss, "lr": lr, "grad_norm": float(grad_norm)})
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
        subsample_teacher(
            p, cfg.kd_top_k, torch_generator(cfg.seed, step, first_row + i, device=x.device)
        )
        for i, p in enumerate(probs)
    ]
    return torch.stack(rows)


def _grad_norm(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
