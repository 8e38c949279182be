"""Stages, standalone contexts, metric truncation on resume, atomic folders, training state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignlab.core.checkpoint import Checkpointer, SimulatedCrash, crash_after_checkpoint
from alignlab.core.context import RunContext, last_committed_step, prepare_metrics, read_metrics
from alignlab.core.io import atomic_folder


def ctx_at(tmp_path, resume=False) -> RunContext:
    tmp_path.mkdir(exist_ok=True)
    return RunContext(None, None, "smoke", 0, tmp_path, resume=resume, quiet=True, name="t")


def test_stages_number_their_metric_lines_from_offsets_the_run_assigns(tmp_path):
    ctx = ctx_at(tmp_path)
    teacher = ctx.stage("teacher", 4)  # steps 0..4
    student = ctx.stage("student", 2)  # steps 5..7
    last = ctx.stage("last", 3)  # steps 8..11
    assert (teacher.offset, student.offset, last.offset) == (0, 5, 8)
    teacher.log_metrics(4, loss=1.0)
    student.log_metrics(0, loss=2.0)
    student.log_metrics(2, loss=3.0)
    assert ctx.metrics() == [
        {"step": 4, "stage": "teacher", "loss": 1.0},
        {"step": 5, "stage": "student", "loss": 2.0},
        {"step": 7, "stage": "student", "loss": 3.0},
    ]
    assert student.checkpoint.dir == tmp_path / "stages" / "student" / "checkpoint"
    with pytest.raises(ValueError, match="twice"):
        ctx.stage("teacher", 4)
    with pytest.raises(ValueError, match="no '/'"):
        ctx.stage("a/b", 1)


def test_resume_keeps_lines_up_to_the_newest_stage_checkpoint(tmp_path):
    ctx = ctx_at(tmp_path)
    teacher, student = ctx.stage("teacher", 10), ctx.stage("student", 10)
    for s in range(1, 11):
        teacher.log_metrics(s, loss=float(s))
    teacher.checkpoint.save(10, {"w": torch.zeros(1)})
    for s in range(1, 7):
        student.log_metrics(s, loss=float(s))
        if s == 4:
            student.checkpoint.save(4, {"w": torch.zeros(1)})
    assert last_committed_step(tmp_path) == 11 + 4  # the student's offset is 11
    assert prepare_metrics(tmp_path, resume=True) == 15
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 11)) + [12, 13, 14, 15]
    assert prepare_metrics(tmp_path, resume=False) is None
    assert read_metrics(tmp_path) == []


def test_standalone_context_prepares_its_folder(tmp_path):
    out = tmp_path / "cli"
    ctx = RunContext.standalone(out, "gemma2.train", config=None, quiet=True)
    ctx.log_metrics(1, loss=1.0)
    ctx.log_metrics(2, loss=0.5)
    ctx.checkpoint.save(1, {"w": torch.ones(1)})
    ctx.log("hello")
    again = RunContext.standalone(out, "gemma2.train", config=None, resume=True, quiet=True)
    assert again.resume and [r["step"] for r in again.metrics()] == [1]
    assert "hello" in (out / "log.txt").read_text()


def test_atomic_folder_swaps_in_whole_folders_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "art"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("crash while building")
    assert (target / "a.txt").read_text() == "one"  # the old folder is untouched
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole
    with atomic_folder(target, replace=False) as tmp:  # someone else's is kept
        (tmp / "c.txt").write_text("late")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary left


def test_training_state_round_trips_modules_optimisers_and_generators(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    net[1].weight = net[0].weight  # a tied weight is stored once and restored to both
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    rng, gen = np.random.default_rng(3), torch.Generator().manual_seed(4)
    rng.random(2)
    ck = Checkpointer(tmp_path)
    ck.save(3, {"extra": torch.arange(3)}, {"note": 1}, modules={"net": net},
            optimizers={"adam": opt}, generators={"rng": rng, "gen": gen})  # fmt: skip
    expected = (rng.random(), torch.rand(1, generator=gen).item(), opt.state_dict())

    net2 = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    net2[1].weight = net2[0].weight
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    rng2, gen2 = np.random.default_rng(99), torch.Generator().manual_seed(99)
    loaded = ck.load()
    loaded.restore(modules={"net": net2}, optimizers={"adam": opt2},
                   generators={"rng": rng2, "gen": gen2})  # fmt: skip
    assert loaded.step == 3 and loaded.state == {"note": 1}
    assert torch.equal(loaded.tensors["extra"], torch.arange(3))
    assert {k.split(".")[0] for k in loaded.tensors} == {"extra", "module", "optim", "generator"}
    assert "module.net.1.weight" not in loaded.tensors  # the alias
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert rng2.random() == expected[0] and torch.rand(1, generator=gen2).item() == expected[1]
    sd = opt2.state_dict()
    assert sd["param_groups"][0]["lr"] == 0.1
    for pid, st in expected[2]["state"].items():
        assert torch.equal(sd["state"][pid]["exp_avg"], st["exp_avg"])


def test_crash_hook_fires_after_the_nth_checkpoint_is_on_disk(tmp_path):
    ck = Checkpointer(tmp_path)
    with crash_after_checkpoint(2):
        ck.save(1, {})
        with pytest.raises(SimulatedCrash):
            ck.save(2, {})
        ck.save(3, {})  # fires once
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 3


def test_checkpoint_state_keeps_nan_as_a_float(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(1, {}, {"rows": [{"step": 1, "loss": float("nan"), "best": float("inf")}]})
    row = ck.load().state["rows"][0]
    assert np.isnan(row["loss"]) and row["best"] == float("inf")
