"""Gemma 2 on a GPU: alignlab against Hugging Face transformers, equivalence first, then speed.

The GPU counterpart of benchmarks/gemma2_speed.py, whose helpers it reuses: the same models
(`build_ours`: every weight redrawn from a fixed seed so that both soft-caps and the (1 + w)
norms act; `build_hf`: HF's Gemma2ForCausalLM holding `to_hf_state_dict(ours)`, lm_head tied),
the same calls (`forward_call`, `Trainer`: forward, `ntp_loss`, backward, AdamW(lr 1e-3);
`generate_call`). Gemma 2 is Gemma Team 2024, arXiv 2408.00118 (paper §2: sliding-window /
global layers, attention soft-cap 50, final soft-cap 30).

Sizes (`--smoke` swaps in tiny ones that only exercise the code paths):
  medium  `preset("medium", sliding_window=128)`: d_model 256, 6 layers, vocab 4096, batch 8 x
          seq 512, as the CPU benchmark.
  2b-l4   `preset("2b", num_layers=4, vocab_size=32768, sliding_window=512)`: Gemma 2 2B's
          width (d_model 2304, 8 heads / 4 KV heads, head_dim 256, GeGLU 9216), 4 layers
          instead of 26 and a 32K vocabulary instead of 256K so that both sides' models and
          AdamW states fit beside each other in a few GB; batch 4 x seq 1024, window 512
          (half the sequence, as the paper's 4096 window is half its 8192 context).
Dtypes: fp32 with TF32 off (matmuls in IEEE fp32), and bf16 with the MODELS CAST to bfloat16
(weights, activations, AdamW state; no autocast), as Gemma 2 checkpoints are run. Both kernels
keep the attention softmax in fp32, and HF's RoPE frequency buffers stay fp32 as when HF
builds a bf16 model itself (a plain `.to(bfloat16)` would round them).

Sides. alignlab: `attn_impl="fast"` (the default blocked kernel). HF (transformers 5.x):
  eager            the reference (and the fp32 reference for every bf16 check);
  flex_attention   set with `model.set_attn_implementation`; HF applies the attention
                   soft-cap in FlexAttention's score_mod and compiles the kernel with
                   torch.compile on first use (the first call's time, compile included, is
                   stored as first_call_s; timings exclude it). On the CPU the compile takes
                   about 30 s and FlexAttention has no backward, so --device cpu runs HF
                   eager only unless --cpu-flex is given (then forward, and training records
                   the NotImplementedError).
  flash_attention_2  only if the flash_attn package imports, only in bf16 (its kernels take
                   fp16/bf16); otherwise skipped with the reason printed and stored.
(HF refuses sdpa for Gemma 2: sdpa has no soft-cap; see gemma2_speed.py.)

1. Forward (no grad, HF use_cache=False) and training step, per size and dtype.
   Checked first, before any timing: max |Δ logits| of alignlab against each HF side, and of
   every side against HF eager in fp32; the first training step's loss on every side and the
   worst per-tensor gradient difference (max |Δ| / max |HF grad|).
   Pass: fp32: |Δ logits| <= 1e-3 (logits up to 30), |Δ loss| <= 1e-4, gradients <= 1e-3.
   bf16: alignlab's max |Δ logits| from the fp32 reference at most 2x HF eager bf16's (+1e-3),
   |Δ loss| <= 0.05 (a loss of about 8-10); the gradient figures are reported, not judged.
2. Greedy generation with the KV cache, batch 4, prompt 64, 128 new tokens, no early stop:
   `alignlab.gemma2.generate.generate(temperature=0, stop_tokens=())` against HF
   `generate(do_sample=False, use_cache=True)` on HF eager (HF's default dynamic cache; no
   auto-compile). Identical tokens required in fp32; in bf16 reported only (a rounding
   difference can flip a near-tie, after which the sequences part).
3. DDP: 2 processes (torch.multiprocessing spawn), both on cuda:0, our model (medium, fast
   attention, fp32) in DistributedDataParallel, per-rank batch 4 x 512, 1 + 10 AdamW steps.
   NCCL is tried first; NCCL refuses two ranks on one GPU, so its error is recorded and gloo
   (which reduces CUDA tensors through the host) runs instead; the backend that ran is
   reported. Checked: the ranks' parameters are bitwise identical, and they match a
   single-process run of the same steps on the concatenated batch (8 x 512) within 1e-4
   (max |Δ| over all parameters, whose scale is 0.05-0.5: the two differ only in the order of
   the gradient reductions). --device cpu uses gloo.

Timing: torch.cuda.synchronize around every call; `--warmup` untimed calls (3) after the
first; the median of `--repeats` (10) timed calls (generation: 5); tokens/s (new tokens for
generation, steps/s for DDP). Beside each speed figure, peak memory from one more call:
torch.cuda.max_memory_allocated after reset_peak_memory_stats, absolute and above what was
allocated before the call (activations, outputs and, for training, gradients; the weights and
AdamW state are before). Ratios are alignlab / HF: tokens/s (> 1: alignlab faster) and peak
memory above the pre-call level (< 1: alignlab smaller).

A wall-clock guard (`--budget-s`, 540) skips whatever would start too late, with a note; the
JSON is rewritten (atomically) after every unit, so a run stopped from outside keeps what it
finished.

    python benchmarks/gemma2_gpu.py --out gpu_gemma2.json          # CUDA, < 10 min on an H100
    python benchmarks/gemma2_gpu.py --device cpu --smoke --threads 1 --out /tmp/g.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib.util
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignlab.core.io import atomic_write_json
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.losses import ntp_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gemma2_speed as cpu  # noqa: E402  (the CPU benchmark: models, calls, Trainer)

SIZES = {
    "medium": dict(preset="medium", overrides=dict(sliding_window=128), batch=8, seq=512),
    "2b-l4": dict(
        preset="2b",
        overrides=dict(num_layers=4, vocab_size=32768, sliding_window=512),
        batch=4,
        seq=1024,
    ),
}
SMOKE_SIZES = {
    "tiny": dict(preset="tiny", overrides=dict(sliding_window=8), batch=2, seq=32),
    "small-l2": dict(
        preset="small", overrides=dict(num_layers=2, sliding_window=16), batch=2, seq=48
    ),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GEN = dict(batch=4, prompt=64, new=128)
SMOKE_GEN = dict(batch=2, prompt=8, new=8)
DDP = dict(size="medium", batch=4, seq=512, steps=10, world=2)
SMOKE_DDP = dict(size="tiny", batch=2, seq=32, steps=2, world=2)

FP32_LOGITS_TOL, FP32_LOSS_TOL, GRAD_RTOL = 1e-3, 1e-4, cpu.GRAD_RTOL
BF16_ERR_FACTOR, BF16_ERR_SLACK, BF16_LOSS_TOL = 2.0, 1e-3, 0.05
DDP_TOL = 1e-4
# Seconds a unit needs at least (compiles included) before the guard lets it start.
NEED_S = {"forward": 45, "train": 60, "generate": 30, "ddp": 90}
HF_IMPLS = {"hf-eager": "eager", "hf-flex": "flex_attention", "hf-fa2": "flash_attention_2"}


# ---- small helpers ------------------------------------------------------------------------


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def error_text(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:400]}"


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def mean_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def size_config(spec: dict) -> Gemma2Config:
    return Gemma2Config.preset(spec["preset"], attn_impl="fast", **spec["overrides"])


def flash_attn_version() -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        import flash_attn

        return getattr(flash_attn, "__version__", "unknown")
    except Exception as e:  # installed but broken (e.g. built for another torch)
        return f"import fails: {error_text(e)}"


def set_fp32_ieee() -> None:
    """fp32 matmuls in full fp32 (TF32 off); Gemma 2 has no convolutions, so cuDNN is left
    alone. torch >= 2.9 has per-backend switches (`fp32_precision`), and setting them beside
    the legacy allow_tf32 flags makes some legacy getters raise, so only one API is used."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False


