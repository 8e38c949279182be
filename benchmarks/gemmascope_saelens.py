"""Gemma Scope JumpReLU SAE training: alignlab against SAELens' `SAETrainer`, in one run.

Needs sae-lens (the `anchors` extra, in its own venv):

    .venv-anchors/bin/python benchmarks/gemmascope_saelens.py [--quick] [--steps N] [--out PATH]

Everything on the CPU, fp32, `torch.set_num_threads(--threads)` (2), fixed seeds.

1. Training on an identical synthetic stream (notes, comparison 3). `alignlab.gemmascope.
   synthetic`: a known dictionary of `--features` unit-norm directions in R^d_in, each firing
   with a Zipf-like probability (expected L0 `--true-l0`) with half-normal magnitudes. All
   runs see the same batches of `stream(batch, seed)` in the same order, generated once and
   replayed (≈ 430 MB at the defaults; regenerated per run from the seed above 2 GB): the
   first `--scale-batches` estimate the input normaliser (both libraries; a run that needs
   none skips them), the next `--steps` train. Runs:

   (a) SAELens defaults: `JumpReLUTrainingSAEConfig(d_in, d_sae)` as shipped (θ₀ 0.01, ε 0.05,
       l0_coefficient 1, decoder_init_norm 0.1, normalize_activations "none") and
       `SAETrainerConfig`'s (Adam (0.9, 0.999), lr 3e-4 constant, no warmups).
   (b) SAELens "matched" to Gemma Scope (§3.2): Adam (0, 0.999), our lr, our warmup step
       counts (SAELens' lr warmup is linear from lr/W, ours cosine from 0.1 lr), decoder rows
       initialised to unit norm, and its normalisation `expected_average_only_in`
       (E‖x‖ = sqrt(d_in), Anthropic's convention) instead of Gemma Scope's E‖x‖² = 1: inputs
       are then ≈ sqrt(d_in) × ours, so θ₀ and ε are multiplied by sqrt(d_in), and the MSE by
       d_in, so λ is multiplied by d_in (same loss up to a constant factor, which Adam
       ignores). What cannot be matched: SAELens clips the gradient norm at 1.0 (hard-coded in
       `SAETrainer._train_step`), has no unit-norm decoder constraint or parallel-gradient
       removal, and one lr acts on biases and θ whose units are sqrt(d_in) × ours.
   (b') with `--unclipped`: (b) with that clip disabled (torch's clip_grad_norm_ replaced by a
       no-op during the run), to see what the clip alone changes.
   (c) alignlab: `alignlab.gemmascope.train` (Gemma Scope §3.2 exactly; warmups as fractions
       of the run, logged in steps).

   Scaled down (notes, "Scaled-down settings"): d_in 64, d_sae 512, 128 true features with
   expected L0 4, batch 2,048 (Gemma Scope: 4,096), 800 steps (1.6M tokens; `--quick` 150).
   Gemma Scope's settings except: lr 3e-3 instead of 7e-5 (800 steps instead of ~2M; at
   7e-5 little moves in so few steps), λ 1e-2 (in E‖x‖² = 1 units; picked by a short sweep so
   that L0 lands near the truth), and warmups at the paper's fractions of the run (1,000 and
   10,000 of 1,953,125 steps), so 1 and 4 steps here. θ₀ = ε = 0.001 as in the paper.

   Reported on `--eval-batches` held-out batches of the same generator (another seed), each
   SAE on raw activations (SAELens folds its scaling factor in at the end of `fit()`, ours is
   evaluated through its input scale): L0 = E‖f‖₀; FVU = E‖x − x̂‖² / E‖x − E x‖² computed
   directly (a ratio of means, `alignlab.gemmascope.metrics.ReconstructionStats`), MSE; dead
   fraction (never fired on the held-out tokens) and dense fraction (fires on > 10 %);
   dictionary recovery = mean over true features of the max cosine to a learned decoder row
   (signed). Speed: steps/s and tokens/s of the training loop (SAELens' own `fit()`, our
   `train_sae`) with the time spent fetching data subtracted (measured in the iterator).

2. Throughput at d_in 256, d_sae 4096, batch 4096 (`--tp-*`): one training step of our
   `SAETrainer.step` vs SAELens' `SAETrainer.step` (the seam `fit()` calls; both with their
   per-step dead-latent accounting), settings as in (b)/(c), on the same fixed batches.
   Both are profiled first (torch.profiler, CPU, `--profile-steps` steps; top ops by self CPU
   time), then timed interleaved, medians of `--tp-repeats` repeats of `--tp-steps` steps.

   `--device cuda` runs this section on a GPU (both sides on the same device, the fixed
   batches moved there once, timing fenced by torch.cuda.synchronize(), profiles by self
   device time), in `--tp-precision`: `ieee` (fp32, TF32 off; the default and the CPU's
   only fp32 mode), `tf32` (TF32 matmuls, CUDA only) or `bf16` (torch.autocast to bfloat16:
   SAELens through its own `SAETrainerConfig.autocast`, which wraps its forward pass; ours,
   which has no such switch, with `SAETrainer.step` inside the autocast context). A side
   that fails under autocast is skipped for bf16 with the error recorded (ours does on the
   CPU, where its sparse θ-gradient path indexes an fp32 gradient into a bf16 buffer; on a
   GPU it takes the dense path). Also reported: each side's peak memory (on CUDA its
   resident state plus the step's peak allocation over it; on the CPU the process's peak
   RSS during its steps) and, as an equivalence check, FVU and L0 of both SAEs on a
   held-out batch at initialisation and after the same steps on the same batches (the two
   libraries initialise differently and SAELens clips gradients, so these agree in size,
   not to the digit). `--throughput-only` skips section 1.

The machine may be shared: the load average and each timed section's process CPU time per
wall second are recorded (≈ threads when the cores are ours alone).
Writes JSON to `--out` (default docs/img/gemmascope_saelens.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens' fit() progress bar
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from alignlab.gemmascope.metrics import evaluate_reconstruction, mean_max_cosine  # noqa: E402
from alignlab.gemmascope.synthetic import SyntheticActivations, SyntheticConfig  # noqa: E402
from alignlab.gemmascope.train import (  # noqa: E402
    SAETrainConfig,
    SAETrainer,
    estimate_input_scale,
    new_sae,
    train_sae,
)

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("ieee", "tf32", "bf16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (800)")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--d-in", type=int, default=64)
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--features", type=int, default=128, help="true dictionary size")
    p.add_argument("--true-l0", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=3e-3, help="ours and SAELens matched")
    p.add_argument("--l0-coefficient", type=float, default=1e-2, help="λ in E‖x‖²=1 units")
    p.add_argument("--bandwidth", type=float, default=1e-3, help="ε in E‖x‖²=1 units")
    p.add_argument("--threshold-init", type=float, default=1e-3)
    p.add_argument("--lr-warmup-frac", type=float, default=SAETrainConfig.lr_warmup_frac)
    p.add_argument("--l0-warmup-frac", type=float, default=SAETrainConfig.l0_warmup_frac)
    p.add_argument("--scale-batches", type=int, default=16)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tp-d-in", type=int, default=256)
    p.add_argument("--tp-d-sae", type=int, default=4096)
    p.add_argument("--tp-batch", type=int, default=4096)
    p.add_argument("--tp-steps", type=int, default=None, help="timed steps per repeat (4)")
    p.add_argument("--tp-repeats", type=int, default=None, help="(3)")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument(
        "--throughput-only", action="store_true", help="skip the training runs (section 1)"
    )
    p.add_argument(
        "--device", default="cpu", help="the throughput section's device: cpu (default) or cuda"
    )
    p.add_argument(
        "--tp-precision",
        choices=PRECISIONS,
        default="ieee",
        help="throughput: fp32 matmuls (ieee), TF32 matmuls (tf32, CUDA only) or "
        "autocast to bfloat16 (bf16)",
    )
    p.add_argument(
        "--unclipped",
        action="store_true",
        help="also run (b) with SAELens' hard-coded clip_grad_norm_(1.0) disabled",
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "gemmascope_saelens.json"))
    a = p.parse_args(argv)
    if a.steps is None:
        a.steps = 150 if a.quick else 800
    if a.tp_steps is None:
        a.tp_steps = 2 if a.quick else 4
    if a.tp_repeats is None:
        a.tp_repeats = 1 if a.quick else 3
    if a.quick:
        a.eval_batches = min(a.eval_batches, 4)
    if a.tp_precision == "tf32" and torch.device(a.device).type != "cuda":
        p.error("--tp-precision tf32 is a CUDA matmul mode; use --device cuda")
    if a.throughput_only and a.no_throughput:
        p.error("--throughput-only and --no-throughput leave nothing to run")
    return a


# ---------------------------------------------------------------------------------------
# environment


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import sae_lens

    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "sae_lens": sae_lens.__version__,
        "numpy": numpy.__version__,
        "loadavg_start": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Clock:
    """Wall and process CPU time of a section."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0

    @property
    def cpu_per_wall(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else float("nan")


class TimedStream:
    """An iterator that adds up the wall time spent producing its batches."""

    def __init__(self, it):
        self.it, self.seconds, self.n = it, 0.0, 0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t
            self.n += 1


# ---------------------------------------------------------------------------------------
# 1. training on the synthetic stream


def make_generator(a) -> SyntheticActivations:
    return SyntheticActivations(
        SyntheticConfig(d_in=a.d_in, n_features=a.features, l0=a.true_l0, seed=a.seed)
    )


CACHE_LIMIT_BYTES = 2 * 2**30
_cache: list[torch.Tensor] | None = None


def train_stream(gen, a, *, skip_scale_batches: bool) -> TimedStream:
    """The training stream: `scale_batches` + `steps` batches of `gen.stream(batch, seed + 1)`,
    generated once and replayed to every run when they fit in CACHE_LIMIT_BYTES (else
    regenerated per run from the same seed: the same batches either way)."""
    global _cache
    n = a.scale_batches + a.steps
    if _cache is None and n * a.batch * a.d_in * 4 <= CACHE_LIMIT_BYTES:
        _cache = list(gen.stream(a.batch, seed=a.seed + 1, n_batches=n))
    it = iter(_cache) if _cache is not None else gen.stream(a.batch, seed=a.seed + 1)
    if skip_scale_batches:  # keep the training batches identical across runs
        for _ in range(a.scale_batches):
            next(it)
    return TimedStream(it)


def our_config(a) -> SAETrainConfig:
    return SAETrainConfig(
        d_sae=a.d_sae,
        l0_coefficient=a.l0_coefficient,
        lr=a.lr,
        bandwidth=a.bandwidth,
        threshold_init=a.threshold_init,
        lr_warmup_frac=a.lr_warmup_frac,
        l0_warmup_frac=a.l0_warmup_frac,
        dead_window=a.batch * max(1, a.steps // 10),
        init_seed=a.seed,
    )


def run_ours(gen, a) -> tuple[torch.nn.Module, dict]:
    cfg = our_config(a)
    stream = train_stream(gen, a, skip_scale_batches=False)
    log = []

    def on_step(i, m):
        if (i + 1) % max(1, a.steps // 10) == 0:
            log.append({"step": i + 1, "l0": m["l0"], "mse": m["mse"]})

    with Clock() as c:
        sae, trainer = train_sae(
            stream, a.d_in, cfg, a.steps, scale_batches=a.scale_batches, on_step=on_step
        )
    lr_w, l0_w = cfg.warmup_steps(a.steps)
    info = {
        "settings": {
            "lr": cfg.lr,
            "betas": [cfg.adam_beta1, cfg.adam_beta2],
            "l0_coefficient": cfg.l0_coefficient,
            "bandwidth": cfg.bandwidth,
            "threshold_init": cfg.threshold_init,
            "lr_warmup_steps": lr_w,
            "l0_warmup_steps": l0_w,
            "normalisation": "E‖x/C‖² = 1",
            "input_scale_C": sae.input_scale,
            "grad_clip": None,
        },
        "train_log": log,
    }
    return sae, _speed(info, c, stream, a)


def _speed(info, clock, stream, a) -> dict:
    train_s = clock.wall - stream.seconds
    info["timing"] = {
        "wall_s": clock.wall,
        "data_s": stream.seconds,
        "train_s": train_s,
        "cpu_per_wall": clock.cpu_per_wall,
        "steps_per_s": a.steps / train_s,
        "tokens_per_s": a.steps * a.batch / train_s,
    }
    return info


def saelens_trainer_parts(a, d_in, d_sae, *, matched: bool, total_samples: int, batch: int):
    """(JumpReLUTrainingSAE, SAETrainerConfig) for run (a) or (b); see the module docstring."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(a.seed)
    if matched:
        root_d = math.sqrt(d_in)
        lr_w, l0_w = our_config(a).warmup_steps(total_samples // batch)
        sae_cfg = JumpReLUTrainingSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            jumprelu_init_threshold=a.threshold_init * root_d,
            jumprelu_bandwidth=a.bandwidth * root_d,
            l0_coefficient=a.l0_coefficient * d_in,
            l0_warm_up_steps=l0_w,
            decoder_init_norm=1.0,
            normalize_activations="expected_average_only_in",
        )
        tr_cfg = SAETrainerConfig(
            total_training_samples=total_samples,
            train_batch_size_samples=batch,
            lr=a.lr,
            lr_end=a.lr / 10,
            lr_warm_up_steps=lr_w,
            adam_beta1=0.0,
            adam_beta2=0.999,
            n_batches_for_norm_estimate=a.scale_batches,
        )
    else:
        sae_cfg = JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae)
        defaults = SAETrainerConfig(total_training_samples=1, train_batch_size_samples=1)
        tr_cfg = SAETrainerConfig(
            total_training_samples=total_samples,
            train_batch_size_samples=batch,
            lr_end=defaults.lr / 10,  # LanguageModelSAERunnerConfig's default
            n_batches_for_norm_estimate=a.scale_batches,
        )
    return JumpReLUTrainingSAE(sae_cfg), tr_cfg


class _NoGradClip:
    """Disable `torch.nn.utils.clip_grad_norm_` (SAELens calls it with 1.0, hard-coded)."""

    def __enter__(self):
        self.saved = torch.nn.utils.clip_grad_norm_
        torch.nn.utils.clip_grad_norm_ = lambda *args, **kwargs: torch.tensor(0.0)

    def __exit__(self, *exc):
        torch.nn.utils.clip_grad_norm_ = self.saved


def run_saelens(gen, a, *, matched: bool, clip: bool = True) -> tuple[torch.nn.Module, dict]:
    import contextlib

    from sae_lens.training.sae_trainer import SAETrainer as SLTrainer

    sae, tr_cfg = saelens_trainer_parts(
        a, a.d_in, a.d_sae, matched=matched, total_samples=a.steps * a.batch, batch=a.batch
    )
    stream = train_stream(gen, a, skip_scale_batches=not matched)
    trainer = SLTrainer(tr_cfg, sae, data_provider=stream)
    with Clock() as c, contextlib.nullcontext() if clip else _NoGradClip():
        trainer.fit()  # folds the activation scaling factor into the weights at the end
    sc = sae.cfg
    info = {
        "settings": {
            "lr": tr_cfg.lr,
            "lr_scheduler": tr_cfg.lr_scheduler_name,
            "betas": [tr_cfg.adam_beta1, tr_cfg.adam_beta2],
            "l0_coefficient": sc.l0_coefficient,
            "bandwidth": sc.jumprelu_bandwidth,
            "threshold_init": sc.jumprelu_init_threshold,
            "lr_warmup_steps": tr_cfg.lr_warm_up_steps,
            "l0_warmup_steps": sc.l0_warm_up_steps,
            "decoder_init_norm": sc.decoder_init_norm,
            "normalisation": (
                "E‖x‖ = sqrt(d_in) (expected_average_only_in)" if matched else "none"
            ),
            "grad_clip": 1.0 if clip else None,
            "steps_run": trainer.n_training_steps,
        },
    }
    assert trainer.n_training_steps == a.steps, trainer.n_training_steps
    return sae, _speed(info, c, stream, a)


@torch.no_grad()
def evaluate(sae, gen, a) -> dict:
    sae.eval()
    stats = evaluate_reconstruction(
        sae, gen.stream(a.batch, seed=a.seed + 10_000, n_batches=a.eval_batches)
    )
    s = stats.summary()
    rec = mean_max_cosine(sae.W_dec.detach(), gen.D)
    return {
        "l0": s["l0"],
        "fvu": s["fvu"],
        "mse": s["mse"],
        "dead_fraction": s["dead_fraction"],
        "dense_fraction": s["dense_fraction"],
        "mean_max_cos": rec.mean,
        "recovered_0.9": float((rec.per_feature > 0.9).mean()),
        "eval_tokens": s["n_tokens"],
    }


# ---------------------------------------------------------------------------------------
# 2. throughput


def _profile(step, n: int, *, cuda: bool = False) -> list[dict]:
    """Top ops of `n` calls of `step`: by self CPU time, or on CUDA by self device time (the
    kernels' time; CPU-side dispatch overlaps them there)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        if cuda:
            torch.cuda.synchronize()
    ev = prof.key_averages()
    if cuda:
        key, name = (lambda e: e.self_device_time_total), "self_device_ms_per_step"
    else:
        key, name = (lambda e: e.self_cpu_time_total), "self_cpu_ms_per_step"
    total = sum(key(e) for e in ev) or 1.0
    top = sorted(ev, key=key, reverse=True)[:12]
    return [
        {
            "op": e.key,
            "calls_per_step": e.count / n,
            name: key(e) / 1e3 / n,
            "share": key(e) / total,
        }
        for e in top
    ]


def set_matmul_precision(precision: str) -> str | tuple[bool, bool]:
    """Set CUDA fp32 matmuls to IEEE fp32 (`ieee`, also used under `bf16`'s autocast for the
    ops it leaves in fp32) or TF32 (`tf32`); returns the previous setting for
    `restore_matmul_precision`. torch ≥ 2.9 has `fp32_precision`; older ones `allow_tf32`."""
    mode = "tf32" if precision == "tf32" else "ieee"
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        prev = m.fp32_precision
        m.fp32_precision = mode
        return prev
    prev = (m.allow_tf32, torch.backends.cudnn.allow_tf32)
    m.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    return prev


def restore_matmul_precision(prev) -> None:
    if isinstance(prev, str):
        torch.backends.cuda.matmul.fp32_precision = prev
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


class PeakMemory:
    """Peak memory of one side's steps. On CUDA: the side's resident bytes (its parameters,
    gradients, Adam state and buffers, measured as it was built and warmed up) plus the peak
    of `torch.cuda.max_memory_allocated()` over what was allocated when the steps started
    (`reset_peak_memory_stats` first), so neither the other side nor the shared batches count.
    Elsewhere: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs where the
    kernel allows it, else the peak since the process started), which includes everything."""

    def __init__(self, device: torch.device, resident: int = 0):
        self.cuda = device.type == "cuda"
        self.resident = resident

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.reset = _reset_rss_peak()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = self.resident + torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _rss_peak()


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _allocated(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


@torch.no_grad()
def _fvu_l0(sae, x: torch.Tensor) -> dict:
    """FVU and L0 of `sae` on one held-out batch, in fp32 outside autocast."""
    was_training = sae.training
    sae.eval()
    with torch.autocast(x.device.type, enabled=False):
        s = evaluate_reconstruction(sae, [x]).summary()
    sae.train(was_training)
    return {"fvu": s["fvu"], "l0": s["l0"]}


def throughput(a) -> dict:
    """Section 2 on `a.device` in `a.tp_precision`; the CUDA matmul precision is restored."""
    cuda = torch.device(a.device).type == "cuda"
    prev = set_matmul_precision(a.tp_precision) if cuda else None
    try:
        return _throughput(a)
    finally:
        if cuda:
            restore_matmul_precision(prev)


def _throughput(a) -> dict:
    from sae_lens.training.sae_trainer import SAETrainer as SLTrainer

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    precision = a.tp_precision
    bf16 = precision == "bf16"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    d_in, d_sae, batch = a.tp_d_in, a.tp_d_sae, a.tp_batch
    gen = SyntheticActivations(
        SyntheticConfig(d_in=d_in, n_features=2 * d_sae, l0=32.0, seed=a.seed)
    )
    xs = list(gen.stream(batch, seed=a.seed + 2, n_batches=4))
    scale = estimate_input_scale(xs)
    # for the equivalence check: one held-out batch of the same generator
    held = next(iter(gen.stream(batch, seed=a.seed + 3, n_batches=1))).to(dev)
    xs = [x.to(dev) for x in xs]  # the same fixed batches for both sides, moved once
    total_steps = 1000  # only sets the warmup lengths, as in a real run
    skipped: dict[str, str] = {}
    base = _allocated(dev)

    # the training comparison's settings at this width, with the default dead window
    cfg = dataclasses.replace(our_config(a), d_sae=d_sae, dead_window=SAETrainConfig.dead_window)
    ours = SAETrainer(new_sae(d_in, cfg, scale).to(dev), cfg, total_steps)
    built_ours = _allocated(dev)

    a_tp = argparse.Namespace(**{**vars(a), "d_in": d_in, "d_sae": d_sae, "batch": batch})
    sl_sae, sl_cfg = saelens_trainer_parts(
        a_tp, d_in, d_sae, matched=True, total_samples=total_steps * batch, batch=batch
    )
    if cuda or bf16:
        # SAELens' own switches: its trainer's device, and `autocast`, which wraps its
        # forward pass (and firing counts) in torch.autocast(bfloat16), as in its fit()
        sl_cfg = dataclasses.replace(sl_cfg, device=str(dev), autocast=bf16)
        sl_sae.to(dev)
    theirs = SLTrainer(sl_cfg, sl_sae, data_provider=iter(xs))
    # what fit() does before its loop: estimate E‖x‖ → sqrt(d_in)
    theirs.activation_scaler.estimate_scaling_factor(d_in, iter(xs), len(xs))
    theirs.sae.to(sl_cfg.device)
    built_theirs = _allocated(dev)

    init = {
        "ours": _fvu_l0(ours.sae, held),
        "saelens": _fvu_l0(theirs.sae, theirs.activation_scaler(held)),
    }

    k = {"ours": 0, "saelens": 0}

    def step_ours():
        x = xs[k["ours"] % len(xs)]
        k["ours"] += 1
        ours.step(x / scale)

    def step_ours_bf16():  # ours has no autocast switch: the whole step runs under autocast
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            step_ours()

    def step_saelens():  # the body of SAETrainer.fit()'s loop, minus wandb and the pbar
        x = xs[k["saelens"] % len(xs)]
        k["saelens"] += 1
        theirs.maybe_reset_sparsity()
        theirs.step(x)
        theirs.n_training_steps += 1

    steps = {"ours": step_ours_bf16 if bf16 else step_ours, "saelens": step_saelens}
    resident = {}
    for name, f in list(steps.items()):  # warm-up (a failure under autocast skips that side)
        before = _allocated(dev)
        try:
            f()
            sync()
        except Exception as e:  # noqa: BLE001 - recorded and reported, never hidden
            if not bf16:
                raise
            skipped[name] = f"cannot run under bf16 autocast: {type(e).__name__}: {e}"
            print(f"throughput: skipping {name} ({skipped[name]})", flush=True)
            del steps[name]
            continue
        built = built_ours - base if name == "ours" else built_theirs - built_ours
        resident[name] = built + _allocated(dev) - before
    profiles = {}
    for name, f in steps.items():
        try:
            profiles[name] = _profile(f, a.profile_steps, cuda=cuda)
        except Exception as e:  # noqa: BLE001 - e.g. no CUPTI: report, time anyway
            profiles[name] = [{"op": f"profiler failed: {type(e).__name__}: {e}"}]
    times = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    peak = {name: [] for name in steps}
    rss_reset = []
    for _ in range(a.tp_repeats):
        for name, f in steps.items():  # interleaved, so load drifts hit both
            with PeakMemory(dev, resident.get(name, 0)) as m:
                sync()
                with Clock() as c:
                    for _ in range(a.tp_steps):
                        f()
                    sync()
            times[name].append(c.wall / a.tp_steps)
            cpu[name].append(c.cpu_per_wall)
            peak[name].append(m.peak)
            rss_reset.append(getattr(m, "reset", None))
    n_steps = 1 + a.profile_steps + a.tp_repeats * a.tp_steps
    after = {  # a side skipped under bf16 took no step
        name: _fvu_l0(sae, x) if name in steps else None
        for name, sae, x in (
            ("ours", ours.sae, held),
            ("saelens", theirs.sae, theirs.activation_scaler(held)),
        )
    }
    out = {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch": batch,
        "timed_steps_per_repeat": a.tp_steps,
        "repeats": a.tp_repeats,
        "profiles": profiles,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else None,
        "precision": precision,
        "precision_detail": {
            "ieee": "fp32, TF32 off",
            "tf32": "fp32 parameters, TF32 matmuls",
            "bf16": "torch.autocast(bfloat16): ours around SAETrainer.step, SAELens through "
            "SAETrainerConfig.autocast (its forward pass); fp32 parameters and Adam, "
            "IEEE fp32 for the ops autocast leaves in fp32",
        }[precision]
        if cuda or precision != "ieee"
        else "fp32 (CPU)",
        "peak_memory_measure": (
            "resident + CUDA max_memory_allocated over the step's start (per side)"
            if cuda
            else "process peak RSS (VmHWM) during the side's steps, whole process"
        ),
        "skipped": skipped,
        "equivalence": {
            "compared": "FVU and L0 of each side's SAE on one held-out batch (fp32, outside "
            "autocast; SAELens' on its scaled input), at initialisation and after the same "
            f"{n_steps} steps on the same batches (warm-up, profiled and timed steps)",
            "steps_each": n_steps,
            "init": init,
            "after": after,
        },
    }
    if not cuda:  # False: VmHWM could not be reset, so each peak is the process's so far
        out["rss_peak_reset"] = all(rss_reset)
    for name in ("ours", "saelens"):
        if name not in steps:
            out[name] = {"skipped": skipped[name]}
            continue
        med = statistics.median(times[name])
        out[name] = {
            "s_per_step_all": times[name],
            "cpu_per_wall": cpu[name],
            "s_per_step": med,
            "steps_per_s": 1.0 / med,
            "tokens_per_s": batch / med,
            "peak_mem_bytes": max((p for p in peak[name] if p is not None), default=None),
        }
        if cuda:
            out[name]["resident_bytes"] = resident[name]
    out["ratio_ours_over_saelens_steps_per_s"] = (
        out["ours"]["steps_per_s"] / out["saelens"]["steps_per_s"] if not skipped else None
    )
    return out


# ---------------------------------------------------------------------------------------
# report


def fmt(v, nd=3) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def table(results: dict, tp: dict | None) -> str:
    rows = [
        "| run | L0 | FVU | MSE | dead | dense | mean max cos | recovered>0.9 | steps/s | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "saelens_defaults": "(a) SAELens defaults",
        "saelens_matched": "(b) SAELens matched",
        "saelens_matched_noclip": "(b') SAELens matched, no grad clip",
        "alignlab": "(c) alignlab",
    }
    for key, label in names.items():
        if key not in results:
            continue
        r = results[key]
        e, t = r["eval"], r["timing"]
        rows.append(
            f"| {label} | {fmt(e['l0'])} | {fmt(e['fvu'])} | {fmt(e['mse'])} | "
            f"{fmt(e['dead_fraction'])} | {fmt(e['dense_fraction'])} | "
            f"{fmt(e['mean_max_cos'])} | {fmt(e['recovered_0.9'])} | "
            f"{fmt(t['steps_per_s'])} | {fmt(t['tokens_per_s'])} |"
        )
    out = "\n".join(rows) if results else "(training runs skipped)"
    if tp is not None:
        dev = tp.get("device", "cpu")
        out += (
            f"\n\nThroughput, d_in {tp['d_in']}, d_sae {tp['d_sae']}, batch {tp['batch']}"
            f" ({dev}, {tp.get('precision', 'ieee')}):\n\n"
            "| trainer | s/step | steps/s | tokens/s | CPU/wall | peak MiB |\n"
            "|---|---|---|---|---|---|\n"
        )
        for name, label in (("saelens", "SAELens SAETrainer.step"), ("ours", "alignlab")):
            r = tp[name]
            if "skipped" in r:
                out += f"| {label} | skipped: {r['skipped']} | | | | |\n"
                continue
            mem = r.get("peak_mem_bytes")
            out += (
                f"| {label} | {fmt(r['s_per_step'])} | {fmt(r['steps_per_s'])} | "
                f"{fmt(r['tokens_per_s'])} | {fmt(statistics.median(r['cpu_per_wall']), 2)} | "
                f"{fmt(mem / 2**20) if mem is not None else '–'} |\n"
            )
        ratio = tp["ratio_ours_over_saelens_steps_per_s"]
        if ratio is not None:
            out += f"\nratio ours / SAELens steps/s: {ratio:.2f}\n"
        eq = tp.get("equivalence")
        if eq is not None:
            out += f"\nEquivalence ({eq['compared']}):\n\n| trainer | when | FVU | L0 |\n"
            out += "|---|---|---|---|\n"
            for when in ("init", "after"):
                for name in ("saelens", "ours"):
                    v = eq[when][name]
                    if v is None:
                        out += f"| {name} | {when} | skipped | skipped |\n"
                        continue
                    out += f"| {name} | {when} | {fmt(v['fvu'])} | {fmt(v['l0'])} |\n"
        for name in ("saelens", "ours"):
            if name not in tp["profiles"]:
                continue
            rows = tp["profiles"][name]
            by = (
                "self device time"
                if rows and "self_device_ms_per_step" in rows[0]
                else ("self CPU time")
            )
            out += f"\nProfile ({name}), top ops by {by} per step:\n\n"
            out += "| op | calls/step | ms/step | share |\n|---|---|---|---|\n"
            for p in rows[:8]:
                if "share" not in p:  # the profiler failed
                    out += f"| {p['op']} | | | |\n"
                    continue
                ms = p.get("self_cpu_ms_per_step", p.get("self_device_ms_per_step"))
                out += (
                    f"| {p['op']} | {fmt(p['calls_per_step'])} | {fmt(ms)} | {p['share']:.0%} |\n"
                )
    return out


def main(argv=None) -> dict:
    a = parse_args(argv)
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        sys.exit("needs sae-lens: pip install -e '.[anchors]' (in a separate venv, see docstring)")
    torch.set_num_threads(a.threads)
    import warnings

    warnings.filterwarnings("ignore")
    info = machine_info(a.threads)
    print(
        f"# Gemma Scope JumpReLU SAE: alignlab vs SAELens\n\n"
        f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), {info['platform']}\n"
        f"python {info['python']}, torch {info['torch']}, sae-lens {info['sae_lens']}, "
        f"threads {a.threads}, load average {info['loadavg_start']}\n",
        flush=True,
    )
    gen = make_generator(a)
    setup = {
        "d_in": a.d_in,
        "d_sae": a.d_sae,
        "true_features": a.features,
        "true_l0": gen.expected_l0,
        "batch": a.batch,
        "steps": a.steps,
        "tokens": a.steps * a.batch,
        "scale_batches": a.scale_batches,
        "eval_tokens": a.eval_batches * a.batch,
        "seed": a.seed,
    }
    print(f"setup: {json.dumps(setup)}\n", flush=True)
    results = {}
    runs = [
        ("saelens_defaults", lambda: run_saelens(gen, a, matched=False)),
        ("saelens_matched", lambda: run_saelens(gen, a, matched=True)),
        ("alignlab", lambda: run_ours(gen, a)),
    ]
    if a.throughput_only:
        runs = []
    elif a.unclipped:
        runs.insert(
            2, ("saelens_matched_noclip", lambda: run_saelens(gen, a, matched=True, clip=False))
        )
    for key, fn in runs:
        sae, r = fn()
        r["eval"] = evaluate(sae, gen, a)
        results[key] = r
        print(
            f"{key}: {json.dumps(r['eval'])} | {r['timing']['steps_per_s']:.2f} steps/s "
            f"(cpu/wall {r['timing']['cpu_per_wall']:.2f})",
            flush=True,
        )
    tp = None if a.no_throughput else throughput(a)
    info["loadavg_end"] = list(os.getloadavg())
    report = table(results, tp)
    print("\n" + report)
    out = {
        "machine": info,
        "args": vars(a),
        "setup": setup,
        "training": results,
        "throughput": tp,
        "table_markdown": report,
    }
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    from alignlab.core.io import atomic_write_json

    atomic_write_json(path, out)
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
