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

    return {
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


def _profile(step, n: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    top = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return [
        {
            "op": e.key,
            "calls_per_step": e.count / n,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / n,
            "share": e.self_cpu_time_total / total,
        }
        for e in top
    ]


def throughput(a) -> dict:
    from sae_lens.training.sae_trainer import SAETrainer as SLTrainer

    d_in, d_sae, batch = a.tp_d_in, a.tp_d_sae, a.tp_batch
    gen = SyntheticActivations(
        SyntheticConfig(d_in=d_in, n_features=2 * d_sae, l0=32.0, seed=a.seed)
    )
    xs = list(gen.stream(batch, seed=a.seed + 2, n_batches=4))
    scale = estimate_input_scale(xs)
    total_steps = 1000  # only sets the warmup lengths, as in a real run

    # the training comparison's settings at this width, with the default dead window
    cfg = dataclasses.replace(our_config(a), d_sae=d_sae, dead_window=SAETrainConfig.dead_window)
    ours = SAETrainer(new_sae(d_in, cfg, scale), cfg, total_steps)

    a_tp = argparse.Namespace(**{**vars(a), "d_in": d_in, "d_sae": d_sae, "batch": batch})
    sl_sae, sl_cfg = saelens_trainer_parts(
        a_tp, d_in, d_sae, matched=True, total_samples=total_steps * batch, batch=batch
    )
    theirs = SLTrainer(sl_cfg, sl_sae, data_provider=iter(xs))
    # what fit() does before its loop: estimate E‖x‖ → sqrt(d_in)
    theirs.activation_scaler.estimate_scaling_factor(d_in, iter(xs), len(xs))
    theirs.sae.to(sl_cfg.device)

    k = {"ours": 0, "saelens": 0}

    def step_ours():
        x = xs[k["ours"] % len(xs)]
        k["ours"] += 1
        ours.step(x / scale)

    def step_saelens():  # the body of SAETrainer.fit()'s loop, minus wandb and the pbar
        x = xs[k["saelens"] % len(xs)]
        k["saelens"] += 1
        theirs.maybe_reset_sparsity()
        theirs.step(x)
        theirs.n_training_steps += 1

    steps = {"ours": step_ours, "saelens": step_saelens}
    for f in steps.values():  # warm-up
        f()
    profiles = {name: _profile(f, a.profile_steps) for name, f in steps.items()}
    times = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(a.tp_repeats):
        for name, f in steps.items():  # interleaved, so load drifts hit both
            with Clock() as c:
                for _ in range(a.tp_steps):
                    f()
            times[name].append(c.wall / a.tp_steps)
            cpu[name].append(c.cpu_per_wall)
    out = {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch": batch,
        "timed_steps_per_repeat": a.tp_steps,
        "repeats": a.tp_repeats,
        "profiles": profiles,
    }
    for name in steps:
        med = statistics.median(times[name])
        out[name] = {
            "s_per_step_all": times[name],
            "cpu_per_wall": cpu[name],
            "s_per_step": med,
            "steps_per_s": 1.0 / med,
            "tokens_per_s": batch / med,
        }
    out["ratio_ours_over_saelens_steps_per_s"] = (
        out["ours"]["steps_per_s"] / out["saelens"]["steps_per_s"]
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
    out = "\n".join(rows)
    if tp is not None:
        out += (
            f"\n\nThroughput, d_in {tp['d_in']}, d_sae {tp['d_sae']}, batch {tp['batch']}:\n\n"
            "| trainer | s/step | steps/s | tokens/s | CPU/wall |\n|---|---|---|---|---|\n"
        )
        for name, label in (("saelens", "SAELens SAETrainer.step"), ("ours", "alignlab")):
            r = tp[name]
            out += (
                f"| {label} | {fmt(r['s_per_step'])} | {fmt(r['steps_per_s'])} | "
                f"{fmt(r['tokens_per_s'])} | {fmt(statistics.median(r['cpu_per_wall']), 2)} |\n"
            )
        out += f"\nratio ours / SAELens steps/s: {tp['ratio_ours_over_saelens_steps_per_s']:.2f}\n"
        for name in ("saelens", "ours"):
            out += f"\nProfile ({name}), top ops by self CPU time per step:\n\n"
            out += "| op | calls/step | ms/step | share |\n|---|---|---|---|\n"
            for p in tp["profiles"][name][:8]:
                out += (
                    f"| {p['op']} | {fmt(p['calls_per_step'])} | "
                    f"{fmt(p['self_cpu_ms_per_step'])} | {p['share']:.0%} |\n"
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
    if a.unclipped:
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
