"""langfeedback on a GPU: the smoke presets on CUDA, and stage 2 with MiniLM co-finetuned.

1. `langfeedback.latent`, `.improve` and `.reward` at their smoke presets with `--device cuda`
   (the claims are not expected to hold at that size: this checks the code path).
2. The paper's stage 2 (all of MiniLM at lr 1e-4, Φ at 1e-3) on the quick pool, after the quick
   stage 1, for `--steps` steps: sign accuracy on the test and stress splits against the
   adapter's stage 2 for the same steps, and seconds per step.

    python benchmarks/langfeedback_gpu.py --steps 300 --out gpu.json

Prints one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignlab.core.run import RunSpec, execute  # noqa: E402
from alignlab.core.seeding import generator  # noqa: E402
from alignlab.langfeedback import latent as L  # noqa: E402
from alignlab.langfeedback.experiments import common as C  # noqa: E402
from alignlab.langfeedback.minilm import MiniLMEncoder, embed  # noqa: E402


def smoke_runs(device: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("langfeedback.latent", "langfeedback.improve", "langfeedback.reward"):
            t = time.perf_counter()
            execute(RunSpec(name, preset="smoke", out=f"{tmp}/{name}", quiet=True, device=device))
            r = json.loads(Path(f"{tmp}/{name}/run.json").read_text())
            out[name] = {"status": r["status"], "device": r["device"], "s": time.perf_counter() - t}
    return out


def accuracy(enc, d, emb_by_split) -> dict:
    enc.eval()
    with torch.no_grad():
        phi = enc(torch.as_tensor(d.obs["test"])).numpy()
    return {
        split: L.pair_accuracy(phi, d.feats["test"], emb_by_split[split], d.cls[split])["accuracy"]
        for split in ("test", "stress")
    }


def stage1(device: str):
    """The quick data and one encoder seed's stage 1 (shared by both stage-2 modes)."""
    lc = C.LatentConfig()
    d = C.load_data(lc.data, 0)
    torch.manual_seed(0)
    enc = L.TrajEncoder(obs_dim=d.obs["train"].shape[-1])
    enc.set_normaliser(d.obs["train"])
    rng = generator(0, "langfeedback-triplets", 0)
    val = (d.obs["val"], d.feats["val"], d.emb["val"], d.cls["val"])
    args = (d.obs["train"], d.feats["train"], d.emb["train"], d.cls["train"], val)
    L.train_stage(enc, None, *args, lc.stage1, rng, device=device)
    return lc, d, args, enc, rng


def stage2(device: str, steps: int, mode: str, base) -> dict:
    lc, d, args, enc0, rng0 = base
    enc, rng = copy.deepcopy(enc0), copy.deepcopy(rng0)
    cfg = L.StageConfig(steps=steps, lr=1e-3, eval_every=max(1, steps // 10))
    if mode == "adapter":
        adapter = L.Adapter()
        t = time.perf_counter()
        L.train_stage(enc, adapter, *args, cfg, rng, device=device)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            emb = {s: adapter(torch.as_tensor(d.emb[s])).numpy() for s in ("test", "stress")}
    else:
        lm = MiniLMEncoder()
        side = L.Finetuned(lm, d.sentences["train"], d.sentences["val"])
        t = time.perf_counter()
        L.train_stage(enc, None, *args, cfg, rng, device=device, language=side, lm_lr=lc.lm_lr)
        seconds = time.perf_counter() - t
        lm.eval()
        with torch.no_grad():
            emb = {s: lm.bank(d.sentences[s]).encode_all().numpy() for s in ("test", "stress")}
    return {"steps": steps, "s_per_step": seconds / max(1, steps), **accuracy(enc, d, emb)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    embed(["warm up the cache"])
    report = {
        "machine": {
            "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "smoke": smoke_runs(a.device),
    }
    base = stage1(a.device)
    report["stage1"] = accuracy(base[3], base[1], {s: base[1].emb[s] for s in ("test", "stress")})
    for mode in ("adapter", "finetune"):
        report[f"stage2_{mode}"] = stage2(a.device, a.steps, mode, base)
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    assert all(v["status"] == "complete" for v in report["smoke"].values())
    assert np.isfinite(report["stage2_finetune"]["test"])


if __name__ == "__main__":
    main()
