"""Gemma 2 on CPU: alignlab against Hugging Face transformers, speed and memory, in one run.

Model: `Gemma2Config.preset("medium", sliding_window=128)` (d_model 256, 6 layers, 4 heads /
2 KV heads, head_dim 64, GeGLU 1024, vocab 4096), fp32. Every weight is redrawn from a fixed
seed, the (tied) embedding N(0, 0.05), the projections N(0, 0.1) and the RMSNorm offsets
N(0, 0.5) (HF zeroes them), in the spirit of tests/gemma2/test_gemma2_hf.py: large enough that
both soft-caps and the (1 + w) norms act, and that greedy generation does not collapse onto one
repeated token, so the equivalence checks mean something. The values do not change the cost.
HF's model is `AutoModelForCausalLM.from_config(to_hf_config(cfg))` holding
`to_hf_state_dict(ours)`: the same weights, lm_head tied to the embedding.

1. Forward, no grad, batch 8 x seq 512 (every layer's mask matters: window 128 < 512):
   alignlab "fast" (the default kernel), alignlab "eager" (the op-for-op reference), HF eager,
   HF sdpa. HF is called with use_cache=False (a scoring pass; no cache is built). HF 5.24
   refuses sdpa for Gemma 2 twice over: loading with attn_implementation="sdpa" raises
   ValueError (`_supports_sdpa = False`), and forcing it after loading (config.
   _attn_implementation = "sdpa") raises ValueError in the forward pass (sdpa has no soft-cap).
   Both errors are recorded, and forced sdpa is timed on a DIFFERENT model instead, the same
   weights with the attention soft-cap removed (final soft-cap kept), next to alignlab fast
   and HF eager on that same variant.
   Checked first: max |logits difference| of each alignlab kernel vs HF eager (and, on the
   variant, vs HF sdpa and HF eager), and how far the variant is from the real model.
2. Training step, batch 8 x seq 512: forward, next-token cross-entropy
   (`alignlab.gemma2.losses.ntp_loss` on both sides), backward, AdamW(lr 1e-3) step; alignlab
   fast vs HF eager, fresh copies of the same weights. Checked first: the first step's losses
   and every parameter's gradient agree (max |diff| / max |HF grad|, per tensor).
3. Greedy generation with a KV cache, batch 4, prompt 64, 128 new tokens, no early stop:
   `alignlab.gemma2.generate.generate(temperature=0, stop_tokens=())` vs HF
   `generate(do_sample=False, use_cache=True, eos_token_id=None)`. Checked: identical tokens.
   Tokens/s counts new tokens (prefill included in the time).

Timing: one call per measurement (a forward here takes seconds), after a warm-up call; the
sides are interleaved within each repeat so drifts in machine load hit them alike; medians of
`--repeats` (3; 1 with --quick) are reported (2 * repeats + 1 for the cheaper generation
calls), and ratios are of medians. Each call also records its CPU use (process CPU seconds,
all threads, per wall second: about `--threads` on a quiet machine). On this 2-core machine,
another process running 2 busy threads cuts it to about 1.0 and changes the ratios: alignlab's
fast kernel (many small parallel ops) slowed about 8x and HF eager about 3x in our test. So
calls below 0.75 CPU per thread are listed, with a warning, under "contention" in the JSON.

Peak memory, each side in a fresh subprocess (nothing else built there; `--threads` the same):
  - RSS delta (Linux): writing "5" to /proc/self/clear_refs resets the process's peak RSS
    (VmHWM) to its current RSS; we read VmRSS, reset, run one call, read VmHWM. The delta is
    the extra resident memory the call needed, its output included. "cold" is the first call
    in the process (allocator pools empty, AdamW state created for training); "warm" the
    second (glibc may reuse memory the first call freed, so warm can be lower).
  - allocator peak: a third call under torch.profiler(profile_memory=True); the running sum of
    its allocation / free events (bytes) peaks at the largest amount of tensor memory live at
    once above what was live before the call: allocator-level, independent of malloc caching.
  Not getrusage().ru_maxrss: it cannot be reset, and on Linux a child started by fork + exec
  inherits its parent's peak, so every worker here would report this process's 3.5 GB.
The machine is shared; its load average at start and end is recorded.

Usage: python benchmarks/gemma2_speed.py [--quick] [--threads N] [--repeats N]
Writes docs/img/gemma2_benchmark.json. Needs transformers (the [hf] extra).
"""

