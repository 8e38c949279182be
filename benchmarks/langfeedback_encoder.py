"""langfeedback's alignment step: the mean-first trajectory encoder against the official order.

The official `NLTrajAutoencoder.forward` (USC-Lira/language-preference-learning,
`lang_pref_learning/model/encoder.py`) runs Linear(24 -> 128) - ReLU - Linear(128 -> 384) on
every time step and then takes the mean over time. The second Linear commutes with the mean,
so `TrajEncoder.forward` averages the hidden layer first and applies the second Linear once per
trajectory. Both are timed on the same training step (encode 512 trajectories x 80 steps,
4,096 triplets, the alignment loss, backward, Adam), one thread, from the same weights; the
gradients of the first step are compared. Medians of `--repeats` steps; the machine's load
average at the start and end ("load_start", "load") and peak RSS are printed.

Usage: python benchmarks/langfeedback_encoder.py [--trajectories 512] [--horizon 80]
       [--repeats 20] [--out PATH]     (writes docs/img/langfeedback_encoder.json by default)
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab.core.io import atomic_write_json  # noqa: E402
from alignlab.langfeedback import latent as L  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "langfeedback_encoder.json"


def step(enc, opt, x, a, b, e, official: bool) -> list[torch.Tensor]:
    phi = enc.forward_per_step(x) if official else enc(x)
    loss = L.alignment_loss(phi[a], phi[b], e)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.detach().clone() for p in enc.parameters()]
    opt.step()
    return grads


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trajectories", type=int, default=512)
    p.add_argument("--horizon", type=int, default=80)
    p.add_argument("--triplets", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(args.trajectories, args.horizon, 24)), dtype=torch.float32)
    a = torch.as_tensor(rng.integers(0, args.trajectories, args.triplets))
    b = torch.as_tensor(rng.integers(0, args.trajectories, args.triplets))
    e = torch.nn.functional.normalize(torch.randn(args.triplets, L.LATENT), dim=-1)
    torch.manual_seed(0)
    ours = L.TrajEncoder()
    ours.set_normaliser(x.numpy())
    official = copy.deepcopy(ours)

    # equivalence: the first step's gradients in float64
    o64, f64 = copy.deepcopy(ours).double(), copy.deepcopy(ours).double()
    g_ours = step(o64, torch.optim.Adam(o64.parameters()), x.double(), a, b, e.double(), False)
    g_off = step(f64, torch.optim.Adam(f64.parameters()), x.double(), a, b, e.double(), True)
    max_grad = max(float((u - v).abs().max()) for u, v in zip(g_ours, g_off))

    opt_o, opt_f = (
        torch.optim.Adam(ours.parameters(), 3e-3),
        torch.optim.Adam(official.parameters(), 3e-3),
    )
    t_ours, t_off = [], []
    for _ in range(args.repeats):  # interleaved
        t0 = time.perf_counter()
        step(ours, opt_o, x, a, b, e, False)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step(official, opt_f, x, a, b, e, True)
        t_off.append(time.perf_counter() - t0)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load": os.getloadavg(),
        "load_start": load_start,
        "shape": [args.trajectories, args.horizon, 24],
        "triplets": args.triplets,
        "ours_ms": 1000 * statistics.median(t_ours),
        "official_ms": 1000 * statistics.median(t_off),
        "ratio": statistics.median(t_off) / statistics.median(t_ours),
        "max_grad_diff_float64": max_grad,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"machine: {out['machine']}; load {load_start[0]:.2f} -> {out['load'][0]:.2f}")
    print(
        f"alignment step, {args.trajectories} x {args.horizon} trajectories, {args.triplets} "
        f"triplets: mean-first {out['ours_ms']:.1f} ms vs per-step (official) "
        f"{out['official_ms']:.1f} ms: {out['ratio']:.1f}x (target >= 3x); max |Δgrad| "
        f"{max_grad:.1e} in float64 (target <= 1e-6); peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
