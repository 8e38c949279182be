"""The training command line (`python -m alignlab.gemma2.cli`): data-parallel under torchrun,
2 gloo processes give the loss curve of one process on the same global batch; resume and
errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from alignlab.core.context import read_metrics
from alignlab.gemma2.cli import main

ARGS = [
    *("--set", "steps=5", "--set", "batch_size=4", "--set", "seq_len=16"),
    *("--set", "lr=0.01", "--set", "warmup_steps=1", "--set", "log_every=1"),
    *("--set", "eval_every=5", "--set", "eval_batches=1", "--set", "checkpoint_every=2"),
    *("--model-set", "vocab_size=64", "--model-set", "num_layers=2", "--quiet"),
]


def run_single(out) -> int:
    return main(["--out", str(out), *ARGS])  # on one thread (conftest.py)


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "alignlab.gemma2.cli", "--out", str(tmp_path / "ddp"), *ARGS,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run_single(tmp_path / "single") == 0

    ddp, single = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    assert [r["step"] for r in ddp] == [r["step"] for r in single]  # one line per event: rank 0
    for key in ("train_loss", "grad_norm", "val_loss"):
        a = [r[key] for r in ddp if key in r]
        b = [r[key] for r in single if key in r]
        assert len(a) == len(b) > 0
        assert a == pytest.approx(b, abs=1e-5, rel=1e-5), key
    losses = [r["train_loss"] for r in single if "train_loss" in r]
    assert losses[-1] < losses[0] - 0.3  # the curve moves: the comparison means something
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("ddp", "single")]
    assert results[0]["final_val_loss"] == pytest.approx(results[1]["final_val_loss"], abs=1e-5)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == ["checkpoint", "config.json", "log.txt", "metrics.jsonl", "results.json"]


def test_command_line_resume_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_single(out) == 0
    first = json.loads((out / "results.json").read_text())
    lines = read_metrics(out)
    assert run_single(out) == 2  # a checkpoint is there: no silent restart
    assert capsys.readouterr().err == (
        f"error: {out} holds a checkpoint; pass --resume or choose another --out.\n"
    )
    assert main(["--out", str(out), "--resume", *ARGS]) == 0  # finished: reloads, same result
    assert json.loads((out / "results.json").read_text()) == first
    assert read_metrics(out) == lines  # nothing trained again, nothing logged twice
    assert main(["--out", str(tmp_path / "b"), "--set", "objective=distil", *ARGS]) == 2
    assert capsys.readouterr().err == (
        "error: Invalid config: objective must be one of ntp, kd, got 'distil'\n"
    )
    assert main(["--out", str(tmp_path / "c"), "--data", "missing.npy", *ARGS]) == 2
    assert capsys.readouterr().err == (
        "error: --data 'missing.npy': expected 'synthetic' or an existing .npy file of token ids.\n"
    )
    assert not (tmp_path / "b").exists()
