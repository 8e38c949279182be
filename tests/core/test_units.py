"""`alignlab.core.units.run_units`: independent units inside one run, in order or in forked
workers, each unit's result checkpointed when it finishes so a resumed run skips it.

The units here are deterministic functions of their key that record every call (key, pid,
torch threads) in a file, so the tests see which units ran, where, and how often."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from alignlab.core.checkpoint import Checkpointer
from alignlab.core.config import PRESETS
from alignlab.core.context import RunContext
from alignlab.core.errors import AlignlabError
from alignlab.core.experiment import Experiment
from alignlab.core.units import run_units

KEYS = ["alpha", "beta", "gamma", "delta"]
SIZE = 3


@dataclass
class _Cfg:
    n: int = 1


def run_context(tmp_path, name="run", resume=False) -> RunContext:
    exp = Experiment(
        name="core.units_test", paper="-", description="-", config=_Cfg,
        presets={p: _Cfg() for p in PRESETS}, run=lambda ctx: {},
    )  # fmt: skip
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return RunContext(exp, _Cfg(), "smoke", 0, d, "cpu", resume, True, np.random.default_rng(0))


def expected_result(key: str) -> dict:
    """What unit `key` returns (JSON-exact values, so a checkpointed result compares equal)."""
    x = float(sum(map(ord, key)))
    return {"key": key, "value": x / 4, "trace": [x, x + 0.5], "index": KEYS.index(key)}


class Unit:
    """fn(key, uctx): logs SIZE metric lines, advances SIZE steps, records its call in a file;
    raises for the keys in `fail`; sleeps `slow[key]` seconds first."""

    def __init__(self, tmp_path, fail=(), slow=None):
        self.calls = tmp_path / "calls.txt"
        self.fail, self.slow = set(fail), dict(slow or {})

    def __call__(self, key, uctx):
        assert uctx.key == key
        with open(self.calls, "a") as f:
            f.write(f"{key} {os.getpid()} {torch.get_num_threads()}\n")
        time.sleep(self.slow.get(key, 0.0))
        if key in self.fail:
            raise RuntimeError(f"boom in {key}")
        out = expected_result(key)
        for step in range(1, SIZE + 1):
            uctx.log_metrics(step, loss=out["value"] + step, tag=f"{key}-{step}")
            uctx.advance(1)
        return out

    def called(self) -> list[tuple[str, int, int]]:
        if not self.calls.exists():
            return []
        rows = [line.split() for line in self.calls.read_text().splitlines()]
        return [(k, int(pid), int(threads)) for k, pid, threads in rows]


def expected_metrics(stride: int, keys=KEYS) -> list[dict]:
    rows = []
    for index, key in enumerate(keys):
        value = expected_result(key)["value"]
        for step in range(1, SIZE + 1):
            rows.append(
                {"step": index * stride + step, "unit": key, "loss": value + step,
                 "tag": f"{key}-{step}"}
            )  # fmt: skip
    return rows


def by_step(rows):
    return sorted(rows, key=lambda r: (r["step"], r["unit"]))


# ---- results and metric lines --------------------------------------------------------------


@pytest.mark.parametrize("stride", [None, 10])
def test_sequential_results_in_key_order_and_metric_lines(tmp_path, stride):
    ctx = run_context(tmp_path)
    unit = Unit(tmp_path)
    out = run_units(ctx, KEYS, unit, size=SIZE, stride=stride, workers=1)
    assert list(out) == KEYS
    assert out == {k: expected_result(k) for k in KEYS}
    s = SIZE if stride is None else stride
    assert ctx.metrics() == expected_metrics(s)  # appended in unit order, at index*stride+step
    assert [k for k, _, _ in unit.called()] == KEYS
    assert {pid for _, pid, _ in unit.called()} == {os.getpid()}  # in this process
    assert Checkpointer(ctx.dir).last_step() == len(KEYS) * s


def test_forked_workers_give_the_same_results_as_sequential(tmp_path):
    seq = run_units(run_context(tmp_path, "seq"), KEYS, Unit(tmp_path / "seq"), SIZE, workers=1)
    ctx = run_context(tmp_path, "par")
    # the first unit finishes last: results still come back in key order
    unit = Unit(tmp_path / "par", slow={"alpha": 1.0})
    par = run_units(ctx, KEYS, unit, size=SIZE, stride=10, workers=2)
    assert par == seq
    assert list(par) == KEYS
    assert by_step(ctx.metrics()) == expected_metrics(10)
    rows = ctx.metrics()
    assert rows[-1]["unit"] == "alpha"  # appended when it finished, at its own steps
    calls = unit.called()
    assert sorted(k for k, _, _ in calls) == sorted(KEYS)  # each unit exactly once
    pids = {pid for _, pid, _ in calls}
    assert os.getpid() not in pids and len(pids) == len(KEYS)  # one forked process per unit
    assert {threads for _, _, threads in calls} == {1}
    assert Checkpointer(ctx.dir).last_step() == len(KEYS) * 10


# ---- failures --------------------------------------------------------------------------------


def test_failing_unit_in_a_worker_raises_alignlab_error_naming_it(tmp_path):
    ctx = run_context(tmp_path)
    with pytest.raises(AlignlabError, match="unit gamma failed") as info:
        run_units(ctx, KEYS, Unit(tmp_path, fail={"gamma"}), SIZE, workers=2)
    assert "boom in gamma" in str(info.value)  # the worker's traceback comes with it


def test_failing_unit_in_process_raises_alignlab_error_naming_it(tmp_path):
    ctx = run_context(tmp_path)
    with pytest.raises(AlignlabError, match="gamma"):
        run_units(ctx, KEYS, Unit(tmp_path, fail={"gamma"}), SIZE, workers=1)


def test_failing_unit_in_process_keeps_the_finished_units(tmp_path):
    ctx = run_context(tmp_path)
    with pytest.raises(AlignlabError, match="unit gamma failed"):
        run_units(ctx, KEYS, Unit(tmp_path, fail={"gamma"}), SIZE, workers=1)
    assert Checkpointer(ctx.dir).last_step() == 2 * SIZE  # alpha and beta were checkpointed


def test_duplicate_keys_raise(tmp_path):
    ctx = run_context(tmp_path)
    unit = Unit(tmp_path)
    with pytest.raises(ValueError, match="unique"):
        run_units(ctx, ["alpha", "beta", "alpha"], unit, SIZE, workers=1)
    assert unit.called() == []  # checked before anything runs


# ---- resume ----------------------------------------------------------------------------------


def test_resume_skips_finished_units_and_equals_an_uninterrupted_run(tmp_path):
    ref_ctx = run_context(tmp_path, "ref")
    reference = run_units(ref_ctx, KEYS, Unit(tmp_path / "ref"), SIZE, stride=5, workers=1)

    (tmp_path / "cut").mkdir()
    failing = Unit(tmp_path / "cut", fail={"gamma"})
    with pytest.raises(AlignlabError, match="unit gamma failed"):
        run_units(run_context(tmp_path, "cut"), KEYS, failing, SIZE, stride=5, workers=1)
    assert [k for k, _, _ in failing.called()] == ["alpha", "beta", "gamma"]

    fixed = Unit(tmp_path / "cut")  # same calls file: it counts both attempts
    ctx = run_context(tmp_path, "cut", resume=True)
    resumed = run_units(ctx, KEYS, fixed, SIZE, stride=5, workers=1)
    keys_called = [k for k, _, _ in fixed.called()]
    assert keys_called == ["alpha", "beta", "gamma", "gamma", "delta"]  # 1-2 not rerun
    assert resumed == reference
    assert list(resumed) == KEYS
    assert ctx.metrics() == ref_ctx.metrics() == expected_metrics(5)  # nothing lost or doubled

    # a third call finds everything done and runs nothing
    again = run_units(run_context(tmp_path, "cut", resume=True), KEYS, fixed, SIZE, stride=5)
    assert again == reference
    assert len(fixed.called()) == 5


def test_resume_in_workers_runs_only_the_unfinished_units(tmp_path):
    ref = run_units(run_context(tmp_path, "ref"), KEYS, Unit(tmp_path / "ref"), SIZE, workers=1)
    d = tmp_path / "cut"
    d.mkdir()
    run_units(run_context(tmp_path, "cut"), KEYS[:2], Unit(d), SIZE, workers=2)  # 2 finished
    unit = Unit(d)
    ctx = run_context(tmp_path, "cut", resume=True)
    out = run_units(ctx, KEYS, unit, SIZE, workers=2)
    assert out == ref and list(out) == KEYS
    assert sorted(k for k, _, _ in unit.called()) == sorted(KEYS)  # each unit exactly once
    assert by_step(ctx.metrics()) == expected_metrics(SIZE)


# ---- review fixes ----------------------------------------------------------------------------


def test_an_unpicklable_result_fails_its_unit_instead_of_hanging(tmp_path):
    ctx = run_context(tmp_path)

    def fn(key, uctx):
        return {"f": (lambda: 0)} if key == "alpha" else expected_result(key)

    with pytest.raises(AlignlabError, match="unit alpha failed"):
        run_units(ctx, KEYS[:2], fn, SIZE, workers=2)


def test_steps_outside_the_stride_are_refused(tmp_path):
    def fn(key, uctx):
        uctx.log_metrics(SIZE + 1, loss=1.0)
        return {}

    with pytest.raises(AlignlabError, match="outside"):
        run_units(run_context(tmp_path), KEYS[:1], fn, SIZE, workers=1)


def test_lines_of_a_unit_that_did_not_finish_are_dropped_on_resume(tmp_path):
    ctx = run_context(tmp_path)
    run_units(ctx, KEYS[:2], Unit(tmp_path), SIZE, workers=1)
    # a crash between writing gamma's lines and recording it as done leaves orphan lines
    ctx.log_metrics(2 * SIZE + 1, unit="gamma", loss=-1.0)
    run_units(ctx, KEYS, Unit(tmp_path), SIZE, workers=1)
    assert by_step(ctx.metrics()) == expected_metrics(SIZE)  # gamma's lines once, not twice


# ---- checkpoints inside a unit ---------------------------------------------------------------


def counting_unit(steps=6, every=2):
    """A unit that adds numbers from its own stream, logging and checkpointing every `every`
    steps; killed mid-way and resumed, it must end where an uninterrupted unit ends."""

    def fn(key, uctx):
        rng = np.random.default_rng(uctx.substream(key))
        total, start = 0.0, 0
        ck = uctx.checkpoint.load()
        if ck is not None:
            total, start = ck.state["total"], ck.step
            ck.restore(generators={"rng": rng})
        for step in uctx.track(range(start, steps)):
            total += float(rng.random())
            if (step + 1) % every == 0:
                uctx.log_metrics(step + 1, total=total)
                uctx.checkpoint.save(step + 1, {}, {"total": total}, generators={"rng": rng})
        return {"total": total}

    return fn


@pytest.mark.parametrize("workers", [1, 2])
def test_a_unit_killed_mid_way_resumes_from_its_own_checkpoint(tmp_path, workers):
    from alignlab.core.checkpoint import SimulatedCrash, crash_after_checkpoint

    ref_ctx = run_context(tmp_path, "ref")
    reference = run_units(ref_ctx, KEYS[:2], counting_unit(), size=6, workers=workers)
    ctx = run_context(tmp_path, "cut")
    with crash_after_checkpoint(2), pytest.raises((SimulatedCrash, AlignlabError)):
        run_units(ctx, KEYS[:2], counting_unit(), size=6, workers=workers)
    saved = sorted((tmp_path / "cut" / "units").glob("*/checkpoint/state.json"))
    assert saved  # a unit stopped mid-way, with its checkpoint on disk
    resumed_ctx = run_context(tmp_path, "cut", resume=True)
    resumed = run_units(resumed_ctx, KEYS[:2], counting_unit(), size=6, workers=workers)
    assert resumed == reference
    assert by_step(resumed_ctx.metrics()) == by_step(ref_ctx.metrics())  # none lost or doubled
    assert "resuming from its checkpoint at step" in (tmp_path / "cut" / "log.txt").read_text()
    assert not (tmp_path / "cut" / "units").exists()  # finished units' folders are removed


def test_a_worker_that_dies_without_reporting_is_named(tmp_path):
    def fn(key, uctx):
        if key == "beta":
            os._exit(3)
        return {}

    with pytest.raises(AlignlabError, match="the worker running unit beta died .exit code 3"):
        run_units(run_context(tmp_path), KEYS[:2], fn, SIZE, workers=2)


def test_units_in_process_run_on_one_thread_and_restore_the_count(tmp_path):
    torch.set_num_threads(2)
    try:
        unit = Unit(tmp_path)
        run_units(run_context(tmp_path), KEYS[:1], unit, SIZE, workers=1)
        assert {threads for _, _, threads in unit.called()} == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
