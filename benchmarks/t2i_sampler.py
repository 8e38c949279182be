"""Our DDIM + CFG sampler against diffusers' `StableDiffusionPipeline.__call__`, in one run.

Both sample the same randomly initialised quick-preset model (AutoencoderKL [16, 32, 32],
UNet2DConditionModel (32, 64), CLIPTextModel hidden 64; 32x32 images from 8x8x4 latents)
from the same initial latents (`T2IPipeline.initial_latents`): `T2IPipeline.__call__` and
the diffusers pipeline built from the same components (`T2IPipeline.to_diffusers`, i.e.
what `DiffusionPipeline.from_pretrained` gives for a saved folder), one batch of n_prompts,
guidance 4, `steps` DDIM steps. Reported: whether the uint8 images are identical (max
absolute difference), the seconds per call of each (median of interleaved repeats after a
warm-up; CPU seconds of this process, which other processes on a shared machine disturb less
than wall time, and wall seconds) and the throughput ratio (diffusers' CPU seconds / ours;
target >= 1.0). Both do the same arithmetic (that is why the images are identical); ours
saves only the per-call overhead (input checks, the untruncated-prompt check, the progress
bar), so expect a ratio near 1. Also reported: the machine's load average at the start and
end of the call and this process's peak RSS (`resource.getrusage`; both sides together, and
whatever the process did before when t2i_eval.py runs this).

Usage: python benchmarks/t2i_sampler.py [--n-prompts 64] [--steps 20] [--repeats 5]
Prints the result dict as JSON. One torch thread.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: the timings are per thread

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

WORDS = ("a an the one two three red green blue yellow purple orange circle circles square "
         "squares triangle triangles small large on white black grey background left right "
         "of above below").split()  # fmt: skip


def _prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


def benchmark_sampler(
    n_prompts: int = 64, steps: int = 20, repeats: int = 5, guidance: float = 4.0
) -> dict:
    """Identical images and the throughput ratio of our sampler vs diffusers' (docstring)."""
    import torch

    from alignlab.core.resources import torch_threads
    from alignlab.t2i.model import (
        ModelConfig,
        build_text_encoder,
        build_tokenizer,
        build_unet,
        build_vae,
    )
    from alignlab.t2i.sample import T2IPipeline, diffusers_images

    load_start = os.getloadavg()
    with torch_threads(1):
        cfg = ModelConfig()
        tok = build_tokenizer(WORDS, cfg.max_len)
        ours = T2IPipeline(
            build_vae(cfg, seed=1),
            build_text_encoder(cfg, len(tok), seed=2),
            tok,
            build_unet(cfg, seed=3),
            scaling_factor=0.8,
        )
        theirs = ours.to_diffusers()
        prompts, seed = _prompts(n_prompts), 0
        latents = ours.initial_latents(n_prompts, seed)

        def run_ours():
            return ours(prompts, seed, guidance=guidance, steps=steps, batch=n_prompts)

        def run_theirs():
            return diffusers_images(theirs, prompts, latents, guidance, steps)

        a, b = run_ours(), run_theirs()  # warm-up, and the images to compare
        cpu = {"ours": [], "diffusers": []}
        wall = {"ours": [], "diffusers": []}
        for _ in range(repeats):
            for name, fn in (("ours", run_ours), ("diffusers", run_theirs)):
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
        s_ours, s_theirs = statistics.median(cpu["ours"]), statistics.median(cpu["diffusers"])
        return {
            "n_prompts": n_prompts,
            "steps": steps,
            "guidance": guidance,
            "identical": bool(np.array_equal(a, b)),
            "max_abs_diff": int(np.abs(a.astype(np.int64) - b).max()),
            "ours_cpu_s_per_call": s_ours,
            "diffusers_cpu_s_per_call": s_theirs,
            "ours_wall_s_per_call": statistics.median(wall["ours"]),
            "diffusers_wall_s_per_call": statistics.median(wall["diffusers"]),
            "ours_images_per_cpu_s": n_prompts / s_ours,
            "diffusers_images_per_cpu_s": n_prompts / s_theirs,
            "throughput_ratio": s_theirs / s_ours,
            "torch": torch.__version__,
            "threads": 1,
            "load_avg_start": list(load_start),
            "load_avg_end": list(os.getloadavg()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-prompts", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(json.dumps(benchmark_sampler(args.n_prompts, args.steps, args.repeats), indent=2))


if __name__ == "__main__":
    main()
