"""ESR on a GPU machine: the authors' code at its defaults beside our paper preset, in parallel.

One prepared run of at most `--deadline` seconds (default 540) on a many-core GPU machine:

1. The authors' gridworld code, unchanged, at its defaults on 2/5/7/10 boxes (and at our quick
   hyperparameters on 2/5), through the anchor harness `../shared/anchors/esr-official/`
   (`drive.py`: its shims for current JAX, stubbed wandb, one process per run, stopped at the
   deadline). Pass the harness folder with `--anchor`; it must hold `official/` (the authors'
   `agents/ envs/ networks/ buffers.py train_grid.py`, commit a56a370), and JAX, dm-haiku,
   jmp, simple-pytree and optax must import.
2. Our gridworld `paper` preset (the conv torso, the authors' update order, repr_lr 1e-4,
   100 envs x 100/100/100 updates) for `--epochs` epochs at each box count, ESR and the random
   robot, `--seeds` seeds, one process per box count. ESR's networks train on the CPU (they
   are small; `--device` is recorded, not used), about 5-7 s an epoch on one core, so the
   default 30 epochs fit the deadline beside the authors' processes on a 16-core machine.

Writes `$OUT/esr_gpu.json` (our returns per box count and seed, the authors' last logged epoch
and training return per run) and prints it. The authors' code logs its training return (steps
at goal in its rollouts), ours evaluates the trained robot on 128 episodes: compare the curves'
levels against the random robot, not the two numbers directly.

    OUT=/tmp/out python benchmarks/esr_gpu.py --anchor ../shared/anchors/esr-official \\
        --deadline 540 --epochs 30 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOXES = (2, 5, 7, 10)


def ours(box: int, a, out: Path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "alignlab.cli", "run", "esr.gridworld", "--preset", "paper",
        "--set", f"obstacles=[{box}]", "--set", "methods=[esr,random]",
        "--set", f"n_seeds={a.seeds}", "--set", f"loop.epochs={a.epochs}",
        "--set", f"loop.log_every={max(1, a.epochs // 10)}",
        "--device", a.device, "--workers", str(a.seeds), "--out", str(out / f"ours-b{box}"),
    ]  # fmt: skip
    log = open(out / f"ours-b{box}.log", "w")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def collect_ours(out: Path) -> dict:
    res = {}
    for box in BOXES:
        path = out / f"ours-b{box}" / "results.json"
        if not path.exists():
            res[box] = None
            continue
        per = json.loads(path.read_text())["per"]
        res[box] = {m: per[m][str(box)]["return"] for m in per}
    return res


def collect_official(out: Path) -> dict:
    path = out / "official_runs.jsonl"
    last: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            last[row["run"]] = row
    return last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--anchor", type=Path, help="the esr-official harness folder (step 1)")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds for everything")
    p.add_argument("--epochs", type=int, default=30, help="our paper-preset epochs")
    p.add_argument("--seeds", type=int, default=2, help="our seeds per box count")
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    if a.anchor is not None:  # fail in seconds, not at the deadline, on a wrong set-up
        missing = [f for f in ("drive.py", "official/train_grid.py") if not (a.anchor / f).exists()]
        if missing:
            sys.exit(f"--anchor {a.anchor}: missing {', '.join(missing)} (see its README)")
        probe = "import jax, haiku, jmp, optax, simple_pytree"
        if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode:
            sys.exit("the authors' code needs jax, dm-haiku, jmp, optax and simple-pytree")
    t0 = time.time()
    procs = {f"ours-b{b}": ours(b, a, out) for b in BOXES}
    if a.anchor is not None:
        procs["official"] = subprocess.Popen(
            [sys.executable, str(a.anchor / "drive.py"), str(a.deadline - 30)],
            stdout=open(out / "official.log", "w"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ, OUT=str(out)),
        )
    while time.time() - t0 < a.deadline and any(q.poll() is None for q in procs.values()):
        time.sleep(10)
    for q in procs.values():
        if q.poll() is None:
            q.terminate()
    report = {
        "seconds": time.time() - t0,
        "returncodes": {k: q.wait() for k, q in procs.items()},
        "ours": collect_ours(out),
        "official_last_epoch": collect_official(out),
        "settings": vars(a) | {"anchor": str(a.anchor), "deadline": a.deadline},
    }
    text = json.dumps(report, indent=2, default=str)
    (out / "esr_gpu.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
