"""KTO training steps: alignlab.feedback_gaming.kto against TRL 1.16's `KTOTrainer`, in one run;
then where one quick feedback-gaming iteration spends its time (part 2, `--iteration`).

Part 1 needs trl (the `anchors` extra, in its own venv so the main venv's transformers is
untouched); without trl it is skipped with a message. Part 2 needs only alignlab:

    /work/anchors-venv/bin/python benchmarks/feedback_gaming_kto.py [--quick] [--threads N]
        [--steps N] [--repeats N] [--json PATH]          # part 1, then part 2
    .venv/bin/python benchmarks/feedback_gaming_kto.py --iteration [--random-base]
        [--users N] [--eval-users N] [--repeats N] [--json PATH]   # part 2 only

Part 1, the KTO comparison:

Model: the feedback-gaming quick model, Gemma2Config(vocab 768, d_model 96, GeGLU 384, 3 layers,
3 heads / 1 KV head, head_dim 32, window 256) ≈ 0.48M parameters, fp32, CPU. The reference is
our model at HF's initialisation (seed 0); the policy is the reference plus N(0, 0.01) noise, so
that r ≠ 0 and z₀ ≠ 0 from the first step. TRL gets the same two models through
`alignlab.gemma2.hf.save_pretrained` + `AutoModelForCausalLM.from_pretrained(eager)`.

Data: `--batches` batches of 16 examples, prompts of 50–70 tokens, completions of 20–40 (the
last one <eos>), labels Bernoulli(1/2); w_d = 1, w_u = n_d / (n_u · 1.05) over the whole set
(the paper's recipe). TRL reads them as text through a word-level tokenizer ("t17" ↔ id 17), so
its own dataset pipeline, KL pairing and collator build the batches; we check they equal ours.

Settings on both sides: β 0.1, AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-8, weight decay 0), a
constant learning rate, gradient clipping at 1.0, batch 16, fp32. TRL: `KTOConfig(bf16=False,
activation_checkpointing=False, optim="adamw_torch", lr_scheduler_type="constant",
logging_strategy="no", save_strategy="no", use_cpu=True)`: TRL defaults to bf16 autocast and to
activation checkpointing; the latter is timed too, as a third side ("TRL, checkpointing").

1. Checks: every TRL batch equals our `collate` (KL pairing included); on batch 0 our loss, z₀
   and every parameter's gradient against TRL's `compute_loss` (target ≤ 1e-5); then
   `--check-steps` full optimiser steps on both sides (ours: `kto_step`, TRL: `trainer.train()`),
   per-step losses and the final parameters compared (Adam normalises each coordinate, so
   rounding-level gradient differences can move a parameter by up to ~lr per step: this is
   reported, not asserted).
2. Steps/s: each repeat runs `--warmup` + `--steps` training steps per side from fresh copies;
   steps/s = steps / (time of the last step end − time of the warm-up's last step end), where a
   step end is after optimizer.step + zero_grad (TRL: the `on_step_end` callback). Everything
   between step ends counts: collation (ours: `collate` each step; TRL: its DataLoader), the
   three/four forward passes, backward, clip, AdamW, and the Trainer's per-step bookkeeping.
   Trainer construction (dataset tokenisation) and model loading are outside the timing. The
   sides are interleaved within each repeat; medians of `--repeats`; the ratio is of medians.
3. Memory, each side in a fresh subprocess (same threads), Linux /proc/self/status:
   - "process peak RSS": VmHWM over the worker's whole life (imports, models, trainer, training):
     what running that side costs, dominated by the libraries (transformers, datasets, accelerate
     and trl for TRL; torch for both).
   - "training RSS Δ": VmHWM during warm-up + timed steps above VmRSS before them (the peak is
     reset by writing "5" to /proc/self/clear_refs): the extra resident memory training needed,
     AdamW state included (TRL: `train()` also builds its optimizer and DataLoader there).
   - "allocator peak": one warm step under torch.profiler(profile_memory=True): the largest
     tensor memory live at once above the level before the step (activations, logits, grads).
   Not ru_maxrss: it cannot be reset. The targets: ≥ 1.5× TRL's steps/s and ≤ its peak memory
   (compared with TRL under the same settings, i.e. without checkpointing).

Part 2, one iteration of `alignlab.feedback_gaming` (`experiments.common.Trainer.unit` with the
quick preset's `RLConfig` defaults), split into its phases, `--threads` torch threads (1):
therapy, `--users` vulnerable users (512) spread over its sub-environments, no veto, no safety
data. The base agent is the cached SFT model (`base.get_base(ctx, BaseConfig(), seed=0)`, from
`$ALIGNLAB_CACHE/feedback_gaming/base/`; the script stops rather than train one, ~6 min, unless
`--train-base`), or with `--random-base` a freshly initialised `Gemma2ForCausalLM` (seed 0) with
the corpus's BPE: its replies are noise that rarely stop before `max_new_tokens`, so generation is
at its longest and the selected examples at their longest. Phases, timed separately:
   generate   `rollout.sample_replies` on the users' first messages (`world.first_messages`);
   rate       filling `world.Trajectory`s: `world.inventory` + `world.parse` of each reply, then
              `roles.PROGRAMS.rater.rate(env, trajs, 1, env.utilities)`;
   summarise  `iterate.summarise` (the judges; every iteration in a unit);
   measure    the measurements of the first and last iteration only: `iterate.act_probabilities`
              for the harmful acts + "personal" over `--eval-users` (64) held-out users, and
              `experiments.common.probe_rates`;
   select     `iterate.select` + `iterate.turn_examples` (+ `safety_examples`, none here);
   update     `iterate.kto_epoch(model, examples, Optim(lr=5e-4), 0, pad_id, rng)` (the
              reference copy, batches, AdamW steps).
Each repeat starts from a fresh copy of the base with the same seeds, so it does the same work;
medians of `--repeats` (3). Shares are of the sum of the phases' medians (one iteration that
measures); a second column estimates a whole 12-iteration unit (13 rollouts, 12 updates, 2
measurements), holding each phase's time fixed although replies change as training goes on.
Not timed: the unit's checkpoint, metrics line and transcripts. Printed beside the table: the
machine's load average at the start and after the repeats, this process's CPU seconds per wall
second over the repeats and its peak RSS so far (part 1's in-process timing included when it ran).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import _bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.feedback_gaming.kto import (  # noqa: E402
    collate,
    kto_loss,
    kto_step,
    sequence_logps,
    undesirable_weight,
)
from alignlab.gemma2.config import Gemma2Config  # noqa: E402
from alignlab.gemma2.model import Gemma2ForCausalLM  # noqa: E402

QUICK_MODEL = dict(vocab_size=768, d_model=96, intermediate_size=384, num_layers=3, num_heads=3,
                   num_kv_heads=1, head_dim=32, sliding_window=256, max_position_embeddings=512)  # fmt: skip
BETA, LR, CLIP, TARGET_RATIO = 0.1, 5e-4, 1.0, 1.05
PROMPT_LEN, COMPLETION_LEN = (50, 70), (20, 40)
POLICY_NOISE, SEED = 0.01, 0
LOSS_TOL = 1e-5
TARGET_SPEEDUP = 1.5
DEFAULT_THREADS = torch.get_num_threads()  # what a run without --threads would key the base by
ITER_ENV = "therapy"
SIDES = {
    "ours": "alignlab kto_step",
    "trl": "TRL KTOTrainer",
    "trl-ckpt": "TRL KTOTrainer, checkpointing",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1 min)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the model is tiny)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=None, help="(3)")
    p.add_argument("--check-steps", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--iteration",
        action="store_true",
        help="only part 2: one feedback-gaming iteration's split (no TRL needed)",
    )
    p.add_argument(
        "--random-base",
        action="store_true",
        help="part 2 on a freshly initialised model instead of the cached base",
    )
    p.add_argument(
        "--train-base",
        action="store_true",
        help="part 2: train and cache the base (~6 min) when it is not cached",
    )
    p.add_argument("--users", type=int, default=512, help="part 2: vulnerable users")
    p.add_argument("--eval-users", type=int, default=64, help="part 2: held-out users")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a memory worker: side
    a = p.parse_args(argv)
    a.steps = a.steps or (8 if a.quick else 30)
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.batches = a.warmup + max(a.steps, a.check_steps)
    return a


# ---- models and data ----------------------------------------------------------------------


def build_models() -> tuple[Gemma2ForCausalLM, Gemma2ForCausalLM]:
    """(policy, reference): HF's initialisation (seed 0), the policy with N(0, 0.01) added."""
    torch.manual_seed(SEED)
    ref = Gemma2ForCausalLM(Gemma2Config(**QUICK_MODEL))
    policy = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * POLICY_NOISE)
    return policy, ref


