"""Imagen 3 evaluation suite on CPU: the vectorised clustered bootstrap of Bradley-Terry Elo
against `choix.ilsr_pairwise` looped over the same resamples (Imagen Team 2024, Sec. 3.1).

Workload (the report's size for one aspect x prompt set): 6 models, all 15 pairs, 2500
ratings per pair (37,500 ratings), 200 prompts, 10 % ties; simulated Bradley-Terry raters
(a simulation: true Elo 880..1120). 1000 resamples of prompts with replacement, 99 % CIs.

- ours: `bootstrap_elo(ratings, models, n=1000, level=0.99, rng)`, end to end from the Rating
  objects (their conversion into per-prompt win tensors included); "fit only" times the
  resampled wins + batched Newton part alone.
- choix: for each resample (the same prompt counts, from `resample_counts` with the same
  seed), the resample's comparisons as choix's pairwise data (ties as one win each way and
  every win twice: the duplicated-data form whose MLE equals half-win ties), then
  `choix.ilsr_pairwise(6, data)` with its defaults (tol 1e-8, max_iter 100). Its per-prompt
  comparison lists are built once, untimed. Each resample takes a fraction of a second, so by
  default the first `--choix-resamples` (50) resamples are timed and the time per resample is
  scaled to 1000 (`--choix-resamples 1000` times them all).
- choix dense: `choix.ilsr_pairwise_dense` on each resample's (6, 6) win-count matrix, all
  1000 resamples (a stronger baseline, the same algorithm without the Python loop over
  comparisons).
Both sides fit the same resamples; max |ΔElo| compares their scores (stated tolerance
`ELO_TOL`, 0.01 Elo, the bound tests/t2i/test_eval_benchmark.py asserts). Medians of `--repeats`
runs are reported (one thread; machine load printed, since other jobs may share the CPU).
Peak RSS is this process's `resource.getrusage` maximum.

If `benchmarks/t2i_sampler.py` exists, its `benchmark_sampler()` runs too and its dict is
printed and stored under "sampler".

Usage: python benchmarks/t2i_eval.py [--quick] [--no-sampler] [--choix-resamples N]
       [--repeats N] [--out PATH]          (writes docs/img/t2i_benchmark.json by default)
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from alignlab.core.io import atomic_write_json  # noqa: E402
from alignlab.t2i.eval.elo import (  # noqa: E402
    ELO_SCALE,
    bootstrap_elo,
    cluster_wins,
    fit_theta_batch,
    resample_counts,
    to_elo,
)
from alignlab.t2i.eval.sxs import Rating  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("full", "full@2k", "short", "raw", "full@1k", "full_w1")
TRUE_ELO = np.array([1120.0, 1070.0, 1020.0, 980.0, 930.0, 880.0])
ELO_TOL = 0.01  # max |ΔElo| between ours and choix for "the same scores"


def simulated_ratings(rng, n_per_pair=2500, n_prompts=200, tie_p=0.1) -> list[Rating]:
    """A round robin of simulated Bradley-Terry raters, sides shuffled, prompts balanced: a tie
    with probability tie_p, a win for i with probability sigmoid(theta_i - theta_j) - tie_p / 2."""
    theta = (TRUE_ELO - 1000.0) / ELO_SCALE
    out = []
    for i, j in combinations(range(len(MODELS)), 2):
        prompts = rng.permutation(np.arange(n_per_pair) % n_prompts)
        flip = rng.random(n_per_pair) < 0.5
        p_i = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
        u = rng.random(n_per_pair)
        i_wins = u < p_i - tie_p / 2  # expected half-win score = p_i: the fit recovers TRUE_ELO
        tie = u >= 1 - tie_p
        study = f"overall/genai/{MODELS[i]}~{MODELS[j]}"
        for k in range(n_per_pair):
            a, b = (j, i) if flip[k] else (i, j)
            if tie[k]:
                choice = "tie"
            else:
                choice = "left" if (i_wins[k] == (a == i)) else "right"
            out.append(
                Rating(study, "genai", "overall", int(prompts[k]), MODELS[a], MODELS[b], choice, "")
            )
    return out


def choix_cluster_pairs(ratings, models):
    """Per prompt, its comparisons in choix's duplicated form: every win twice, every tie once
    each way (doubling all weights leaves the MLE unchanged)."""
    idx = {m: k for k, m in enumerate(models)}
    keys: dict = {}
    for r in ratings:
        lst = keys.setdefault((r.set, r.prompt_id), [])
        a, b = idx[r.model_a], idx[r.model_b]
        if r.choice == "tie":
            lst += [(a, b), (b, a)]
        else:
            w, lo = (a, b) if r.choice == "left" else (b, a)
            lst += [(w, lo), (w, lo)]
    return [np.array(v, dtype=np.int64) for v in keys.values()]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_choix_sparse(choix, cluster_pairs, counts, m):
    out = []
    for row in counts:
        parts = [
            np.repeat(cluster_pairs[k][None], c, axis=0).reshape(-1, 2)
            for k, c in enumerate(row)
            if c
        ]
        data = np.concatenate(parts).tolist()
        params = choix.ilsr_pairwise(m, data)
        out.append(to_elo(params))
    return np.array(out)


def run_choix_dense(choix, c, counts):
    m = c.shape[1]
    w = (counts.astype(np.float64) @ c.reshape(c.shape[0], m * m)).reshape(-1, m, m)
    return np.array([to_elo(choix.ilsr_pairwise_dense(wb)) for wb in w])


def load_sampler_benchmark():
    path = ROOT / "benchmarks" / "t2i_sampler.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("t2i_sampler_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.benchmark_sampler


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for tests (noisy)")
    ap.add_argument("--no-sampler", action="store_true", help="skip benchmark_sampler()")
    ap.add_argument("--choix-resamples", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "t2i_benchmark.json"))
    a = ap.parse_args(argv)
    n_per_pair, n_prompts, n_boot = (200, 40, 100) if a.quick else (2500, 200, 1000)
    n_choix = a.choix_resamples or (5 if a.quick else 50)
    n_choix = min(n_choix, n_boot)
    repeats = a.repeats or (1 if a.quick else 3)
    import choix

    load_start = os.getloadavg()
    print(
        f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    rng = np.random.default_rng(a.seed)
    ratings = simulated_ratings(rng, n_per_pair, n_prompts)
    models = list(MODELS)
    print(
        f"{len(ratings)} ratings: {len(MODELS)} models, 15 pairs x {n_per_pair}, "
        f"{n_prompts} prompts; {n_boot} resamples"
    )

    # ours, end to end and fit only (the same resamples: same seed, same draws)
    c, strata = cluster_wins(ratings, models)
    counts = resample_counts(strata, n_boot, np.random.default_rng(a.seed + 1))

    def ours():
        return bootstrap_elo(ratings, models, n_boot, 0.99, np.random.default_rng(a.seed + 1))

    def fit_only():
        w = (counts.astype(np.float64) @ c.reshape(c.shape[0], -1)).reshape(-1, 6, 6)
        return to_elo(fit_theta_batch(w))

    t_ours, t_fit = [], []
    for _ in range(repeats):
        dt, ci = timed(ours)
        t_ours.append(dt)
        dt, samples = timed(fit_only)
        t_fit.append(dt)
    assert np.array_equal(samples, ci.samples), "the same resamples on both paths"

    # choix, looped per resample over the same resamples
    pairs = choix_cluster_pairs(ratings, models)
    t_choix, t_dense = [], []
    for _ in range(repeats):
        dt, ref = timed(lambda: run_choix_sparse(choix, pairs, counts[:n_choix], 6))
        t_choix.append(dt)
        dt, ref_dense = timed(lambda: run_choix_dense(choix, c, counts))
        t_dense.append(dt)
    d_sparse = float(np.max(np.abs(ref - ci.samples[:n_choix])))
    d_dense = float(np.max(np.abs(ref_dense - ci.samples)))
    d_point = float(np.max(np.abs(ci.elo - to_elo(choix.ilsr_pairwise_dense(c.sum(0))))))

    med = lambda x: float(np.median(x))  # noqa: E731
    ours_s, fit_s = med(t_ours), med(t_fit)
    choix_per = med(t_choix) / n_choix
    choix_total = choix_per * n_boot
    dense_s = med(t_dense)
    result = {
        "benchmark": "t2i_eval: clustered bootstrap of Bradley-Terry Elo",
        "workload": {
            "models": len(MODELS),
            "pairs": 15,
            "ratings_per_pair": n_per_pair,
            "ratings": len(ratings),
            "prompts": n_prompts,
            "resamples": n_boot,
            "level": 0.99,
            "ties": 0.1,
            "quick": a.quick,
        },
        "ours_s": ours_s,
        "ours_fit_only_s": fit_s,
        "choix_ilsr_pairwise_per_resample_s": choix_per,
        "choix_ilsr_pairwise_resamples_timed": n_choix,
        "choix_ilsr_pairwise_total_s": choix_total,
        "choix_ilsr_pairwise_total_is_scaled": n_choix < n_boot,
        "speedup_vs_choix_ilsr_pairwise": choix_total / ours_s,
        "choix_ilsr_pairwise_dense_total_s": dense_s,
        "speedup_vs_choix_dense": dense_s / ours_s,
        "speedup_fit_only_vs_choix_dense": dense_s / fit_s,
        "max_abs_delta_elo_vs_choix_ilsr_pairwise": d_sparse,
        "max_abs_delta_elo_vs_choix_dense": d_dense,
        "max_abs_delta_elo_point_estimate": d_point,
        "elo_tolerance": ELO_TOL,
        "within_elo_tolerance": max(d_sparse, d_dense, d_point) <= ELO_TOL,
        "elo": dict(zip(models, ci.elo.round(2).tolist())),
        "ci99": {
            m: [round(float(lo), 2), round(float(hi), 2)] for m, lo, hi in zip(models, ci.lo, ci.hi)
        },
        "true_elo_simulated": dict(zip(models, TRUE_ELO.tolist())),
        "repeats": repeats,
    }
    print(
        f"ours (vectorised, end to end): {ours_s:.3f} s for {n_boot} resamples "
        f"(fit only {fit_s:.3f} s)"
    )
    print(
        f"choix.ilsr_pairwise looped: {choix_per * 1e3:.1f} ms per resample "
        f"({n_choix} timed) -> {choix_total:.1f} s for {n_boot}: "
        f"{result['speedup_vs_choix_ilsr_pairwise']:.0f}x slower than ours"
    )
    print(
        f"choix.ilsr_pairwise_dense looped: {dense_s:.3f} s for {n_boot}: "
        f"{result['speedup_vs_choix_dense']:.1f}x (fit only {result['speedup_fit_only_vs_choix_dense']:.1f}x)"
    )
    print(
        f"max |dElo|: vs ilsr_pairwise {d_sparse:.2e}, vs dense {d_dense:.2e}, "
        f"point estimate {d_point:.2e} (tolerance {ELO_TOL}: "
        f"{'PASS' if result['within_elo_tolerance'] else 'FAIL'})"
    )

    if not a.no_sampler:
        try:
            fn = load_sampler_benchmark()
            if fn is None:
                print("benchmarks/t2i_sampler.py not found: sampler benchmark skipped")
            else:
                sampler = fn()
                print(f"sampler: {sampler}")
                result["sampler"] = sampler
        except Exception as e:  # report, but keep the evaluation numbers
            result["sampler_error"] = f"{type(e).__name__}: {e}"
            print(f"sampler benchmark failed: {result['sampler_error']}")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["machine"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "choix": getattr(choix, "__version__", "?"),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "peak_rss_mb": peak,
    }
    print(
        f"peak RSS {peak:.0f} MB; load average at end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    atomic_write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