import argparse
import gc
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from alignlab.core.io import atomic_write_json
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.generate import generate
from alignlab.gemma2.hf import to_hf_config, to_hf_state_dict
from alignlab.gemma2.losses import ntp_loss
from alignlab.gemma2.model import Gemma2ForCausalLM

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img" / "gemma2_benchmark.json"
PRESET, WINDOW = "medium", 128
BATCH, SEQ = 8, 512
GEN_BATCH, GEN_PROMPT, GEN_NEW = 4, 64, 128
SEED, EMBED_STD, WEIGHT_STD, NORM_STD, LR = 0, 0.05, 0.1, 0.5, 1e-3
LOGITS_TOL, GRAD_RTOL = 1e-4, 1e-3
CONTENDED_CPU_USE = 0.75  # per thread: a timed call below it shared its cores with other work

# side -> (label, alignlab attn_impl or HF attn_implementation, attention soft-cap kept?)
SIDES = {
    "ours-fast": ("alignlab fast (default)", "fast", True),
    "ours-eager": ("alignlab eager (reference)", "eager", True),
    "hf-eager": ("HF eager", "eager", True),
    "hf-sdpa": ("HF sdpa", "sdpa", True),
    "ours-fast-nocap": ("alignlab fast, no attn cap", "fast", False),
    "hf-eager-nocap": ("HF eager, no attn cap", "eager", False),
    "hf-sdpa-nocap": ("HF sdpa, no attn cap", "sdpa", False),
}
MEMORY_SIDES = {
    "forward": ["ours-fast", "ours-eager", "hf-eager", "hf-sdpa-nocap"],
    "train": ["ours-fast", "hf-eager"],
}


# ---- models and calls ---------------------------------------------------------------------


def config(softcap: bool = True, impl: str = "fast") -> Gemma2Config:
    overrides = {"sliding_window": WINDOW, "attn_impl": impl}
    if not softcap:
        overrides["attn_logit_softcap"] = None
    return Gemma2Config.preset(PRESET, **overrides)


def build_ours(cfg: Gemma2Config) -> Gemma2ForCausalLM:
    """The preset's model with every weight redrawn from the fixed seed (same for any cfg)."""
    torch.manual_seed(SEED)
    model = Gemma2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = NORM_STD if "norm" in name else EMBED_STD if "embed" in name else WEIGHT_STD
            p.normal_(0, std)
    return model.eval()


def hf_config(ours: Gemma2ForCausalLM):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.Gemma2Config.from_dict(to_hf_config(ours.config))


def build_hf(ours: Gemma2ForCausalLM, impl: str):
    """HF's Gemma2ForCausalLM with `ours`'s config and weights and the given attention.

    HF 5.24 refuses to load Gemma 2 with sdpa (`_supports_sdpa = False`), so sdpa is forced
    after loading, as tests/gemma2/test_gemma2_hf.py does: the forward pass then runs HF's
    shared sdpa kernel, which raises ValueError when the attention soft-cap is set.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(hf_config(ours), attn_implementation="eager")
    model.config._attn_implementation = impl
    missing, unexpected = model.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert list(missing) == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.eval()


def build_side(side: str):
    _, impl, softcap = SIDES[side]
    if side.startswith("ours"):
        return build_ours(config(softcap, impl))
    ours = build_ours(config(softcap))
    model = build_hf(ours, impl)
    del ours
    return model


def is_hf(model) -> bool:
    return not isinstance(model, Gemma2ForCausalLM)


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=False).logits if is_hf(model) else model(ids)


def batch_ids(vocab: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Token ids that avoid pad / eos / bos (0, 1, 2)."""
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def forward_call(model, ids: torch.Tensor):
    def run():
        with torch.no_grad():
            return logits_of(model, ids)

    return run


class Trainer:
    """One training step: forward, next-token cross-entropy, backward, AdamW."""

    def __init__(self, model, ids: torch.Tensor):
        self.model = model.train()
        self.ids = ids
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR)

    def loss(self) -> torch.Tensor:
        return ntp_loss(logits_of(self.model, self.ids)[:, :-1], self.ids[:, 1:])

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return loss.item()