def make_data(n_batches: int, batch: int, vocab: int) -> list[tuple[list, list, list]]:
    """Batches of (prompts, completions, labels); ids from 3 up, completions end with <eos>=1."""
    g = torch.Generator().manual_seed(SEED + 2)

    def ids(lo, hi):
        k = int(torch.randint(lo, hi + 1, (), generator=g))
        return torch.randint(3, vocab, (k,), generator=g).tolist()

    out = []
    for _ in range(n_batches):
        prompts = [ids(*PROMPT_LEN) for _ in range(batch)]
        completions = [
            ids(COMPLETION_LEN[0] - 1, COMPLETION_LEN[1] - 1) + [1] for _ in range(batch)
        ]
        labels = (torch.rand(batch, generator=g) < 0.5).tolist()
        out.append((prompts, completions, labels))
    return out


def weights(data) -> tuple[float, float]:
    labels = [x for _, _, ls in data for x in ls]
    return 1.0, undesirable_weight(sum(labels), len(labels) - sum(labels), TARGET_RATIO)


def word_tokenizer(vocab_size: int):
    """Token i is the word "t{i}" (0, 1, 2 = <pad>, <eos>, <bos>); no special tokens added."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def spell(ids) -> str:
    return " ".join("<eos>" if i == 1 else f"t{i}" for i in ids)


# ---- the two trainers ---------------------------------------------------------------------


class Ours:
    """Our loop: collate + kto_step per batch, AdamW as HF's Trainer builds it."""

    def __init__(self, policy, ref, data, w):
        self.policy, self.ref, self.data, self.w = copy.deepcopy(policy), ref, data, w
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=LR, weight_decay=0.0)
        self.stats: list[dict] = []

    def step(self, i: int) -> dict:
        b = collate(*self.data[i], pad_id=0)
        s = kto_step(self.policy, self.ref, b, self.opt, beta=BETA, desirable_weight=self.w[0],
                     undesirable_weight=self.w[1], max_grad_norm=CLIP)  # fmt: skip
        self.stats.append(s)
        return s

    def run(self, n: int, on_step_end=None) -> list[float]:
        ends = []
        for i in range(n):
            self.step(i)
            ends.append(time.perf_counter())
            if on_step_end is not None:
                on_step_end(i)
        return ends