def precision_info() -> dict:
    return {
        "cuda_matmul_fp32_precision": getattr(torch.backends.cuda.matmul, "fp32_precision", None),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
    except Exception:
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


class Run:
    """The run's settings, clock, notes and result, written after every unit."""

    def __init__(self, args: argparse.Namespace, dev: torch.device):
        self.args, self.dev = args, dev
        self.t0 = time.perf_counter()
        self.sizes = SMOKE_SIZES if args.smoke else SIZES
        if args.sizes:
            self.sizes = {k: self.sizes[k] for k in args.sizes.split(",")}
        self.gen = SMOKE_GEN if args.smoke else GEN
        self.ddp = SMOKE_DDP if args.smoke else DDP
        self.repeats = args.repeats or (2 if args.smoke else 10)
        self.warmup = 1 if args.smoke else args.warmup
        self.gen_repeats = 1 if args.smoke else max(1, self.repeats // 2)
        self.dtypes = [d for d in args.dtypes.split(",") if d]
        self.masters: dict[str, tuple] = {}
        self.result: dict = {"notes": [], "skipped": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def note(self, text: str) -> None:
        if text not in self.result["notes"]:
            self.result["notes"].append(text)
            print(f"note: {text}", flush=True)

    def allow(self, unit: str, kind: str) -> bool:
        left = self.args.budget_s - self.elapsed()
        if left >= NEED_S[kind] * (0.1 if self.args.smoke else 1.0):
            return True
        self.result["skipped"].append(unit)
        print(f"SKIPPED {unit}: {left:.0f} s left of --budget-s {self.args.budget_s:.0f}")
        return False

    def save(self) -> None:
        self.result["wall_s"] = self.elapsed()
        atomic_write_json(self.args.out, self.result)

    def master(self, size: str):
        """(config, alignlab model, HF eager model), fp32 on the CPU, built once per size."""
        if size not in self.masters:
            cfg = size_config(self.sizes[size])
            ours = cpu.build_ours(cfg)
            self.masters[size] = (cfg, ours, cpu.build_hf(ours, "eager"))
        return self.masters[size]

    def hf_sides(self, dtype: str) -> list[str]:
        """The HF attention implementations that can run here, notes for those that cannot."""
        sides = ["hf-eager"]
        on_cpu = self.dev.type != "cuda"
        if on_cpu and not self.args.cpu_flex:
            self.note(
                "HF flex_attention is not run on the CPU: torch.compile takes ~30 s for its "
                "kernel here and FlexAttention has no CPU backward (NotImplementedError); HF "
                "eager stands in (--cpu-flex tries it)"
            )
        else:
            sides.append("hf-flex")
        fa = flash_attn_version()
        if fa is None or fa.startswith("import fails"):
            self.note(f"HF flash_attention_2 skipped: flash_attn {fa or 'is not installed'}")
        elif on_cpu:
            self.note("HF flash_attention_2 skipped: it needs CUDA")
        elif dtype == "fp32":
            self.note("HF flash_attention_2 runs in bf16 only (flash-attn takes fp16/bf16)")
        else:
            sides.append("hf-fa2")
        return sides

    def on_device(self, model, dtype: str, side: str = "ours-fast"):
        """A copy of a CPU master on the device in `dtype`, with `side`'s attention."""
        m = copy.deepcopy(model).to(device=self.dev, dtype=DTYPES[dtype]).eval()
        if cpu.is_hf(m):
            # .to(dtype) also casts HF's RoPE frequency buffers, which HF computes in fp32 even
            # when it builds a bf16 model itself (bf16 frequencies would put angle errors of
            # radians at position 1000): put the fp32 ones back. alignlab has no buffers.
            fp32 = dict(model.named_buffers())
            for name, _ in list(m.named_buffers()):
                if name.endswith("inv_freq"):
                    owner, _, leaf = name.rpartition(".")
                    setattr(m.get_submodule(owner), leaf, fp32[name].to(self.dev))
            if HF_IMPLS[side] != "eager":
                m.set_attn_implementation(HF_IMPLS[side])
            assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
        return m


def measure(fn, run: Run, units: int, repeats: int, warmup: int) -> dict:
    """Median wall time of `repeats` synchronised calls after `warmup` untimed ones, then the
    peak memory of one more call."""
    dev = run.dev
    for _ in range(warmup):
        fn()
    sync(dev)
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        walls.append(time.perf_counter() - t)
    med = statistics.median(walls)
    out = {"per_s": units / med, "s_per_call": med, "s_per_call_min": min(walls)}
    out["s_per_call_repeats"] = walls
    if dev.type == "cuda":
        gc.collect()
        sync(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        sync(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        out.update(
            peak_mib=mib(peak), allocated_before_mib=mib(before), peak_above_mib=mib(peak - before)
        )
    return out


def ratios(res: dict, ours: str, per: str = "per_s") -> dict:
    """alignlab / each HF side: speed and peak memory above the pre-call level."""
    out = {}
    if ours not in res:
        return out
    for side, r in res.items():
        if side == ours or per not in r:
            continue
        out[f"speed_vs_{side}"] = res[ours][per] / r[per]
        if "peak_above_mib" in r and r["peak_above_mib"] > 0:
            out[f"peak_mem_vs_{side}"] = res[ours]["peak_above_mib"] / r["peak_above_mib"]
    return out


def show(title: str, res: dict, unit: str, rat: dict) -> None:
    print(f"  {title}")
    print(f"    {'side':<10s} {unit:>11s} {'ms/call':>9s} {'peak MiB':>9s} {'+MiB':>8s}")
    for side, r in res.items():
        if "per_s" not in r:
            print(f"    {side:<10s} {r.get('error', 'no result')}")
            continue
        pk = f" {r['peak_mib']:9.0f} {r['peak_above_mib']:8.0f}" if "peak_mib" in r else ""
        print(f"    {side:<10s} {r['per_s']:11.0f} {1e3 * r['s_per_call']:9.2f}{pk}")
    if rat:
        print("    alignlab / HF: " + ", ".join(f"{k} {v:.2f}x" for k, v in rat.items()))


# ---- 1a. forward --------------------------------------------------------------------------


def forward_unit(run: Run, size: str, dtype: str, ref: torch.Tensor) -> dict:
    cfg, ours_m, hf_m = run.master(size)
    spec = run.sizes[size]
    ids = cpu.batch_ids(cfg.vocab_size, (spec["batch"], spec["seq"]), cpu.SEED + 1).to(run.dev)
    models, errors, first = {}, {}, {}
    for side in ["ours-fast", *run.hf_sides(dtype)]:
        try:
            models[side] = run.on_device(hf_m if side.startswith("hf") else ours_m, dtype, side)
        except Exception as e:
            errors[side] = error_text(e)
    logits = {}
    with torch.no_grad():
        for side in list(models):
            try:
                t = time.perf_counter()
                logits[side] = cpu.logits_of(models[side], ids)
                sync(run.dev)
                first[side] = time.perf_counter() - t
            except Exception as e:
                errors[side] = error_text(e)
                del models[side]
    o = logits.get("ours-fast")
    hf = [s for s in logits if s.startswith("hf")]
    checks = {
        "ref": "HF eager fp32",
        "ref_logits_absmax": float(ref.abs().max()),
        "ours_vs_hf_max": {s: max_diff(o, logits[s]) for s in hf} if o is not None else {},
        "vs_fp32_ref_max": {s: max_diff(x, ref) for s, x in logits.items()},
        "vs_fp32_ref_mean": {s: mean_diff(x, ref) for s, x in logits.items()},
    }
    if o is None or "hf-eager" not in logits:
        checks["pass"] = False
    elif dtype == "fp32":
        checks["tol"] = FP32_LOGITS_TOL
        checks["pass"] = all(v <= FP32_LOGITS_TOL for v in checks["ours_vs_hf_max"].values())
    else:
        bound = BF16_ERR_FACTOR * checks["vs_fp32_ref_max"]["hf-eager"] + BF16_ERR_SLACK
        checks["tol"] = (
            f"ours vs fp32 ref <= {BF16_ERR_FACTOR} x HF eager bf16's + {BF16_ERR_SLACK}"
        )
        checks["pass"] = checks["vs_fp32_ref_max"]["ours-fast"] <= bound
    del logits, o
    print(
        f"[forward {size} {dtype}] checks: max|Δlogits| ours vs "
        + ", ".join(f"{s} {v:.1e}" for s, v in checks["ours_vs_hf_max"].items())
        + "; vs HF eager fp32: "
        + ", ".join(f"{s} {v:.1e}" for s, v in checks["vs_fp32_ref_max"].items())
        + f" -> {'pass' if checks['pass'] else 'FAIL'}",
        flush=True,
    )
    tokens = spec["batch"] * spec["seq"]
    res = {side: {"error": err} for side, err in errors.items()}
    for side, m in models.items():
        try:
            r = measure(cpu.forward_call(m, ids), run, tokens, run.repeats, run.warmup)
            res[side] = {"first_call_s": first[side], **r}
        except Exception as e:
            res[side] = {"error": error_text(e)}
    del models
    rat = ratios(res, "ours-fast")
    show(f"forward {size} {dtype}", res, "tokens/s", rat)
    return {"batch": spec["batch"], "seq": spec["seq"], "checks": checks, "sides": res,
            "ratios": rat}  # fmt: skip


# ---- 1b. training step --------------------------------------------------------------------


def first_step(tr: cpu.Trainer) -> tuple[float, dict[str, torch.Tensor]]:
    """The first step's loss and gradients (the tensors AdamW then used), then the step."""
    tr.opt.zero_grad(set_to_none=True)
    loss = tr.loss()
    loss.backward()
    grads = {n: p.grad for n, p in tr.model.named_parameters()}
    tr.opt.step()
    return loss.item(), grads


def compare_grads(ours: dict, hf: dict) -> dict:
    rel, worst, absmax = 0.0, "", 0.0
    for name, g in ours.items():
        h = hf[name]  # HF lists the tied lm_head once, as the embedding: the same names
        err = max_diff(g, h)
        r = err / max(float(h.float().abs().max()), 1e-30)
        absmax = max(absmax, err)
        if r >= rel:
            rel, worst = r, name
    return {"grad_max_rel_diff": rel, "grad_worst_param": worst, "grad_max_abs_diff": absmax}


def train_unit(run: Run, size: str, dtype: str) -> dict:
    cfg, ours_m, hf_m = run.master(size)
    spec = run.sizes[size]
    ids = cpu.batch_ids(cfg.vocab_size, (spec["batch"], spec["seq"]), cpu.SEED + 1).to(run.dev)
    tokens = spec["batch"] * spec["seq"]
    ours = cpu.Trainer(run.on_device(ours_m, dtype), ids)
    t = time.perf_counter()
    loss_o, grads_o = first_step(ours)
    first = {"ours-fast": time.perf_counter() - t}
    checks: dict = {"loss": {"ours-fast": loss_o}, "sides": {}}
    res: dict = {}
    for side in run.hf_sides(dtype):
        tr = None
        try:
            tr = cpu.Trainer(run.on_device(hf_m, dtype, side), ids)
            t = time.perf_counter()
            loss_h, grads_h = first_step(tr)
            sync(run.dev)
            first[side] = time.perf_counter() - t
            checks["loss"][side] = loss_h
            c = {"loss_abs_diff": abs(loss_o - loss_h), **compare_grads(grads_o, grads_h)}
            checks["sides"][side] = c
            del grads_h
            res[side] = {"first_call_s": first[side]}
            res[side].update(measure(tr.step, run, tokens, run.repeats, run.warmup))
        except Exception as e:
            res[side] = {"error": error_text(e)}
        del tr
        gc.collect()
        if run.dev.type == "cuda":
            torch.cuda.empty_cache()
    del grads_o
    res["ours-fast"] = {"first_call_s": first["ours-fast"]}
    res["ours-fast"].update(measure(ours.step, run, tokens, run.repeats, run.warmup))
    del ours
    sides = checks["sides"]
    if "hf-eager" not in sides:
        checks["pass"] = False
    elif dtype == "fp32":
        checks["tol"] = {"loss": FP32_LOSS_TOL, "grad_rel": GRAD_RTOL}
        checks["pass"] = all(
            c["loss_abs_diff"] <= FP32_LOSS_TOL and c["grad_max_rel_diff"] <= GRAD_RTOL
            for c in sides.values()
        )
    else:
        checks["tol"] = {"loss": BF16_LOSS_TOL, "grad_rel": "reported, not judged in bf16"}
        checks["pass"] = all(c["loss_abs_diff"] <= BF16_LOSS_TOL for c in sides.values())
    print(
        f"[train {size} {dtype}] checks: first-step loss "
        + ", ".join(f"{s} {v:.6f}" for s, v in checks["loss"].items())
        + "; grads max rel diff "
        + ", ".join(f"{s} {c['grad_max_rel_diff']:.1e}" for s, c in sides.items())
        + f" -> {'pass' if checks['pass'] else 'FAIL'}",
        flush=True,
    )
    res = {"ours-fast": res.pop("ours-fast"), **res}
    rat = ratios(res, "ours-fast")
    show(f"train {size} {dtype}", res, "tokens/s", rat)
    return {"batch": spec["batch"], "seq": spec["seq"], "checks": checks, "sides": res,
            "ratios": rat}  # fmt: skip


# ---- 2. generation ------------------------------------------------------------------------


def generate_unit(run: Run, size: str, dtype: str) -> dict:
    cfg, ours_m, hf_m = run.master(size)
    g = run.gen
    cpu.GEN_NEW = g["new"]  # generate_call reads the new-token count from the CPU benchmark
    prompt = cpu.batch_ids(cfg.vocab_size, (g["batch"], g["prompt"]), cpu.SEED + 2).to(run.dev)
    calls = {
        "ours-fast": cpu.generate_call(run.on_device(ours_m, dtype), prompt),
        "hf-eager": cpu.generate_call(run.on_device(hf_m, dtype, "hf-eager"), prompt),
    }
    out, first = {}, {}
    for side, fn in calls.items():
        t = time.perf_counter()
        out[side] = fn()
        sync(run.dev)
        first[side] = time.perf_counter() - t
    got, want = out["ours-fast"], out["hf-eager"]
    prefix = []
    for x, y in zip(got, want):
        n = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
        prefix.append(n)
    checks = {
        "identical_tokens": got == want,
        "matching_prefix_per_row": prefix,
        "distinct_tokens_per_row": [len(set(r)) for r in got],
        "hf_cache": getattr(calls["hf-eager"], "cache_type", None),
        "required": dtype == "fp32",
    }
    checks["pass"] = checks["identical_tokens"] or dtype != "fp32"
    print(
        f"[generate {size} {dtype}] checks: identical greedy tokens {got == want} "
        f"(matching prefix per row {prefix} of {g['new']}; HF cache {checks['hf_cache']}"
        f"{'' if dtype == 'fp32' else '; bf16: reported, not required'})",
        flush=True,
    )
    units = g["batch"] * g["new"]
    res = {}
    for side, fn in calls.items():
        res[side] = {"first_call_s": first[side]}
        res[side].update(measure(fn, run, units, run.gen_repeats, 1))
    del calls
    rat = ratios(res, "ours-fast")
    show(f"generate {size} {dtype}", res, "new tok/s", rat)
    return {**g, "checks": checks, "sides": res, "ratios": rat}


# ---- 3. DDP -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_batch(cfg: Gemma2Config, d: dict) -> torch.Tensor:
    return cpu.batch_ids(cfg.vocab_size, (d["world"] * d["batch"], d["seq"]), cpu.SEED + 3)


def train_steps(model, ids: torch.Tensor, steps: int, dev: torch.device) -> tuple[list, float]:
    """1 + steps AdamW steps of next-token cross-entropy; losses and the timed steps' seconds."""
    opt = torch.optim.AdamW(
        (model.module if hasattr(model, "module") else model).parameters(), lr=cpu.LR
    )
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ntp_loss(model(ids)[:, :-1], ids[:, 1:])
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    step()  # warm-up: DDP builds its buckets, NCCL / gloo its communicator
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return [float(x) for x in losses], time.perf_counter() - t


def ddp_worker(rank: int, backend: str, port: int, d: dict, spec: dict, dev_type: str,
               threads: int | None, out_dir: str) -> None:  # fmt: skip
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda:0" if dev_type == "cuda" else "cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        set_fp32_ieee()
    dist.init_process_group(
        backend, rank=rank, world_size=d["world"], timeout=datetime.timedelta(seconds=120)
    )
    try:
        cfg = size_config(spec)
        model = cpu.build_ours(cfg).to(dev).train()
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        ids = ddp_batch(cfg, d)[rank * d["batch"] : (rank + 1) * d["batch"]].to(dev)
        losses, seconds = train_steps(ddp, ids, d["steps"], dev)
        params = {n: p.detach().cpu() for n, p in model.named_parameters()}
        torch.save({"params": params, "losses": losses, "seconds": seconds},
                   Path(out_dir) / f"rank{rank}.pt")  # fmt: skip
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_ddp(run: Run, backend: str, out_dir: str, timeout_s: float) -> list[dict]:
    import torch.multiprocessing as mp

    d = run.ddp
    spec = {**SIZES, **SMOKE_SIZES}[d["size"]]
    args = (backend, free_port(), d, spec, run.dev.type, run.args.threads, out_dir)
    ctx = mp.start_processes(ddp_worker, args=args, nprocs=d["world"], join=False,
                             start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):  # raises if a rank failed (and ends the other)
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            raise TimeoutError(f"{backend}: the ranks did not finish within {timeout_s:.0f} s")
    return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(d["world"])]


def ddp_unit(run: Run) -> dict:
    d = run.ddp
    spec = {**SIZES, **SMOKE_SIZES}[d["size"]]
    backends = ["nccl", "gloo"] if run.dev.type == "cuda" else ["gloo"]
    attempts, ranks, backend = {}, None, None
    timeout = max(30.0, min(180.0, run.args.budget_s - run.elapsed() - 20))
    for b in backends:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                t = time.perf_counter()
                # NCCL fails at its first collective when two ranks share a GPU: short leash
                ranks = spawn_ddp(run, b, tmp, min(60.0, timeout) if b == "nccl" else timeout)
                attempts[b] = {"ok": True, "wall_s": time.perf_counter() - t}
                backend = b
                break
            except Exception as e:
                attempts[b] = {"ok": False, "error": error_text(e)}
                print(f"[ddp] backend {b} failed: {attempts[b]['error'][:300]}", flush=True)
                if b == "nccl":
                    run.note(
                        "DDP: NCCL failed with both ranks on one GPU (its error is stored under "
                        "ddp.attempts.nccl); gloo runs instead"
                    )
    out = {"world_size": d["world"], "per_rank_batch": d["batch"], "seq": d["seq"],
           "size": d["size"], "steps_timed": d["steps"], "attempts": attempts,
           "backend": backend, "devices": "both ranks on cuda:0" if run.dev.type == "cuda"
           else "cpu"}  # fmt: skip
    if ranks is None:
        out["checks"] = {"pass": False}
        return out
    # the single-process reference: the same model and steps on the concatenated batch
    cfg = size_config(spec)
    model = cpu.build_ours(cfg).to(run.dev).train()
    ids = ddp_batch(cfg, d).to(run.dev)
    ref_losses, ref_s = train_steps(model, ids, d["steps"], run.dev)
    ref = {n: p.detach().cpu() for n, p in model.named_parameters()}
    del model
    p0, p1 = ranks[0]["params"], ranks[1]["params"]
    ranks_equal = all(torch.equal(p0[n], p1[n]) for n in p0)
    diff = max(max_diff(p0[n], ref[n]) for n in ref)
    num = sum(float((p0[n] - ref[n]).double().pow(2).sum()) for n in ref) ** 0.5
    den = sum(float(ref[n].double().pow(2).sum()) for n in ref) ** 0.5
    ddp_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    seconds = max(r["seconds"] for r in ranks)
    out["checks"] = {
        "ranks_bitwise_equal": ranks_equal,
        "vs_single_process_max_abs": diff,
        "vs_single_process_rel_norm": num / den,
        "tol": DDP_TOL,
        "loss_ddp_mean_of_ranks": ddp_losses,
        "loss_single_process": ref_losses,
        "pass": ranks_equal and diff <= DDP_TOL,
    }
    out["ddp"] = {"steps_per_s": d["steps"] / seconds, "seconds": seconds,
                  "tokens_per_s": d["steps"] * d["world"] * d["batch"] * d["seq"] / seconds}  # fmt: skip
    out["single_process"] = {"steps_per_s": d["steps"] / ref_s, "seconds": ref_s,
                             "tokens_per_s": d["steps"] * ids.numel() / ref_s}  # fmt: skip
    out["ratio_ddp_vs_single_steps"] = (
        out["ddp"]["steps_per_s"] / out["single_process"]["steps_per_s"]
    )
    c = out["checks"]
    print(
        f"[ddp] backend {backend}, {d['world']} ranks ({out['devices']}): ranks identical "
        f"{ranks_equal}; max |Δparam| vs one process on the {d['world']}x{d['batch']} x "
        f"{d['seq']} batch {diff:.1e} (tol {DDP_TOL}) -> {'pass' if c['pass'] else 'FAIL'}; "
        f"{out['ddp']['steps_per_s']:.2f} steps/s (one process on the whole batch: "
        f"{out['single_process']['steps_per_s']:.2f}; ratio {out['ratio_ddp_vs_single_steps']:.2f})",
        flush=True,
    )
    return out


# ---- the run ------------------------------------------------------------------------------


def machine_info(run: Run) -> dict:
    import transformers

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "flash_attn": flash_attn_version(),
        "threads": torch.get_num_threads(),
        "device": str(run.dev),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if run.dev.type == "cuda":
        p = torch.cuda.get_device_properties(run.dev)
        info.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            gpu_memory_gib=p.total_memory / 2**30,
            nccl=nccl_version(),
            **precision_info(),
        )
    return info


def summary(result: dict) -> tuple[dict, bool]:
    flat, ok = {}, True
    for section in ("forward", "train", "generation"):
        for size, per in result.get(section, {}).items():
            for dtype, unit in per.items():
                ok &= bool(unit["checks"]["pass"])
                for k, v in unit["ratios"].items():
                    flat[f"{section}/{size}/{dtype}/{k}"] = v
    if "ddp" in result:
        ok &= bool(result["ddp"]["checks"]["pass"])
        if "ratio_ddp_vs_single_steps" in result["ddp"]:
            flat["ddp/steps_vs_single_process"] = result["ddp"]["ratio_ddp_vs_single_steps"]
    return flat, ok


def main(args: argparse.Namespace) -> int:
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit(
                f"--device {args.device}: CUDA is not available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}); use --device cpu --smoke for a CPU check"
            )
        dev = torch.device("cuda", dev.index or 0)
        torch.cuda.set_device(dev)
        set_fp32_ieee()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("recompile_limit", "cache_size_limit"):  # flex recompiles per shape and dtype
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    import transformers

    transformers.logging.set_verbosity_error()
    run = Run(args, dev)
    sections = set(args.sections.split(","))
    run.result.update(
        machine=machine_info(run),
        settings={
            "smoke": args.smoke,
            "sizes": {k: {**v, "config": size_config(v).to_dict()} for k, v in run.sizes.items()},
            "dtypes": {"fp32": "fp32 weights and activations, TF32 off",
                       "bf16": "models cast to bfloat16 (no autocast), softmax in fp32"},
            "generation": run.gen, "ddp": run.ddp, "repeats": run.repeats,
            "warmup": run.warmup, "generation_repeats": run.gen_repeats,
            "budget_s": args.budget_s, "optimizer": f"AdamW(lr={cpu.LR})",
            "weights": f"embedding N(0, {cpu.EMBED_STD}), projections N(0, {cpu.WEIGHT_STD}), "
            f"norm offsets N(0, {cpu.NORM_STD}), seed {cpu.SEED}",
        },
    )  # fmt: skip
    m = run.result["machine"]
    print(
        f"machine: {m.get('gpu', m['platform'])}; torch {m['torch']} (CUDA {m['torch_cuda']}), "
        f"transformers {m['transformers']}, flash_attn {m['flash_attn']}; {m['threads']} "
        f"threads; sizes {list(run.sizes)}, dtypes {run.dtypes}, repeats {run.repeats}",
        flush=True,
    )

    if "forward" in sections:
        for size in run.sizes:
            ref = None
            for dtype in run.dtypes:
                unit = f"forward/{size}/{dtype}"
                if not run.allow(unit, "forward"):
                    continue
                if ref is None:  # HF eager in fp32: the reference of every forward check
                    ref_model = run.on_device(run.master(size)[2], "fp32", "hf-eager")
                    cfg, spec = run.master(size)[0], run.sizes[size]
                    ids = cpu.batch_ids(cfg.vocab_size, (spec["batch"], spec["seq"]), cpu.SEED + 1)
                    with torch.no_grad():
                        ref = cpu.logits_of(ref_model, ids.to(dev))
                    del ref_model
                r = forward_unit(run, size, dtype, ref)
                run.result.setdefault("forward", {}).setdefault(size, {})[dtype] = r
                run.save()
            del ref
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for section, unit, key in (("train", train_unit, "train"), ("generate", generate_unit, "generation")):  # fmt: skip
        if section not in sections:
            continue
        for size in run.sizes:
            for dtype in run.dtypes:
                if run.allow(f"{section}/{size}/{dtype}", section):
                    r = unit(run, size, dtype)
                    run.result.setdefault(key, {}).setdefault(size, {})[dtype] = r
                    run.save()
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
    run.masters.clear()
    if "ddp" in sections and run.allow("ddp", "ddp"):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        run.result["ddp"] = ddp_unit(run)
        run.save()

    flat, ok = summary(run.result)
    run.result.update(ratios_summary=flat, checks_pass=ok)
    run.save()
    print("\nratios alignlab / HF (speed > 1: alignlab faster; peak_mem < 1: alignlab smaller):")
    for k, v in flat.items():
        print(f"  {k:60s} {v:6.2f}")
    if run.result["skipped"]:
        print(f"skipped for time: {run.result['skipped']}")
    partial = " (of the units that ran)" if run.result["skipped"] else ""
    print(f"checks {'pass' if ok else 'FAIL'}{partial}; wrote {args.out} ({run.elapsed():.0f} s)")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    p.add_argument("--out", type=Path, default=Path("gpu_gemma2.json"), help="JSON result")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: only exercise the code")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock guard, seconds")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (10; smoke 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument(
        "--sizes", default=None, help="comma list (medium, 2b-l4; smoke: tiny, small-l2)"
    )
    p.add_argument("--sections", default="forward,train,generate,ddp", help="comma list")
    p.add_argument("--cpu-flex", action="store_true", help="try HF flex_attention on the CPU")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
