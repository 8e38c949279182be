"""Gemma Scope SAE training on a GPU: agreement with the CPU and throughput.

1. Agreement: the same SAE trained for 20 steps on the same batches on the CPU and on the
   GPU (fp32, TF32 off) ends with the same parameters up to float rounding.
2. Throughput: `SAETrainer.step` at the quick preset's size (d_in 192, d_sae 1536, batch
   1024), the SAELens comparison's size (256 / 4096 / 4096) and Gemma 2 2B's residual width
   at Gemma Scope's 16.4K (2304 / 16384 / 4096), in steps/s and tokens/s.
3. A frontier smoke run on the GPU (the whole pipeline: teacher, activations, SAEs, metrics).

    python benchmarks/gemmascope_gpu.py --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignlab.gemmascope.train import SAETrainConfig, SAETrainer, new_sae  # noqa: E402


def trained(device: str, batches, cfg, d_in: int) -> dict[str, torch.Tensor]:
    sae = new_sae(d_in, cfg, 1.0).to(device)
    tr = SAETrainer(sae, cfg, len(batches))
    for b in batches:
        tr.step(b.to(device))
    return {k: v.detach().cpu() for k, v in sae.state_dict().items()}


def agreement(device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    d_in = 64
    batches = [torch.randn(512, d_in, generator=g) / d_in**0.5 for _ in range(20)]
    cfg = SAETrainConfig(d_sae=512, lr=1e-3, l0_coefficient=1e-2, lr_warmup_frac=0.1)
    cpu = trained("cpu", batches, cfg, d_in)
    gpu = trained(device, batches, cfg, d_in)
    diff = {k: float((cpu[k] - gpu[k]).abs().max()) for k in cpu}
    return {"max_abs_diff": diff, "ok": all(v < 1e-3 for v in diff.values())}


def throughput(device: str, d_in: int, d_sae: int, batch: int, steps: int) -> dict:
    cfg = SAETrainConfig(d_sae=d_sae, lr=1e-3, l0_coefficient=1e-3)
    sae = new_sae(d_in, cfg, 1.0).to(device)
    tr = SAETrainer(sae, cfg, steps + 5)
    x = torch.randn(batch, d_in, device=device) / d_in**0.5
    for _ in range(5):
        tr.step(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        tr.step(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch": batch,
        "steps_per_s": steps / dt,
        "tokens_per_s": steps * batch / dt,
    }


def frontier(device: str, out: Path, preset: str, overrides: tuple[str, ...] = ()) -> dict:
    import alignlab.core.experiment as registry
    import alignlab.gemmascope.experiments  # noqa: F401  (registers the experiments)
    from alignlab.core.run import RunSpec, execute

    # Only gemmascope is needed: the other systems' optional dependencies (gymnasium) may be
    # missing on a bare GPU image.
    registry.load_systems = lambda *a, **k: None

    t = time.perf_counter()
    spec = RunSpec(
        "gemmascope.frontier", preset=preset, out=str(out), quiet=True, device=device,
        overrides=overrides,
    )  # fmt: skip
    r = execute(spec)
    return {"wall_s": time.perf_counter() - t, "claims": r.claims,
            "n_saes": len(r.results["saes"])}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gemmascope_gpu.json")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--frontier", nargs="*", metavar="KEY=VALUE",
        help="only run gemmascope.frontier's quick preset on the device with these overrides",
    )  # fmt: skip
    args = p.parse_args()
    if args.frontier is not None:
        out = Path(args.out).parent / "frontier"
        r = frontier(args.device, out, "quick", tuple(args.frontier))
        print(json.dumps(r["claims"], indent=1), f"wall {r['wall_s']:.0f} s", flush=True)
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    report["agreement"] = agreement(args.device)
    print("agreement", report["agreement"], flush=True)
    report["throughput"] = []
    for d_in, d_sae, batch, steps in ((192, 1536, 1024, 200), (256, 4096, 4096, 100),
                                      (2304, 16384, 4096, 30)):  # fmt: skip
        row = throughput(args.device, d_in, d_sae, batch, steps)
        print(row, flush=True)
        report["throughput"].append(row)
    try:
        smoke = frontier(args.device, Path(args.out).parent / "smoke", "smoke")
        report["frontier_smoke"] = {k: smoke[k] for k in ("wall_s", "n_saes")}
    except Exception as e:  # report, don't hide, a failure of the end-to-end run
        report["frontier_smoke"] = {"error": f"{type(e).__name__}: {e}"}
    print("frontier smoke", report["frontier_smoke"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