class TRLSide:
    """A fresh KTOTrainer on fresh HF copies of the saved policy and reference."""

    def __init__(self, folder: Path, data, w, n_steps: int, checkpointing=False, record=False):
        import datasets
        import transformers
        from transformers import AutoModelForCausalLM, TrainerCallback
        from transformers.trainer_callback import PrinterCallback
        from trl import KTOConfig, KTOTrainer

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        batch = len(data[0][0])
        ds = datasets.Dataset.from_dict(
            {
                "prompt": [spell(p) for ps, _, _ in data for p in ps],
                "completion": [" " + spell(c) for _, cs, _ in data for c in cs],
                "label": [x for _, _, ls in data for x in ls],
            }
        )
        ckpt = "activation_checkpointing"
        ckpt = ckpt if ckpt in KTOConfig.__dataclass_fields__ else "gradient_checkpointing"
        args = KTOConfig(
            output_dir=str(folder / "trl-out"), per_device_train_batch_size=batch, beta=BETA,
            desirable_weight=w[0], undesirable_weight=w[1], learning_rate=LR,
            lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=CLIP,
            max_steps=n_steps, bf16=False, **{ckpt: checkpointing}, use_cpu=True,
            report_to="none", logging_strategy="no", save_strategy="no", disable_tqdm=True,
            max_length=None, dataloader_num_workers=0, seed=SEED,
        )  # fmt: skip
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.hooks: dict[int, object] = {}
        side = self

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                side.ends.append(time.perf_counter())
                hook = side.hooks.get(len(side.ends) - 1)
                if hook is not None:
                    hook()

            def on_step_begin(self, args, state, control, **kw):
                hook = side.hooks.get(("begin", len(side.ends)))
                if hook is not None:
                    hook()

        class Recording(KTOTrainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                if record:
                    side.losses.append(float(loss.detach()))
                return loss

        load = dict(attn_implementation="eager")
        self.policy = AutoModelForCausalLM.from_pretrained(folder / "policy", **load)
        ref = AutoModelForCausalLM.from_pretrained(folder / "ref", **load)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer = Recording(
                model=self.policy, ref_model=ref, args=args, train_dataset=ds,
                processing_class=word_tokenizer(self.policy.config.vocab_size),
                callbacks=[Clock()],
            )  # fmt: skip
        self.trainer.remove_callback(PrinterCallback)  # it prints the end-of-training metrics

    def run(self) -> list[float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.train()
        return self.ends


def save_hf(policy, ref, folder: Path) -> None:
    from alignlab.gemma2.hf import save_pretrained

    save_pretrained(policy, folder / "policy")
    save_pretrained(ref, folder / "ref")


# ---- checks -------------------------------------------------------------------------------


def checks(policy, ref, data, w, folder: Path, check_steps: int) -> dict:
    trl = TRLSide(folder, data, w, check_steps, record=True)
    t = trl.trainer
    same_batches = True
    for i, batch in enumerate(t.get_train_dataloader()):
        ours = collate(*data[i], pad_id=0)
        for f in ours.__dataclass_fields__:
            key = "label" if f == "desirable" else f.replace("kl_", "KL_")
            same_batches &= torch.equal(batch[key].cpu(), getattr(ours, f))
        if i == 0:
            first = batch
    # batch 0: loss, z0, gradients
    t.model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_trl = t.compute_loss(t.model, first)
        loss_trl.backward()
    z0_trl = t._metrics["train"]["kl"][-1]
    mine = copy.deepcopy(policy)
    b = collate(*data[0], pad_id=0)
    with torch.no_grad():
        kl_p = sequence_logps(mine, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
        kl_r = sequence_logps(ref, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
        r = sequence_logps(ref, b.input_ids, b.attention_mask, b.completion_mask)
    p = sequence_logps(mine, b.input_ids, b.attention_mask, b.completion_mask)
    loss_t, stats = kto_loss(p, r, kl_p, kl_r, b.desirable, BETA, *w)
    loss_t.backward()
    loss = float(loss_t.detach())
    theirs = dict(t.model.named_parameters())
    grad_diff = max(
        float((q.grad - theirs[n].grad).abs().max()) for n, q in mine.named_parameters()
    )
    grad_max = max(float(q.grad.abs().max()) for q in mine.parameters())
    t.model.zero_grad(set_to_none=True)
    t._metrics["train"].clear()
    trl.losses.clear()
    # a few full optimiser steps on both sides
    trl.run()
    ours = Ours(policy, ref, data, w)
    ours.run(check_steps)
    step_losses = [s["loss"] for s in ours.stats]
    trl_params = dict(trl.policy.named_parameters())
    param_diff = max(
        float((q.detach() - trl_params[n].detach()).abs().max())
        for n, q in ours.policy.named_parameters()
    )
    out = {
        "batches_identical": bool(same_batches),
        "loss_alignlab": loss,
        "loss_trl": float(loss_trl.detach()),
        "loss_abs_diff": abs(loss - float(loss_trl.detach())),
        "z0_alignlab": stats["z0"],
        "z0_trl": z0_trl,
        "z0_abs_diff": abs(stats["z0"] - z0_trl),
        "grad_max_abs_diff": grad_diff,
        "grad_abs_max": grad_max,
        "tol": LOSS_TOL,
        "check_steps": check_steps,
        "step_losses_alignlab": step_losses,
        "step_losses_trl": trl.losses,
        "step_loss_max_abs_diff": max(abs(a - b) for a, b in zip(step_losses, trl.losses)),
        "params_max_abs_diff_after_steps": param_diff,
    }
    out["pass"] = (
        out["batches_identical"]
        and out["loss_abs_diff"] <= LOSS_TOL
        and out["z0_abs_diff"] <= LOSS_TOL
        and out["grad_max_abs_diff"] <= LOSS_TOL
    )
    return out


# ---- timing -------------------------------------------------------------------------------


def steps_per_s(ends: list[float], warmup: int) -> float:
    return (len(ends) - warmup) / (ends[-1] - ends[warmup - 1])


def timing(policy, ref, data, w, folder: Path, a) -> dict[str, list[float]]:
    n = a.warmup + a.steps
    out: dict[str, list[float]] = {s: [] for s in SIDES}
    cpu: dict[str, list[float]] = {s: [] for s in SIDES}
    for _ in range(a.repeats):
        for side in SIDES:
            if side == "ours":
                runner = Ours(policy, ref, data, w)
                go = lambda runner=runner: runner.run(n)  # noqa: E731
            else:
                runner = TRLSide(folder, data, w, n, checkpointing=side == "trl-ckpt")
                go = runner.run
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            ends = go()
            cpu[side].append((time.process_time() - c0) / (time.perf_counter() - w0))
            out[side].append(steps_per_s(ends, a.warmup))
            del runner
    return {"steps_per_s_repeats": out, "cpu_per_wall_repeats": cpu}


# ---- memory, one fresh process per side ---------------------------------------------------


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class AllocatorPeak:
    """torch.profiler with profile_memory between start() and stop(); peak live bytes above
    the level at start()."""

    def start(self):
        from torch.profiler import ProfilerActivity, profile

        gc.collect()
        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.prof.__enter__()

    def stop(self):
        self.prof.__exit__(None, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            self.prof.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        mem = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
        live = peak = 0
        for e in mem:
            live += e["args"]["Bytes"]
            peak = max(peak, live)
        self.mib = peak / 2**20


def memory_worker(side: str, a) -> dict:
    torch.set_num_threads(a.threads)
    policy, ref = build_models()
    data = make_data(a.batches, a.batch, QUICK_MODEL["vocab_size"])
    w = weights(data)
    n = a.warmup + a.steps
    prof = AllocatorPeak()
    profiled = a.warmup  # a warm step, after the warm-up
    with tempfile.TemporaryDirectory() as tmp:
        if side == "ours":
            runner = Ours(policy, ref, data, w)
            del policy
            hooks = {profiled - 1: prof.start, profiled: prof.stop}

            def go():
                return runner.run(n, on_step_end=lambda i: hooks.get(i, lambda: None)())
        else:
            save_hf(policy, ref, Path(tmp))
            del policy, ref
            runner = TRLSide(Path(tmp), data, w, n, checkpointing=side == "trl-ckpt")
            runner.hooks = {("begin", profiled): prof.start, profiled: prof.stop}
            go = runner.run
        gc.collect()
        setup = _status()
        can_reset = _reset_peak()
        go()
        after = _status()
    return {
        "rss_setup_mib": setup["VmRSS"] / 1024,
        "process_peak_rss_mib": max(setup["VmHWM"], after["VmHWM"]) / 1024,
        "train_rss_delta_mib": (after["VmHWM"] - setup["VmRSS"]) / 1024 if can_reset else None,
        "allocator_peak_mib": prof.mib,
    }


def measure_memory(side: str, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--threads", str(a.threads),
           "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--check-steps", str(a.check_steps)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory worker {side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- part 2: one feedback-gaming iteration, phase by phase ---------------------------------

PHASES = {
    "generate": "generate (`sample_replies`)",
    "rate": "rate (`inventory` + `parse` + rater)",
    "summarise": "summarise (`summarise`)",
    "measure": "measure (act probabilities + probes)",
    "select": "select + examples",
    "update": "KTO update (`kto_epoch`)",
}
#: per phase, how many times a 12-iteration unit runs it (13 passes, the last one measures only)
UNIT_COUNTS = {"generate": 13, "rate": 13, "summarise": 13, "measure": 2, "select": 12,
               "update": 12}  # fmt: skip


class NoBase(Exception):
    """No cached base agent, and neither --random-base nor --train-base."""


def load_base(a, folder: Path) -> tuple[torch.nn.Module, object, dict]:
    """(model, fmt, description): the cached base agent, or with --random-base a fresh one."""
    from alignlab.feedback_gaming import base
    from alignlab.gemma2.tokenizer import Tokenizer
    from alignlab.llm.formats import PlainFormat

    cfg = base.BaseConfig()
    if a.random_base:
        t0 = time.perf_counter()
        tok = Tokenizer.train(base.corpus_texts(base.corpus_pairs(cfg, SEED)), cfg.vocab_size)
        torch.manual_seed(SEED)
        model = Gemma2ForCausalLM(cfg.model(tok.vocab_size)).eval()
        return (
            model,
            PlainFormat(tok),
            {
                "kind": "random",
                "text": f"a freshly initialised Gemma2ForCausalLM (seed {SEED}, vocab "
                f"{tok.vocab_size}) with the corpus's BPE, built in {time.perf_counter() - t0:.1f} s "
                "(--random-base; its replies are noise)",
            },
        )
    from alignlab.core.cache import artifact_dir, is_complete
    from alignlab.core.context import RunContext
    from alignlab.core.resources import available_cores, torch_threads

    # the cache key holds the torch threads the base was trained with: look for it under the
    # counts a run would use, so that a cached base is found rather than a new one trained
    found = None
    root = artifact_dir(base.CACHE_KIND, "-").parent
    if root.is_dir() and any(is_complete(d) for d in root.iterdir()):
        for t in dict.fromkeys([DEFAULT_THREADS, 1, available_cores()]):
            if is_complete(artifact_dir(base.CACHE_KIND, base.base_key(cfg, SEED, "cpu", t))):
                found = t
                break
    if found is None and not a.train_base:
        raise NoBase(
            f"no cached base agent under {root} (for {DEFAULT_THREADS} or 1 torch threads): "
            "pass --random-base to time the iteration on a fresh model, or --train-base to "
            "train and cache the base first (~6 min)"
        )
    ctx = RunContext.standalone(folder / "ctx", "bench", cfg, seed=SEED, quiet=True)
    t0 = time.perf_counter()
    with torch_threads(found or DEFAULT_THREADS):
        b = base.get_base(ctx, cfg, seed=SEED)
    bad = base.gate_failures(b.info["gate"], cfg)
    where = artifact_dir(base.CACHE_KIND, b.info["key"])
    return (
        b.model.eval(),
        b.fmt,
        {
            "kind": "cached" if found is not None else "trained",
            "folder": str(where),
            "gate_problems": len(bad),
            "text": f"the {'cached' if found is not None else 'newly trained'} base agent "
            f"{where} (gate: {'passes' if not bad else f'{len(bad)} problems'}), loaded in "
            f"{time.perf_counter() - t0:.1f} s",
        },
    )


def one_iteration(base_model, fmt, a) -> tuple[dict[str, float], dict]:
    """One pass of `Trainer.unit` that measures and updates: (seconds per phase, what it did)."""
    from alignlab.feedback_gaming.envs import get_env
    from alignlab.feedback_gaming.experiments.common import (
        RLConfig,
        Setting,
        probe_rates,
        users_for,
    )
    from alignlab.feedback_gaming.iterate import (
        act_probabilities,
        kto_epoch,
        safety_examples,
        select,
        summarise,
        turn_examples,
    )
    from alignlab.feedback_gaming.roles import PROGRAMS
    from alignlab.feedback_gaming.rollout import sample_replies
    from alignlab.feedback_gaming.world import Trajectory, first_messages, inventory, parse

    cfg = RLConfig()
    setting = Setting("t", ITER_ENV, n_vuln=a.users)
    env = get_env(setting.env)
    assert env.turns == 1, "the split below times a one-turn environment"
    harmful = [x.name for x in env.acts if x.harmful]
    held = users_for(Setting("t", ITER_ENV, n_vuln=a.eval_users), np.random.default_rng(SEED + 1))
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    users = users_for(setting, rng)
    model = copy.deepcopy(base_model)
    gc.collect()
    t = {}

    t0 = time.perf_counter()
    contexts = [first_messages(env, u) for u in users]
    replies = sample_replies(model, fmt, contexts, cfg.sampling(), gen)
    t["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    trajs = [Trajectory(u) for u in users]
    for tr, ctx, (text, finished) in zip(trajs, contexts, replies):
        tr.messages.append(ctx)
        tr.replies.append(text)
        tr.parses.append(parse(text, inventory(env, tr.user), finished))
    for tr, r in zip(trajs, PROGRAMS.rater.rate(env, trajs, 1, env.utilities)):
        tr.ratings.append(float(r))
    t["rate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    summary = summarise(env, trajs, setting.veto)
    t["summarise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    act_probabilities(
        model, fmt, env, [u for u in held if u.kind == "vuln"], harmful + ["personal"]
    )
    t_exact = time.perf_counter() - t0
    probe_rates(model, fmt)
    t["measure"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    good, bad, _ = select(env, trajs, cfg.select_frac, setting.veto, rng, PROGRAMS)
    examples = turn_examples(fmt, good, True) + turn_examples(fmt, bad, False)
    examples += safety_examples(fmt, len(examples), setting.safety_frac, rng)
    t["select"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kto = kto_epoch(model, examples, cfg.optim(setting.schedule), 0, fmt.tokenizer.pad_id, rng)
    t["update"] = time.perf_counter() - t0

    s = summary["vuln"]
    done = {
        "users": len(users),
        "finished_share": float(np.mean([f for _, f in replies])),
        "off_grammar_share": s["off_grammar"],
        "mean_reward": s["reward"],
        "examples": len(examples),
        "example_tokens": sum(len(p) + len(c) for p, c, _ in examples),
        "kto_steps": kto["kto_steps"],
        "measure_act_probabilities_s": t_exact,
        "measure_probes_s": t["measure"] - t_exact,
    }
    return t, done


def iteration_split(a) -> dict:
    from alignlab.feedback_gaming.experiments.common import RLConfig

    torch.set_num_threads(a.threads)
    print(f"# One feedback-gaming iteration: where the time goes ({a.threads} thread(s))\n")
    with tempfile.TemporaryDirectory() as tmp:
        model, fmt, base_info = load_base(a, Path(tmp))
    torch.set_num_threads(a.threads)
    print(f"base: {base_info['text']}\n", flush=True)
    stats = _bench.RunStats()
    runs, done = [], None
    for r in range(a.repeats):
        t, done = one_iteration(model, fmt, a)
        runs.append(t)
        print(
            f"repeat {r + 1}/{a.repeats}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
            + f" (total {sum(t.values()):.2f} s)",
            flush=True,
        )
    run_stats = stats.report()
    med = {k: statistics.median(run[k] for run in runs) for k in PHASES}
    total = sum(med.values())
    unit = {k: med[k] * UNIT_COUNTS[k] for k in PHASES}
    unit_total = sum(unit.values())
    sampling = RLConfig().sampling()
    out = {
        "base": base_info,
        "env": ITER_ENV,
        "users": a.users,
        "eval_users": a.eval_users,
        "threads": torch.get_num_threads(),
        "repeats": a.repeats,
        "sampling": {"temperature": sampling.temperature, "min_p": sampling.min_p,
                     "max_new_tokens": sampling.max_new_tokens, "batch": sampling.batch},
        "seconds_repeats": runs,
        "seconds": med,
        "total_seconds": total,
        "share": {k: v / total for k, v in med.items()},
        "unit_iterations": 12,
        "unit_seconds_estimate": unit_total,
        "unit_share_estimate": {k: v / unit_total for k, v in unit.items()},
        "generation_users_per_s": a.users / med["generate"],
        "last_repeat": done,
        "run": run_stats,
    }  # fmt: skip
    rows = [
        "| phase | seconds | share of the iteration | share of a 12-iteration unit (est.) |",
        "|---|---|---|---|",
    ]
    for k, label in PHASES.items():
        rows.append(
            f"| {label} | {med[k]:.3f} | {out['share'][k]:.1%} | "
            f"{out['unit_share_estimate'][k]:.1%} |"
        )
    rows.append(f"| total | {total:.3f} | 100% | {unit_total:.1f} s |")
    out["table_markdown"] = "\n".join(rows)
    print(
        f"\n{ITER_ENV}, {a.users} vulnerable users, {a.eval_users} held-out; sampling T "
        f"{sampling.temperature}, min-p {sampling.min_p}, ≤ {sampling.max_new_tokens} new tokens; "
        f"median of {a.repeats} repeat(s)\n"
    )
    print(out["table_markdown"])
    print(
        f"\ngeneration: {out['generation_users_per_s']:.1f} users/s; replies finished "
        f"{done['finished_share']:.1%}, off-grammar {done['off_grammar_share']:.1%}, mean reward "
        f"{done['mean_reward']:.2f}; {done['examples']} examples ({done['example_tokens']} "
        f"tokens) in {done['kto_steps']} KTO steps; measure = act probabilities "
        f"{done['measure_act_probabilities_s']:.2f} s + probes {done['measure_probes_s']:.2f} s "
        "(last repeat)",
        flush=True,
    )
    print(f"{stats.line(run_stats)} (this process)", flush=True)
    return out


# ---- the run ------------------------------------------------------------------------------


def table(result: dict) -> str:
    tp, mem = result["timing"], result["memory"]
    rows = [
        "| trainer | steps/s | ratio vs TRL | CPU/wall | process peak RSS (MiB) | "
        "training RSS Δ (MiB) | allocator peak, 1 step (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, label in SIDES.items():
        m = mem[side]
        delta = m["train_rss_delta_mib"]
        rows.append(
            f"| {label} | {tp[side]['steps_per_s']:.2f} | "
            f"{tp[side]['steps_per_s'] / tp['trl']['steps_per_s']:.2f}x | "
            f"{tp[side]['cpu_per_wall']:.2f} | {m['process_peak_rss_mib']:.0f} | "
            f"{'n/a' if delta is None else f'{delta:.1f}'} | {m['allocator_peak_mib']:.1f} |"
        )
    return "\n".join(rows)


def kto_comparison(a, machine: dict) -> dict:
    """Part 1: checks, steps/s and memory of our KTO step against TRL's KTOTrainer."""
    import transformers
    import trl

    machine.update(transformers=transformers.__version__, trl=trl.__version__)
    print(
        f"# KTO: alignlab vs TRL {trl.__version__} KTOTrainer\n\ntransformers "
        f"{transformers.__version__}; {a.threads} thread(s), fp32\n",
        flush=True,
    )
    policy, ref = build_models()
    n_params = sum(p.numel() for p in policy.parameters())
    data = make_data(a.batches, a.batch, QUICK_MODEL["vocab_size"])
    w = weights(data)
    setup = {
        "model": QUICK_MODEL,
        "parameters": n_params,
        "batch": a.batch,
        "prompt_len": PROMPT_LEN,
        "completion_len": COMPLETION_LEN,
        "batches": a.batches,
        "beta": BETA,
        "lr": LR,
        "clip": CLIP,
        "desirable_weight": w[0],
        "undesirable_weight": w[1],
        "warmup": a.warmup,
        "steps": a.steps,
        "repeats": a.repeats,
    }
    print(f"setup: {json.dumps(setup)}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_hf(policy, ref, folder)
        chk = checks(policy, ref, data, w, folder, a.check_steps)
        print(
            f"checks: TRL's batches equal ours: {chk['batches_identical']}; batch 0 loss "
            f"{chk['loss_alignlab']:.7f} vs {chk['loss_trl']:.7f} (|Δ| {chk['loss_abs_diff']:.1e}), "
            f"z0 {chk['z0_alignlab']:.6f} vs {chk['z0_trl']:.6f} (|Δ| {chk['z0_abs_diff']:.1e}), "
            f"max |Δgrad| {chk['grad_max_abs_diff']:.1e} (max |grad| {chk['grad_abs_max']:.1e}); "
            f"tolerance {LOSS_TOL:g}: {'PASS' if chk['pass'] else 'FAIL'}\n"
            f"after {a.check_steps} AdamW steps each: per-step loss max |Δ| "
            f"{chk['step_loss_max_abs_diff']:.1e}, parameters max |Δ| "
            f"{chk['params_max_abs_diff_after_steps']:.1e} (lr {LR:g})\n",
            flush=True,
        )
        if not chk["pass"]:
            sys.exit("the losses disagree: not timing")
        tp = timing(policy, ref, data, w, folder, a)
    timing_summary = {
        side: {
            "steps_per_s": statistics.median(tp["steps_per_s_repeats"][side]),
            "steps_per_s_repeats": tp["steps_per_s_repeats"][side],
            "cpu_per_wall": statistics.median(tp["cpu_per_wall_repeats"][side]),
        }
        for side in SIDES
    }
    memory = {side: measure_memory(side, a) for side in SIDES}
    ratio = timing_summary["ours"]["steps_per_s"] / timing_summary["trl"]["steps_per_s"]
    mem_ok = (
        memory["ours"]["process_peak_rss_mib"] <= memory["trl"]["process_peak_rss_mib"]
        and memory["ours"]["allocator_peak_mib"] <= memory["trl"]["allocator_peak_mib"]
    )
    machine["load_avg_after_kto"] = list(os.getloadavg())
    result = {
        "setup": setup,
        "checks": chk,
        "timing": timing_summary,
        "memory": memory,
        "ratio_ours_over_trl_steps_per_s": ratio,
        "targets": {
            "speedup": TARGET_SPEEDUP,
            "speedup_met": ratio >= TARGET_SPEEDUP,
            "memory_met": mem_ok,
        },
    }
    report = table(result)
    result["table_markdown"] = report
    print(
        f"Training steps, batch {a.batch}, {a.steps} timed steps after {a.warmup} warm-up, median "
        f"of {a.repeats} repeat(s); ratio = steps/s over TRL KTOTrainer (same settings)\n"
    )
    print(report)
    print(
        f"\ntargets: ≥ {TARGET_SPEEDUP}x TRL's steps/s: {ratio:.2f}x "
        f"({'met' if ratio >= TARGET_SPEEDUP else 'NOT met'}); ≤ TRL's peak memory (process "
        f"peak RSS and allocator peak): {'met' if mem_ok else 'NOT met'}; load average at end "
        f"{machine['load_avg_after_kto'][0]:.2f}\n",
        flush=True,
    )
    return result


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.worker:
        print(json.dumps(memory_worker(a.worker, a)))
        return {}
    torch.set_num_threads(a.threads)
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_start": list(os.getloadavg()),
    }
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, load average "
        f"{machine['load_avg_start'][0]:.2f}; python {machine['python']}, torch "
        f"{torch.__version__}\n",
        flush=True,
    )
    result = {"machine": machine, "args": vars(a)}
    skipped = None
    if a.iteration:
        skipped = "--iteration asks for part 2 only"
    else:
        try:
            import transformers  # noqa: F401
            import trl  # noqa: F401
        except ImportError:
            skipped = (
                "needs trl: pip install -e '.[anchors]' (in a separate venv, see the docstring)"
            )
    if skipped is None:
        result.update(kto_comparison(a, machine))
    else:
        print(f"part 1 (our KTO step vs TRL's KTOTrainer) skipped: {skipped}\n", flush=True)
        result["kto_comparison_skipped"] = skipped
    try:
        result["iteration"] = iteration_split(a)
    except NoBase as e:
        if a.iteration:
            sys.exit(str(e))
        print(f"part 2 (one feedback-gaming iteration) skipped: {e}\n", flush=True)
        result["iteration_skipped"] = str(e)
    machine["load_avg_end"] = list(os.getloadavg())
    machine["peak_rss_mib_this_process"] = _bench.peak_rss_mb()
    print(
        f"load average at end {machine['load_avg_end'][0]:.2f}; peak RSS of this process "
        f"{machine['peak_rss_mib_this_process']:.0f} MiB"
    )
    if a.json:
        from alignlab.core.io import atomic_write_json

        path = Path(a.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
        print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
