"""model_combos' harness speed: three ratios measured side by side in one run.

1. **Batched TinyChat episodes vs one at a time.** The manual and automated methods
   (`strategies.manual`, `strategies.automated`: 5 model calls per task) on N held-out chains
   with the quick zoo's frontier d128·L4 and weak d48·L2, once with every step batched over the
   N tasks (`TinyChat`, KV cache, batch 512) and once with each task's episode run on its own
   (batch 1). Identical episodes are checked. The zoo comes from the cache when
   `alignlab run model_combos.mini` has trained it, else fresh, untrained models of the same
   sizes (said in the output; speed barely depends on the weights, but replies' lengths do).
2. **Loopback `OpenAICompatible` with 8 threads vs sequential calls.** The client against the
   project's OpenAI-compatible server (`alignlab.llm.serve`) serving a model that answers after
   a fixed latency (`--latency-ms`, default 20 ms per request, standing in for a remote model;
   our tiny models run one call at a time, so they could not show a client's concurrency).
   Identical replies are checked.
3. **The sandbox vs a bare `subprocess.run`.** `sandbox.run_python` (python -I, rlimits, the
   audit hook, `unshare -rn` where allowed) against `subprocess.run([python, "-I", "-c", code])`
   on the same small script; medians of `--repeats` runs each, interleaved.

Peak RSS is this process's `resource.getrusage` maximum; the machine's load is printed, since
other jobs may share the CPU. One torch thread.

Usage: python benchmarks/model_combos_speed.py [--tasks N] [--repeats N] [--latency-ms MS]
       [--out PATH]          (writes docs/img/model_combos_benchmark.json by default)
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.core.cache import is_complete  # noqa: E402
from alignlab.core.io import atomic_write_json  # noqa: E402
from alignlab.model_combos import chains as K  # noqa: E402
from alignlab.model_combos import sandbox  # noqa: E402
from alignlab.model_combos import strategies as S  # noqa: E402
from alignlab.model_combos import zoo as Z  # noqa: E402
from alignlab.model_combos.experiments.mini import MiniConfig  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "model_combos_benchmark.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def zoo_models() -> tuple[Z.TinyChat, Z.TinyChat, str]:
    cfg = MiniConfig()
    out, source = [], "cached quick zoo (trained)"
    for role, size in (("frontier", cfg.frontier), ("weak", cfg.weak)):
        folder = Z.model_dir(cfg.zoo, role, size, 0)
        if is_complete(folder):
            out.append(Z.TinyChat.load(folder, f"{role}-{size}"))
        else:
            torch.manual_seed(0)
            model = Z.Gemma2ForCausalLM(Z.model_config(size, cfg.zoo.chain)).eval()
            out.append(Z.TinyChat(model, f"{role}-{size}"))
            source = "untrained models of the quick sizes (run model_combos.mini to use the zoo)"
    return out[0], out[1], source


def episodes(family, F, W, tasks) -> list[S.Episode]:
    return S.manual(family, F, W, tasks) + S.automated(family, F, W, tasks, m=family.cfg.m)


def bench_batching(n_tasks: int) -> dict:
    F, W, source = zoo_models()
    family = K.ChainFamily()
    tasks = family.tasks(n_tasks, np.random.default_rng(0))
    t0 = time.perf_counter()
    batched = episodes(family, F, W, tasks)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [e for t in tasks for e in episodes(family, F, W, [t])]
    t_single = time.perf_counter() - t0
    order = {(e.task, e.method): e for e in single}
    same = all(order[(e.task, e.method)] == e for e in batched)
    return {
        "models": source,
        "tasks": n_tasks,
        "calls": 5 * n_tasks,
        "batched_s": t_batched,
        "one_at_a_time_s": t_single,
        "ratio": t_single / t_batched,
        "identical_episodes": bool(same),
    }


class Latency:
    """A ChatModel answering after a fixed latency per request (a remote model's stand-in)."""

    name = "latency"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def chat(self, conversations, *, max_tokens, temperature=1.0, seed=None):
        time.sleep(self.seconds * len(conversations))
        return [c[-1]["content"][::-1] for c in conversations]

    def top_logprobs(self, conversations, *, top=20):
        return [{"x": 0.0} for _ in conversations]


def bench_threads(n_requests: int, latency_ms: float) -> dict:
    from alignlab.llm import OpenAICompatible, serve

    convs = [[{"role": "user", "content": f"request {i}"}] for i in range(n_requests)]
    with serve({"latency": Latency(latency_ms / 1000)}) as server:
        seq = OpenAICompatible("latency", base_url=server.url, max_workers=1)
        par = OpenAICompatible("latency", base_url=server.url, max_workers=8)
        seq.chat(convs[:4], max_tokens=4)  # warm the connections
        par.chat(convs[:8], max_tokens=4)
        t0 = time.perf_counter()
        a = seq.chat(convs, max_tokens=4)
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = par.chat(convs, max_tokens=4)
        t_par = time.perf_counter() - t0
    return {
        "requests": n_requests,
        "latency_ms": latency_ms,
        "sequential_s": t_seq,
        "threads_8_s": t_par,
        "ratio": t_seq / t_par,
        "identical_replies": a == b,
    }


CODE = "import json\nprint(json.dumps(sorted([3, 1, 2])))\n"


def bench_sandbox(repeats: int) -> dict:
    bare, boxed = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-I", "-c", CODE], capture_output=True, text=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s = sandbox.run_python(CODE)
        boxed.append(time.perf_counter() - t0)
        assert r.stdout == s.stdout == "[1, 2, 3]\n", (r.stdout, s.stdout, s.stderr)
    mb, ms = statistics.median(bare), statistics.median(boxed)
    return {
        "repeats": repeats,
        "bare_ms": 1000 * mb,
        "sandbox_ms": 1000 * ms,
        "ratio": ms / mb,
        "isolation": sandbox.isolation(),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_before": os.getloadavg(),
        "batching": bench_batching(args.tasks),
        "threads": bench_threads(args.requests, args.latency_ms),
        "sandbox": bench_sandbox(args.repeats),
        "load_after": os.getloadavg(),
        "peak_rss_mb": peak_rss_mb(),
    }
    b, t, s = out["batching"], out["threads"], out["sandbox"]
    print(
        f"machine: {out['machine']}; load {out['load_before'][0]:.2f} -> {out['load_after'][0]:.2f}"
    )
    print(
        f"batched TinyChat episodes ({b['models']}): {b['tasks']} tasks x 5 calls "
        f"{b['batched_s']:.2f} s vs one at a time {b['one_at_a_time_s']:.2f} s: "
        f"{b['ratio']:.1f}x (target >= 5x); identical episodes: {b['identical_episodes']}"
    )
    print(
        f"OpenAICompatible, {t['requests']} requests at {t['latency_ms']:.0f} ms: sequential "
        f"{t['sequential_s']:.2f} s vs 8 threads {t['threads_8_s']:.2f} s: {t['ratio']:.1f}x "
        f"(target >= 4x); identical replies: {t['identical_replies']}"
    )
    print(
        f"sandbox ({s['isolation']}) {s['sandbox_ms']:.1f} ms vs bare subprocess "
        f"{s['bare_ms']:.1f} ms (medians of {s['repeats']}): {s['ratio']:.2f}x (target <= 1.5x)"
    )
    print(f"peak RSS {out['peak_rss_mb']:.0f} MB")
    atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