def generate_call(model, prompt: torch.Tensor):
    cfg_pad = model.config.pad_token_id

    def run() -> list[list[int]]:
        if not is_hf(model):
            return generate(model, prompt, GEN_NEW, temperature=0, stop_tokens=())
        with torch.no_grad():
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=GEN_NEW,
                do_sample=False,
                use_cache=True,
                eos_token_id=None,
                pad_token_id=cfg_pad,
                return_dict_in_generate=True,
            )
        run.cache_type = type(out.past_key_values).__name__
        return out.sequences[:, prompt.shape[1] :].tolist()

    return run


# ---- checks -------------------------------------------------------------------------------


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def first_step_check(ours: Trainer, hf: Trainer) -> dict:
    """Both models hold the same weights: the first step's losses and gradients agree."""
    for t in (ours, hf):
        t.opt.zero_grad(set_to_none=True)
    loss_o, loss_h = ours.loss(), hf.loss()
    loss_o.backward()
    loss_h.backward()
    hf_params = dict(hf.model.named_parameters())  # the tied lm_head is listed once, as embed
    rel, worst, absmax = 0.0, "", 0.0
    for name, p in ours.model.named_parameters():
        g_o, g_h = p.grad, hf_params[name].grad
        err = max_diff(g_o, g_h)
        r = err / max(float(g_h.abs().max()), 1e-30)
        absmax = max(absmax, err)
        if r >= rel:
            rel, worst = r, name
    for t in (ours, hf):
        t.opt.step()
    return {
        "loss_alignlab": loss_o.item(),
        "loss_hf": loss_h.item(),
        "loss_abs_diff": abs(loss_o.item() - loss_h.item()),
        "grad_max_rel_diff": rel,
        "grad_max_rel_diff_param": worst,
        "grad_max_abs_diff": absmax,
        "grad_rtol": GRAD_RTOL,
        "pass": rel <= GRAD_RTOL,
    }


# ---- timing -------------------------------------------------------------------------------


def timed(fn) -> tuple[float, float]:
    """Wall seconds of one call, and the CPU seconds (all threads) it used per wall second."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - t0
    return wall, (time.process_time() - c0) / wall


def interleaved(calls: dict, repeats: int, warmup: int = 1) -> dict[str, list[tuple]]:
    """(wall s, CPU use) per call of each fn, the sides interleaved within each repeat."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[tuple]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            gc.collect()
            times[name].append(timed(fn))
    return times


def summary(times: list[tuple[float, float]], units: int) -> dict:
    walls, cpu = [t for t, _ in times], [u for _, u in times]
    med = statistics.median(walls)
    return {
        "per_s": units / med,
        "s_per_call": med,
        "s_per_call_min": min(walls),
        "s_per_call_repeats": walls,
        "cpu_use_repeats": cpu,  # CPU s / wall s of this process; about `threads` when quiet
    }


