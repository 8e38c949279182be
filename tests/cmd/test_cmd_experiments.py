"""Smoke runs of every cmd experiment, and exact resume of a run killed mid-training."""

import json

import pytest

from alignlab.cmd import train as trainlib
from alignlab.core.run import RunSpec, execute, run_status


class Crash(RuntimeError):
    pass


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(experiment, preset="smoke", out=str(tmp_path / name), quiet=True, **kw)


@pytest.mark.parametrize("experiment", ["cmd.stitching", "cmd.triangle", "cmd.pointmaze"])
def test_smoke_preset_runs_and_evaluates_claims(tmp_path, experiment):
    out = execute(spec(tmp_path, experiment))
    assert run_status(out.dir) == "complete"
    assert out.claims and all(c["measured"] is not None for c in out.claims)
    assert list((out.dir / "plots").glob("*.png"))


def test_exact_dsd_claim_holds_at_smoke_scale(tmp_path):
    claims = {c["id"]: c for c in execute(spec(tmp_path, "cmd.triangle")).claims}
    assert claims["dsd_is_quasimetric"]["holds"]
    assert claims["learned_head_triangle"]["holds"]


def test_killed_run_resumes_to_the_same_results(tmp_path, monkeypatch):
    overrides = ("methods=[cmd2,crl,qrl]",)
    reference = execute(spec(tmp_path, "cmd.stitching", "ref", overrides=overrides)).results
    calls = {"n": 0}
    real = trainlib.to_torch

    def crashing(batch, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 35:  # unit 2 (crl, seed 0), step 15: after its checkpoint at 10
            raise Crash("killed")
        return real(batch, *a, **kw)

    monkeypatch.setattr(trainlib, "to_torch", crashing)
    with pytest.raises(Crash):
        execute(spec(tmp_path, "cmd.stitching", "crashy", overrides=overrides))
    monkeypatch.setattr(trainlib, "to_torch", real)
    d = tmp_path / "crashy"
    assert run_status(d) == "failed"
    resumed = execute(spec(tmp_path, "cmd.stitching", "crashy", overrides=overrides, resume=True))
    assert resumed.results == reference
    assert (d / "results.json").read_bytes() == (tmp_path / "ref" / "results.json").read_bytes()
    assert "resuming from step 30" in (d / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def test_parallel_units_give_the_sequential_results(tmp_path):
    overrides = ("methods=[cmd2,gcbc]",)
    seq = execute(spec(tmp_path, "cmd.stitching", "seq", overrides=(*overrides, "loop.workers=1")))
    par = execute(spec(tmp_path, "cmd.stitching", "par", overrides=(*overrides, "loop.workers=2")))
    assert par.results == seq.results
    assert not (tmp_path / "par" / "units").exists()  # finished units' checkpoints are removed
    rows = [
        json.loads(line) for line in (tmp_path / "par" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {(r["method"], r["seed"]) for r in rows if "success" in r} == {
        (m, s) for m in ("cmd2", "gcbc") for s in (0, 1)
    }


def test_killed_parallel_run_resumes_each_unit_from_its_checkpoint(tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    overrides = ("methods=[cmd2,crl]", "loop.steps=60", "loop.workers=2")
    reference = execute(spec(tmp_path, "cmd.stitching", "ref", overrides=overrides)).results
    run = spec(tmp_path, "cmd.stitching", "killed", overrides=overrides)
    ctx = multiprocessing.get_context("fork")
    parent = ctx.Process(target=execute, args=(run,))
    parent.start()
    units = tmp_path / "killed" / "units"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some unit has checkpointed mid-training
        if any(units.glob("*/checkpoint/state.json")):
            break
        time.sleep(0.05)
    else:
        pytest.fail("no unit checkpoint appeared")
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    time.sleep(1.5)  # orphaned workers notice within 25 steps and exit
    assert run_status(tmp_path / "killed") == "running"
    resumed = execute(spec(tmp_path, "cmd.stitching", "killed", overrides=overrides, resume=True))
    assert resumed.results == reference
    assert "resuming from its checkpoint at step" in (tmp_path / "killed" / "log.txt").read_text()
