"""Gemma Scope SAE training on a GPU: agreement with the CPU and throughput.

1. Agreement: the same SAE trained for 20 steps on the same batches on the CPU and on the
   GPU (fp32, TF32 off) ends with the same parameters up to float rounding.
2. Throughput: `SAETrainer.step` at the quick preset's size (d_in 192, d_sae 1536, batch
   1024), the SAELens comparison's size (256 / 4096 / 4096) and Gemma 2 2B's residual width
   at Gemma Scope's 16.4K (2304 / 16384 / 4096), in steps/s and tokens/s.
3. SAELens on the same GPU (when `sae_lens` imports; otherwise the skip and its reason are
   printed and recorded): `gemmascope_saelens.py`'s throughput comparison, our
   `SAETrainer.step` against SAELens' `SAETrainer.step` with the settings matched as in its
   run (b)/(c), at Gemma 2 2B's residual width and Gemma Scope's 16.4K dictionary with its
   batch (d_in 2304, d_sae 16384, batch 4096), once per precision, reported separately:
   `ieee` (fp32, TF32 off), `tf32` (TF32 matmuls), `bf16` (torch.autocast to bfloat16). Each
   precision: 1 warm-up step, 2 profiled steps, then 3 interleaved repeats of 20 timed steps
   per side (63 steps each; at ≲ 0.1 s a step on an H100, well under a minute per
   precision with the setup). Reported: steps/s, tokens/s, the ratio ours / SAELens, each
   side's peak memory, and FVU / L0 of both SAEs on a held-out batch before and after.
   The functions are `gemmascope_saelens.py`'s, imported from its file.
4. A frontier smoke run on the GPU (the whole pipeline: teacher, activations, SAEs, metrics).

    python benchmarks/gemmascope_gpu.py --out gpu.json

A dry run of section 3 alone at tiny sizes (d_in 32, d_sae 128, batch 256, 2 steps; no GPU
needed, `tf32` is skipped off CUDA):

    python benchmarks/gemmascope_gpu.py --device cpu --smoke --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

# before anything imports tqdm (it reads TQDM_* when imported): SAELens' progress bars
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

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


# d_in, d_sae, batch, timed steps per repeat, repeats, profiled steps
SAELENS_GPU = (2304, 16384, 4096, 20, 3, 2)
SAELENS_SMOKE = (32, 128, 256, 2, 1, 1)


def load_saelens_benchmark():
    """`benchmarks/gemmascope_saelens.py` as a module (its functions, not a copy)."""
    path = Path(__file__).resolve().with_name("gemmascope_saelens.py")
    spec = importlib.util.spec_from_file_location("gemmascope_saelens", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def saelens_same_device(device: str, sizes: tuple[int, ...] = SAELENS_GPU) -> dict:
    """`gemmascope_saelens.py`'s throughput comparison on `device`, per precision."""
    gs = load_saelens_benchmark()
    try:
        import sae_lens
    except ImportError as e:
        reason = (
            f"sae_lens does not import ({type(e).__name__}: {e}); it needs the `anchors` "
            "extra (pip install -e '.[anchors]')"
        )
        print(f"SAELens on the same GPU: skipped: {reason}", flush=True)
        return {"skipped": reason}
    d_in, d_sae, batch, steps, repeats, profile_steps = sizes
    cuda = torch.device(device).type == "cuda"
    out = {"sae_lens": sae_lens.__version__, "device": device, "by_precision": {}}
    for precision in gs.PRECISIONS:
        if precision == "tf32" and not cuda:
            reason = "tf32 is a CUDA matmul mode"
            print(f"SAELens {precision}: skipped: {reason}", flush=True)
            out["by_precision"][precision] = {"skipped": reason}
            continue
        argv = ["--throughput-only", "--device", device, "--tp-precision", precision]
        argv += ["--tp-d-in", str(d_in), "--tp-d-sae", str(d_sae), "--tp-batch", str(batch)]
        argv += ["--tp-steps", str(steps), "--tp-repeats", str(repeats)]
        argv += ["--profile-steps", str(profile_steps), "--out", os.devnull]
        t = time.perf_counter()
        try:
            r = gs.throughput(gs.parse_args(argv))
        except Exception as e:  # report, don't hide, a failure of one precision
            r = {"error": f"{type(e).__name__}: {e}"}
            print(f"SAELens {precision}: {r['error']}", flush=True)
            out["by_precision"][precision] = r
            continue
        finally:
            if cuda:
                torch.cuda.empty_cache()
        r["wall_s"] = time.perf_counter() - t
        out["by_precision"][precision] = r
        print(f"SAELens {precision}: {saelens_summary(r)}", flush=True)
    return out


def saelens_summary(r: dict) -> str:
    parts = []
    for name in ("ours", "saelens"):
        s = r[name]
        if "skipped" in s:
            parts.append(f"{name} skipped ({s['skipped']})")
            continue
        mem = s["peak_mem_bytes"]
        mem = f"{mem / 2**20:.0f} MiB" if mem is not None else "n/a"
        parts.append(
            f"{name} {s['steps_per_s']:.3g} steps/s, {s['tokens_per_s']:.3g} tok/s, peak {mem}"
        )
    ratio = r["ratio_ours_over_saelens_steps_per_s"]
    parts.append(f"ratio ours/SAELens {ratio:.2f}" if ratio is not None else "no ratio")
    eq = r["equivalence"]["after"]
    parts.append(
        "after {} steps: ".format(r["equivalence"]["steps_each"])
        + ", ".join(
            f"{n} FVU {v['fvu']:.4g} L0 {v['l0']:.4g}" if v is not None else f"{n} skipped"
            for n, v in eq.items()
        )
    )
    return "; ".join(parts)


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
    p.add_argument(
        "--smoke", action="store_true",
        help="only section 3 (SAELens on the same device) at tiny sizes, e.g. --device cpu",
    )  # fmt: skip
    args = p.parse_args()
    if args.smoke:
        report = {"torch": torch.__version__, "python": platform.python_version()}
        report["saelens_same_gpu"] = saelens_same_device(args.device, SAELENS_SMOKE)
        Path(args.out).write_text(json.dumps(report, indent=2))
        return
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
    report["saelens_same_gpu"] = saelens_same_device(args.device)
    try:
        smoke = frontier(args.device, Path(args.out).parent / "smoke", "smoke")
        report["frontier_smoke"] = {k: smoke[k] for k in ("wall_s", "n_saes")}
    except Exception as e:  # report, don't hide, a failure of the end-to-end run
        report["frontier_smoke"] = {"error": f"{type(e).__name__}: {e}"}
    print("frontier smoke", report["frontier_smoke"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