# ---- peak memory, in a fresh process per side ---------------------------------------------


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in KiB (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def _rss_delta_mib(fn) -> float | None:
    """Peak RSS during fn() above RSS before it; None where the peak cannot be reset."""
    gc.collect()
    try:
        before = _proc_status()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    fn()
    return (_proc_status()["VmHWM"] - before) / 1024


def _allocator_peak_mib(fn) -> float:
    """Largest live tensor memory during fn() above the level before it (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = pathlib.Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    mem = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    live = peak = 0
    for e in mem:
        live += e["args"]["Bytes"]  # negative for a free
        peak = max(peak, live)
    return peak / 2**20


def memory_worker(task: str, side: str) -> dict:
    model = build_side(side)
    ids = batch_ids(model.config.vocab_size, (BATCH, SEQ), SEED + 1)
    fn = forward_call(model, ids) if task == "forward" else Trainer(model, ids).step
    gc.collect()
    rss_model = _proc_status().get("VmRSS", 0) / 1024
    cold = _rss_delta_mib(fn)
    warm = _rss_delta_mib(fn)
    alloc = _allocator_peak_mib(fn)
    return {
        "rss_before_mib": rss_model,
        "rss_delta_cold_mib": cold,
        "rss_delta_warm_mib": warm,
        "allocator_peak_mib": alloc,
    }


def measure_memory(task: str, side: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, side, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory worker {task} {side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the run ------------------------------------------------------------------------------


def fmt_mem(m: dict | None) -> str:
    if m is None:
        return f"{'':>10s} {'':>10s} {'':>10s}"

    def f(x):
        return f"{x:10.1f}" if x is not None else f"{'n/a':>10s}"

    return f"{f(m['rss_delta_cold_mib'])} {f(m['rss_delta_warm_mib'])} {f(m['allocator_peak_mib'])}"


def main(quick: bool, threads: int, repeats: int | None) -> dict:
    wall0 = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(threads)
    repeats = repeats or (1 if quick else 3)
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_start": load_start,
    }
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, load average "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; python "
        f"{machine['python']}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; {threads} threads, fp32"
    )
    cfg = config()
    vocab = cfg.vocab_size
    ids = batch_ids(vocab, (BATCH, SEQ), SEED + 1)
    tokens = BATCH * SEQ

    # -- 1. forward: checks, then timings --------------------------------------------------
    models = {side: build_side(side) for side in SIDES if side != "hf-sdpa"}
    models["hf-sdpa"] = build_hf(models["ours-fast"], "sdpa")
    with torch.no_grad():
        ref = logits_of(models["hf-eager"], ids)
        ref_nocap = logits_of(models["hf-eager-nocap"], ids)
        sdpa_nocap = logits_of(models["hf-sdpa-nocap"], ids)
        ours_nocap = logits_of(models["ours-fast-nocap"], ids)
        fwd_checks = {
            "tol": LOGITS_TOL,
            "hf_logits_absmax": float(ref.abs().max()),
            "fast_vs_hf_eager": max_diff(logits_of(models["ours-fast"], ids), ref),
            "eager_vs_hf_eager": max_diff(logits_of(models["ours-eager"], ids), ref),
            "nocap_fast_vs_hf_sdpa_nocap": max_diff(ours_nocap, sdpa_nocap),
            "nocap_fast_vs_hf_eager_nocap": max_diff(ours_nocap, ref_nocap),
            "nocap_variant_vs_real_model": max_diff(sdpa_nocap, ref),
        }
        try:
            logits_of(models["hf-sdpa"], ids)
            sdpa_error = None
        except ValueError as e:
            sdpa_error = f"ValueError: {e}"
    try:
        AutoModelForCausalLM.from_config(hf_config(models["ours-fast"]), attn_implementation="sdpa")
        sdpa_load_error = None
    except ValueError as e:
        sdpa_load_error = f"ValueError: {e}"
    del models["hf-sdpa"]
    fwd_checks["pass"] = all(
        fwd_checks[k] <= LOGITS_TOL
        for k in (
            "fast_vs_hf_eager",
            "eager_vs_hf_eager",
            "nocap_fast_vs_hf_sdpa_nocap",
            "nocap_fast_vs_hf_eager_nocap",
        )
    )
    print(
        f"checks, forward (max |Δlogits|, |logits| up to {fwd_checks['hf_logits_absmax']:.1f}): "
        f"alignlab fast vs HF eager {fwd_checks['fast_vs_hf_eager']:.1e}, alignlab eager vs HF "
        f"eager {fwd_checks['eager_vs_hf_eager']:.1e}; without the attention soft-cap: alignlab "
        f"fast vs HF sdpa {fwd_checks['nocap_fast_vs_hf_sdpa_nocap']:.1e}, vs HF eager "
        f"{fwd_checks['nocap_fast_vs_hf_eager_nocap']:.1e}; that variant differs from Gemma 2 "
        f"by {fwd_checks['nocap_variant_vs_real_model']:.2f}"
    )
    print(f"HF sdpa, loading Gemma 2 with attn_implementation='sdpa': {sdpa_load_error or 'ok'}")
    print(f"HF sdpa, forced after loading, forward with soft-cap 50: {sdpa_error or 'ran'}")
    fwd_times = interleaved({s: forward_call(m, ids) for s, m in models.items()}, repeats)
    forward = {s: {"label": SIDES[s][0], **summary(t, tokens)} for s, t in fwd_times.items()}

    # -- 3. generation (eval-mode models, before training changes anything) --------------
    prompt = batch_ids(vocab, (GEN_BATCH, GEN_PROMPT), SEED + 2)
    gen_calls = {
        "ours-fast": generate_call(models["ours-fast"], prompt),
        "hf-eager": generate_call(models["hf-eager"], prompt),
    }
    got, want = gen_calls["ours-fast"](), gen_calls["hf-eager"]()
    first_diff = next(
        (
            (b, t)
            for b, (x, y) in enumerate(zip(got, want))
            for t, (u, v) in enumerate(zip(x, y))
            if u != v
        ),
        None,
    )
    gen_checks = {
        "identical_tokens": got == want,
        "first_difference_row_step": first_diff,
        "new_tokens_per_row": [len(r) for r in got],
        "distinct_tokens_per_row": [len(set(r)) for r in got],
        "hf_cache": getattr(gen_calls["hf-eager"], "cache_type", None),
    }
    gen_checks["pass"] = gen_checks["identical_tokens"]
    print(
        f"checks, generation: identical greedy tokens: {got == want} "
        f"({GEN_BATCH} x {GEN_NEW}; HF cache {gen_checks['hf_cache']})"
    )
    gen_repeats = 2 * repeats + 1  # a call takes seconds: more repeats, cheaply
    gen_times = interleaved(gen_calls, gen_repeats)
    generation = {s: summary(t, GEN_BATCH * GEN_NEW) for s, t in gen_times.items()}
    del models

    # -- 2. training step: fresh copies of the same weights --------------------------------
    ours_t = Trainer(build_ours(config()), ids)
    hf_t = Trainer(build_hf(build_ours(config()), "eager"), ids)
    train_checks = first_step_check(ours_t, hf_t)
    print(
        f"checks, training: first-step loss {train_checks['loss_alignlab']:.6f} vs "
        f"{train_checks['loss_hf']:.6f}; gradients max rel diff "
        f"{train_checks['grad_max_rel_diff']:.1e} ({train_checks['grad_max_rel_diff_param']})"
    )
    train_times = interleaved({"ours-fast": ours_t.step, "hf-eager": hf_t.step}, repeats)
    train = {s: summary(t, tokens) for s, t in train_times.items()}
    del ours_t, hf_t
    gc.collect()

    # -- peak memory, one fresh process per side -------------------------------------------
    memory = {
        task: {side: measure_memory(task, side, threads) for side in sides}
        for task, sides in MEMORY_SIDES.items()
    }

    # -- report ---------------------------------------------------------------------------
    base = forward["hf-eager"]["per_s"]
    base_nocap = forward["hf-eager-nocap"]["per_s"]
    for s, r in forward.items():
        r["ratio_vs_hf_eager"] = r["per_s"] / (base if SIDES[s][2] else base_nocap)
        r["memory"] = memory["forward"].get(s)
    for s, r in train.items():
        r["memory"] = memory["train"].get(s)
    ratios = {
        "forward_fast_vs_hf_eager": forward["ours-fast"]["ratio_vs_hf_eager"],
        "forward_eager_vs_hf_eager": forward["ours-eager"]["ratio_vs_hf_eager"],
        "forward_nocap_fast_vs_hf_sdpa_nocap": forward["ours-fast-nocap"]["per_s"]
        / forward["hf-sdpa-nocap"]["per_s"],
        "train_vs_hf_eager": train["ours-fast"]["per_s"] / train["hf-eager"]["per_s"],
        "generate_vs_hf": generation["ours-fast"]["per_s"] / generation["hf-eager"]["per_s"],
    }

    head = f"{'':30s} {'tokens/s':>9s} {'s/call':>7s} {'ratio':>6s} {'CPU':>4s}"
    mem_head = f"{'RSS Δ cold':>10s} {'RSS Δ warm':>10s} {'alloc peak':>10s}"
    print(
        f"\n1. forward, no grad: batch {BATCH} x seq {SEQ} = {tokens} tokens, window {WINDOW}, "
        f"median of {repeats}; ratio = tokens/s over HF eager on the same model; memory in MiB"
    )
    print(f"{head} {mem_head}")

    def row(name: str, r: dict, ratio: float, mem: dict | None = None, show_mem=True) -> str:
        cpu = statistics.median(r["cpu_use_repeats"])
        line = f"{name:30s} {r['per_s']:9.0f} {r['s_per_call']:7.3f} {ratio:5.2f}x {cpu:4.1f}"
        return f"{line} {fmt_mem(mem)}" if show_mem else line

    for s in ("ours-fast", "ours-eager", "hf-eager"):
        print(row(SIDES[s][0], forward[s], forward[s]["ratio_vs_hf_eager"], forward[s]["memory"]))
    print(f"{'HF sdpa':30s} refused (ValueError at load; forced: ValueError, softcap)")
    print("-- attention soft-cap removed: NOT Gemma 2, a different model (same weights) --")
    for s in ("ours-fast-nocap", "hf-eager-nocap", "hf-sdpa-nocap"):
        print(row(SIDES[s][0], forward[s], forward[s]["ratio_vs_hf_eager"], forward[s]["memory"]))
    print(
        f"alignlab fast / HF sdpa on the no-cap variant: "
        f"{ratios['forward_nocap_fast_vs_hf_sdpa_nocap']:.2f}x"
    )
    print(
        f"\n2. training step (forward + cross-entropy + backward + AdamW), batch {BATCH} x seq "
        f"{SEQ}, median of {repeats}"
    )
    print(f"{head} {mem_head}")
    t_ours, t_hf = train["ours-fast"], train["hf-eager"]
    print(row("alignlab fast", t_ours, ratios["train_vs_hf_eager"], t_ours["memory"]))
    print(row("HF eager", t_hf, 1.0, t_hf["memory"]))
    print(
        f"\n3. greedy generation with KV cache: batch {GEN_BATCH}, prompt {GEN_PROMPT}, {GEN_NEW} "
        f"new tokens (tokens/s = new tokens), median of {gen_repeats}"
    )
    print(head)
    print(row("alignlab generate", generation["ours-fast"], ratios["generate_vs_hf"], None, False))
    print(row("HF generate (eager)", generation["hf-eager"], 1.0, None, False))

    checks_pass = fwd_checks["pass"] and train_checks["pass"] and gen_checks["pass"]
    machine["load_avg_end"] = os.getloadavg()
    # A call that got much less CPU than its threads could use shared the cores with other work:
    # then ratios mislead (alignlab's fast kernel, many small parallel ops, suffers most).
    floor = CONTENDED_CPU_USE * threads
    low = {
        f"{section}/{side}": round(min(r["cpu_use_repeats"]), 2)
        for section, rows in (("forward", forward), ("train", train), ("generation", generation))
        for side, r in rows.items()
        if min(r["cpu_use_repeats"]) < floor
    }
    contention = {"cpu_use_floor": floor, "contended_calls": low, "contended": bool(low)}
    if low:
        print(
            f"\nWARNING: some timed calls got less than {floor:.1f} CPU s per wall s (other work "
            f"on the cores): {low}. Ratios are unreliable; rerun on a quiet machine."
        )
    result = {
        "quick": quick,
        "machine": machine,
        "sizes": {
            "config": cfg.to_dict(),
            "batch": BATCH,
            "seq_len": SEQ,
            "generation": {"batch": GEN_BATCH, "prompt": GEN_PROMPT, "new_tokens": GEN_NEW},
            "weights": f"embedding N(0, {EMBED_STD}), projections N(0, {WEIGHT_STD}), norm "
            f"offsets N(0, {NORM_STD}), seed {SEED}",
            "optimizer": f"AdamW(lr={LR})",
            "repeats": repeats,
            "generation_repeats": gen_repeats,
            "warmup": 1,
        },
        "memory_method": (
            "each side in a fresh subprocess. rss_delta: VmHWM after one call minus VmRSS "
            "before it, VmHWM reset by writing 5 to /proc/self/clear_refs (cold = first call "
            "in the process, warm = second). allocator_peak: peak of the running sum of "
            "torch.profiler(profile_memory=True) allocation/free events over a third call. "
            "MiB; outputs (logits) included."
        ),
        "checks": {
            "forward": fwd_checks,
            "train": train_checks,
            "generation": gen_checks,
            "all_pass": checks_pass,
        },
        "hf_sdpa_gemma2": {"load": sdpa_load_error, "forced_forward": sdpa_error},
        "forward": forward,
        "train": train,
        "generation": generation,
        "ratios": ratios,
        "contention": contention,
        "wall_s": time.perf_counter() - wall0,
    }
    atomic_write_json(OUT, result)
    print(
        f"\nload average at end {machine['load_avg_end'][0]:.2f}; checks "
        f"{'pass' if checks_pass else 'FAIL'}; wrote {OUT} ({result['wall_s']:.0f} s)"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, not three")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(memory_worker(*args.worker)))
    else:
        result = main(args.quick, args.threads, args.repeats)
        if not result["checks"]["all_pass"]:
            sys.exit(1)
