import json

import pytest

from alignlab.core.errors import AlignlabError
from alignlab.core.resources import available_cores
from alignlab.core.run import run_status
from alignlab.core.sweep import expand_grid, parse_seeds, split_top_level, sweep


def test_parse_seeds_and_grid():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,1,1") == [1, 3]
    with pytest.raises(AlignlabError, match="expected non-negative seeds"):
        parse_seeds("a-b")
    with pytest.raises(AlignlabError, match="expected non-negative seeds"):
        parse_seeds("-1")
    assert split_top_level("1,[2,3],'a,b'") == ["1", "[2,3]", "'a,b'"]
    assert expand_grid(["lr=0.1,0.2", "dim=2"]) == [("lr=0.1", "dim=2"), ("lr=0.2", "dim=2")]
    assert expand_grid([]) == [()]


def test_a_sweep_never_runs_more_threads_than_cores_by_default(tmp_path, toy):
    cores = available_cores()
    res = sweep("toy.regression", [0, 1], preset="smoke", out=tmp_path / "two", show_progress=False)
    workers = min(cores, 2)
    threads = {json.loads((o.dir / "run.json").read_text())["threads"] for o in res.outcomes}
    assert threads == {max(1, cores // workers)} and workers * max(threads) <= max(cores, 2)
    res = sweep("toy.regression", [0, 1], preset="smoke", out=tmp_path / "one", workers=1,
                show_progress=False)  # fmt: skip
    assert {json.loads((o.dir / "run.json").read_text())["threads"] for o in res.outcomes} == {
        cores
    }
    with pytest.raises(AlignlabError, match="--threads must be a positive integer"):
        sweep("toy.regression", [0], preset="smoke", out=tmp_path / "x", threads=0)


def test_local_sweep_aggregates_and_resumes_only_missing(tmp_path, toy):
    out = tmp_path / "sw"
    res = sweep(
        "toy.regression",
        [0, 1, 2],
        ["lr=0.1,0.05"],
        preset="smoke",
        out=out,
        workers=2,
        show_progress=False,
    )
    assert len(res.outcomes) == 6 and not any(o.skipped for o in res.outcomes)
    agg = json.loads((out / "aggregate.json").read_text())
    cell = agg["cells"][0]
    assert cell["overrides"] == ["lr=0.1"] and cell["seeds"] == [0, 1, 2]
    vals = cell["metrics"]["final_loss"]["values"]
    assert cell["metrics"]["final_loss"]["mean"] == pytest.approx(sum(vals) / 3)
    assert len(cell["curves"]["loss_curve"]["mean"]) == 20
    assert (out / "aggregate.md").exists() and (out / "plots" / "loss_curve.png").exists()

    # a killed sweep: one run never finished (status running), one run never started
    killed = out / "lr=0.05" / "seed1"
    meta = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**meta, "status": "running"}))
    (killed / "results.json").unlink()
    (killed / "claims.json").unlink()
    import shutil

    shutil.rmtree(out / "lr=0.05" / "seed2")
    assert run_status(killed) == "running"
    again = sweep(
        "toy.regression",
        [0, 1, 2],
        ["lr=0.1,0.05"],
        preset="smoke",
        out=out,
        workers=2,
        show_progress=False,
    )
    reran = [str(o.dir) for o in again.outcomes if not o.skipped]
    assert sorted(reran) == sorted(
        [str(killed.resolve()), str((out / "lr=0.05" / "seed2").resolve())]
    )
    # the re-run reproduces the original numbers
    assert again.aggregate["cells"][1]["metrics"]["final_loss"]["values"] == pytest.approx(
        res.aggregate["cells"][1]["metrics"]["final_loss"]["values"]
    )


def test_sweep_validates_every_cell_before_running(tmp_path, toy):
    with pytest.raises(AlignlabError, match="expected a finite float"):
        sweep(
            "toy.regression",
            [0],
            ["lr=0.1,fast"],
            preset="smoke",
            out=tmp_path / "s",
            show_progress=False,
        )
    assert not (tmp_path / "s").exists()
    with pytest.raises(AlignlabError, match="Valid backends: local, ray"):
        sweep("toy.regression", [0], [], backend="slurm", out=tmp_path / "s", show_progress=False)


def test_really_killed_sweep_completes_only_missing_runs(tmp_path, toy):
    """SIGKILL a sweep process mid-way; the re-run reuses every run that had finished."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "killed"
    args = dict(seeds=[0, 1, 2, 3, 4, 5], sets=["sleep_s=0.05"], preset="smoke")
    code = (
        "import toy_experiment\n"
        "from alignlab.core.sweep import sweep\n"
        f"sweep('toy.regression', {args['seeds']}, {args['sets']}, preset='smoke', "
        f"out={str(out)!r}, workers=2, show_progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(toy.__file__).parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # each run takes ~1 s; kill after two have finished
        if sum(run_status(d) == "complete" for d in out.glob("*/seed*")) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its pool workers must stop themselves
    proc.wait()
    # orphaned pool workers notice their parent is gone and exit (within ~0.5 s; allow 15 s)
    deadline, orphans = time.time() + 15, True
    while orphans and time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)  # signal 0: is anyone of the killed sweep's group alive?
            time.sleep(0.1)
        except ProcessLookupError:
            orphans = False
    if orphans:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not orphans, "pool workers outlived the killed sweep"
    # read only now: a worker may finish the run it was in before it notices the kill
    statuses = {d.name: run_status(d) for d in out.glob("*/seed*")}
    finished = sorted(k for k, v in statuses.items() if v == "complete")
    assert 2 <= len(finished) < 6, statuses
    res = sweep("toy.regression", show_progress=False, out=out, workers=2, **args)
    reused = sorted(o.dir.name for o in res.outcomes if o.skipped)
    assert reused == finished
    assert all(run_status(o.dir) == "complete" for o in res.outcomes)
    clean = sweep("toy.regression", show_progress=False, out=tmp_path / "clean", workers=2, **args)
    assert [o.results for o in res.outcomes] == [o.results for o in clean.outcomes]


def test_local_backend_needs_no_ray_and_ray_backend_says_how_to_install(tmp_path, toy, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = sweep(
        "toy.regression",
        [0],
        [],
        preset="smoke",
        out=tmp_path / "l",
        workers=1,
        show_progress=False,
    )
    assert res.outcomes[0].claims[0]["holds"]
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[ray\]'"):
        sweep(
            "toy.regression",
            [0],
            [],
            preset="smoke",
            out=tmp_path / "r",
            backend="ray",
            show_progress=False,
        )


def test_duplicate_grid_values_make_one_cell(tmp_path, toy):
    res = sweep(
        "toy.regression",
        [0],
        ["lr=0.1,0.1,0.10"],
        preset="smoke",
        out=tmp_path,
        workers=1,
        show_progress=False,
    )
    assert len(res.outcomes) == 1 and res.aggregate["cells"][0]["seeds"] == [0]
