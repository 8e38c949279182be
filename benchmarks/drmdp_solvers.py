"""DR-MDP solvers side by side: dynamic programming against exact enumeration, and DP scaling.

(a) On models where both run (the paper's five examples and random small stochastic models),
    DP and enumeration must give the same optimal values, and DP's greedy policy must lie in the
    exact optimal set; the table shows how much faster DP is.
(b) The DP real-time solve time as |S|·|Θ|·H grows (|A| = 10, 4 successors per (s, θ, a)), as a
    log-log plot, and the headline |S| = 1000, |Θ| = 20, |A| = 10, H = 100 (must be < 2 s).
(c) The headline against the reference: the state-major loop that `dp` ran before its
    action-major one (q[x, a], the maximum and argmax over a short last axis), kept here op for
    op (`reference_induction`). Both in one run, interleaved, median of the repeats; the values,
    policy and Q-values must be equal bit for bit; the peak of numpy's allocations
    (tracemalloc) and the machine's load average are printed beside the times.
After (a) and (b), the load average at the start and then, the process's CPU seconds per wall
second and its peak RSS so far are printed too.

Usage: python benchmarks/drmdp_solvers.py [--quick]
Writes docs/img/drmdp_dp_scaling.png and docs/img/drmdp_benchmark.json. Single thread.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: the timings are per thread, before numpy starts its pools

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import _bench  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alignlab.drmdp import dp  # noqa: E402
from alignlab.drmdp.exact import ExactSolver  # noqa: E402
from alignlab.drmdp.examples import EXAMPLES  # noqa: E402
from alignlab.drmdp.model import random_drmdp  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img"
HEADLINE = dict(n_states=1000, n_thetas=20, n_actions=10, horizon=100)


def objectives_of(model):
    out = [("real_time", None), ("initial", None), ("natural_shifts", None), ("myopic", None)]
    out += [("privileged", th) for th in model.thetas]
    return out + ([("final", None)] if model.is_deterministic else [])


def compare(name, model, repeats):
    """Solve every DP objective both ways; assert agreement; return the timings."""
    t0 = time.perf_counter()
    solver = ExactSolver(model)
    exact = {key: solver.solve(*key) for key in objectives_of(model)}
    exact_s = time.perf_counter() - t0
    dp_s = np.inf
    for _ in range(repeats):  # best of `repeats`: DP runs in microseconds here
        t0 = time.perf_counter()
        solved = {key: dp.solve_dp(model, *key, keep_q=False) for key in objectives_of(model)}
        dp_s = min(dp_s, time.perf_counter() - t0)
    for key, sol in solved.items():
        ref = exact[key]
        assert tuple(int(sol.policy[t, s, th]) for t, s, th in ref.points) in ref.policies, (
            name,
            key,
        )
        if key[0] != "myopic":
            assert abs(sol.value - float(ref.optimal_value)) < 1e-9, (name, key)
    return {
        "model": name,
        "sizes": [model.n_states, model.n_thetas, model.n_actions, model.horizon],
        "stochastic": not model.is_deterministic,
        "n_policies": solver.n_policies,
        "n_objectives": len(exact),
        "exact_s": exact_s,
        "dp_s": dp_s,
        "speedup": exact_s / dp_s,
    }


def time_real_time(rng, n_states, n_thetas, n_actions, horizon, repeats, keep_q=True):
    model = random_drmdp(rng, n_states, n_thetas, n_actions, horizon, branching=4)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dp.solve_dp(model, "real_time", keep_q=keep_q)
        best = min(best, time.perf_counter() - t0)
    return best


def reference_induction(model, rewards):
    """The unconstrained state-major backward induction `dp` ran before (Q kept): q[x, a] =
    r + P V, V = max_a q, greedy with near-ties to the no-op, then to the lowest index."""
    H, X, A = model.horizon, model.n_aug, model.n_actions
    v, tol, noop = np.zeros(X), 1e-9, model.noop_index
    policy, q_all = np.empty((H, X), dtype=np.int64), np.empty((H, X, A))
    for t in reversed(range(H)):
        q = rewards + np.einsum("rk,rk->r", model.probs, v[model.successors]).reshape(X, A)
        best = q.max(axis=1, keepdims=True)
        near_best = q >= best - tol * (1.0 + np.abs(best))
        policy[t] = np.where(near_best[:, noop], noop, near_best.argmax(axis=1))
        v = q.max(axis=1)
        q_all[t] = q
    return v, policy, q_all


def against_reference(repeats: int) -> dict:
    """(c): the headline solve, ours and the reference, interleaved; equality; memory; load."""
    model = random_drmdp(np.random.default_rng(1), **HEADLINE, branching=4)
    rewards = dp.real_time_rewards(model)
    load = os.getloadavg()
    times, peaks, out = {"ours": [], "reference": []}, {}, {}
    run = {
        "ours": lambda: dp._constrained_induction(model, rewards, None, None, True, 1e-9, None),
        "reference": lambda: reference_induction(model, rewards),
    }
    for _ in range(repeats):
        for name, fn in run.items():
            tracemalloc.start()
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
            peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    v, _, policy, q = out["ours"]
    ref_v, ref_policy, ref_q = out["reference"]
    equal = bool(
        np.array_equal(v, ref_v) and np.array_equal(policy, ref_policy) and np.array_equal(q, ref_q)
    )
    med = {k: float(np.median(t)) for k, t in times.items()}
    row = {
        "ours_s": med["ours"],
        "reference_s": med["reference"],
        "speedup": med["reference"] / med["ours"],
        "bit_identical": equal,
        "peak_alloc_mb": peaks,
        "load_avg_start": load,
        "load_avg_end": os.getloadavg(),
        "repeats": repeats,
    }
    print(
        f"\n(c) headline, Q kept, median of {repeats} interleaved (tracemalloc on in both): ours "
        f"{row['ours_s']:.3f} s, reference (state-major) {row['reference_s']:.3f} s, "
        f"{row['speedup']:.2f}x; values, policy and Q bit-identical: {equal}; peak allocations "
        f"{peaks['ours']:.0f} MB vs {peaks['reference']:.0f} MB; load average "
        f"{load[0]:.2f} at start, {row['load_avg_end'][0]:.2f} at end"
    )
    assert equal, "the action-major induction differs from the reference"
    return row


def main(quick: bool) -> dict:
    stats = _bench.RunStats()
    rng = np.random.default_rng(0)
    repeats = 2 if quick else 3

    # (a) DP against enumeration
    models = [(name, fn()) for name, fn in EXAMPLES.items()]
    random_sizes = [(2, 2, 2, 2), (2, 2, 2, 3), (3, 2, 2, 3)] + (
        [] if quick else [(2, 2, 2, 4), (2, 2, 3, 3)]
    )
    models += [
        (f"random {s}x{t}x{a} H={h}", random_drmdp(rng, s, t, a, h, branching=2, exact=True))
        for s, t, a, h in random_sizes
    ]
    rows = [compare(name, model, repeats=20) for name, model in models]
    print("\n(a) DP vs exact enumeration (same optimal values; DP policy in the exact optimal set)")
    print(
        f"{'model':26s} {'|S|,|Θ|,|A|,H':>14s} {'policies':>9s} {'exact s':>9s} {'DP s':>9s} {'speedup':>8s}"
    )
    for r in rows:
        print(
            f"{r['model']:26s} {','.join(map(str, r['sizes'])):>14s} {r['n_policies']:9d} {r['exact_s']:9.4f} {r['dp_s']:9.5f} {r['speedup']:7.0f}x"
        )
    after_exact = stats.report()
    print(stats.line(after_exact))

    # (b) DP scaling
    grid = [(50, 5, 10), (100, 10, 20), (250, 10, 40), (500, 20, 50), (1000, 20, 100)]
    grid += [] if quick else [(2000, 20, 100), (2000, 20, 200)]
    scaling = []
    for n_states, n_thetas, horizon in grid:
        seconds = time_real_time(rng, n_states, n_thetas, 10, horizon, repeats)
        scaling.append(
            {
                "n_states": n_states,
                "n_thetas": n_thetas,
                "n_actions": 10,
                "horizon": horizon,
                "size": n_states * n_thetas * horizon,
                "seconds": seconds,
            }
        )
    sizes = np.array([s["size"] for s in scaling], float)
    secs = np.array([s["seconds"] for s in scaling])
    slope = float(
        np.polyfit(np.log(sizes[1:]), np.log(secs[1:]), 1)[0]
    )  # skip the overhead-bound smallest
    print("\n(b) DP real-time solve time (|A| = 10, 4 successors per (s, θ, a), Q-values kept)")
    for s in scaling:
        print(
            f"|S|={s['n_states']:5d} |Θ|={s['n_thetas']:3d} H={s['horizon']:4d}  |S||Θ|H={s['size']:>9,d}  {s['seconds']:.3f} s"
        )
    print(f"log-log slope: {slope:.2f}")

    headline = time_real_time(np.random.default_rng(1), **HEADLINE, repeats=repeats)
    headline_no_q = time_real_time(
        np.random.default_rng(1), **HEADLINE, repeats=repeats, keep_q=False
    )
    print(
        f"\nheadline |S|=1000 |Θ|=20 |A|=10 H=100: {headline:.3f} s (Q kept), {headline_no_q:.3f} s (no Q); target < 2 s"
    )
    print(stats.line())
    assert headline < 2.0, f"real-time DP took {headline:.2f} s (> 2 s)"
    reference = against_reference(3 if quick else 7)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(sizes, secs, "o-", label=f"DP real time (slope {slope:.2f})")
    ax.loglog(sizes, secs[-1] * sizes / sizes[-1], ":", color="grey", label="linear")
    ax.scatter(
        [HEADLINE["n_states"] * HEADLINE["n_thetas"] * HEADLINE["horizon"]],
        [headline],
        marker="*",
        s=150,
        color="C3",
        zorder=3,
        label=f"|S|=1000, |Θ|=20, H=100: {headline:.2f} s",
    )
    ax.axhline(2.0, color="C3", lw=0.8, ls="--", label="2 s target")
    ax.set(
        xlabel="|S|·|Θ|·H", ylabel="seconds (1 thread)", title="DR-MDP backward induction, |A| = 10"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "drmdp_dp_scaling.png", dpi=120)
    result = {
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "threads": 1,
            **stats.report(),
        },
        "dp_vs_exact_run": after_exact,
        "dp_vs_exact": rows,
        "dp_scaling": scaling,
        "log_log_slope": slope,
        "headline": {
            **HEADLINE,
            "branching": 4,
            "seconds": headline,
            "seconds_without_q": headline_no_q,
            "target_seconds": 2.0,
        },
        "against_reference": reference,
    }
    (OUT / "drmdp_benchmark.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / 'drmdp_dp_scaling.png'} and {OUT / 'drmdp_benchmark.json'}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller grids, fewer repeats")
    main(parser.parse_args().quick)
