import json
import os

import pytest

from alignlab.core import io
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, run_status


def spec(tmp_path, name="run", **kw):
    kw.setdefault("preset", "quick")
    return RunSpec("toy.regression", out=str(tmp_path / name), quiet=True, **kw)


def test_run_directory_layout(tmp_path, toy):
    out = execute(spec(tmp_path))
    d = out.dir
    for f in ("config.yaml", "run.json", "results.json", "claims.json", "metrics.jsonl", "log.txt"):
        assert (d / f).is_file(), f
    assert (d / "checkpoint" / "tensors.safetensors").is_file()
    claims = json.loads((d / "claims.json").read_text())
    assert claims[0].keys() >= {"id", "statement", "measured", "holds"}
    assert claims[0]["holds"] is True
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 40
    assert run_status(d) == "complete"


def test_same_seed_identical_results_and_different_seed_differs(tmp_path, toy):
    a = execute(spec(tmp_path, "a", seed=3)).dir / "results.json"
    b = execute(spec(tmp_path, "b", seed=3)).dir / "results.json"
    c = execute(spec(tmp_path, "c", seed=4)).dir / "results.json"
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_finished_run_is_not_rerun_unless_forced(tmp_path, toy):
    first = execute(spec(tmp_path))
    assert not first.skipped
    again = execute(spec(tmp_path))
    assert again.skipped and again.results == first.results
    forced = execute(spec(tmp_path, force=True))
    assert not forced.skipped and forced.results == first.results


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, toy):
    reference = execute(spec(tmp_path, "ref", seed=1)).results
    toy.CRASH_AT = 25  # dies after the checkpoint at step 20
    with pytest.raises(toy.Crash):
        execute(spec(tmp_path, "crashy", seed=1))
    d = tmp_path / "crashy"
    assert run_status(d) == "failed" and not (d / "results.json").exists()
    toy.CRASH_AT = -1
    with pytest.raises(AlignlabError, match="--resume"):
        execute(spec(tmp_path, "crashy", seed=1))  # no silent restart
    resumed = execute(spec(tmp_path, "crashy", seed=1, resume=True))
    assert resumed.results == reference
    assert "resuming from step 20" in (d / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # no duplicated metric lines


def test_different_config_in_same_dir_is_refused(tmp_path, toy):
    execute(spec(tmp_path))
    with pytest.raises(AlignlabError, match="holds a different run.*config"):
        execute(spec(tmp_path, overrides=("lr=0.05",)))
    with pytest.raises(AlignlabError, match="differs in: seed"):
        execute(spec(tmp_path, seed=9))


def test_force_refuses_folders_that_are_not_runs(tmp_path, toy):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    with pytest.raises(AlignlabError, match="not an alignlab run"):
        execute(spec(tmp_path, "precious", force=True))
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_bad_input_writes_nothing(tmp_path, toy):
    with pytest.raises(AlignlabError, match="Valid keys"):
        execute(spec(tmp_path, overrides=("nope=1",)))
    with pytest.raises(AlignlabError, match="Unknown preset"):
        execute(spec(tmp_path, preset="huge"))
    with pytest.raises(AlignlabError, match="Unknown device"):
        execute(spec(tmp_path, device="tpu"))
    assert not (tmp_path / "run").exists()


def test_atomic_write_crash_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    io.atomic_write_json(path, {"a": 1})

    class Boom(Exception):
        pass

    def crash(*args, **kwargs):
        raise Boom

    monkeypatch.setattr(os, "fsync", crash)  # die after writing, before the rename
    with pytest.raises(Boom):
        io.atomic_write_json(path, {"a": 2, "big": list(range(10000))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_checkpoint_swap_survives_crash_between_renames(tmp_path, toy):
    from alignlab.core.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path)
    ck.save(1, {"w": [1.0, 2.0]}, {"note": "first"})
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")  # as if killed mid-swap
    loaded = ck.load()
    assert loaded.step == 1 and loaded.state == {"note": "first"}
    assert loaded.tensors["w"].tolist() == [1.0, 2.0]


def test_to_jsonable_handles_numpy_and_nan():
    import numpy as np

    out = io.to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (1, 2)})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": "nan", "d": [1, 2]}


def test_force_keeps_files_that_are_not_the_runs(tmp_path, toy):
    d = tmp_path / "r"
    execute(spec(tmp_path, "r"))
    (d / "notes.txt").write_text("mine")
    execute(spec(tmp_path, "r", force=True))
    assert (d / "notes.txt").read_text() == "mine"


def test_folder_with_a_stray_config_yaml_is_not_a_run(tmp_path, toy):
    d = tmp_path / "p"
    (d / "src").mkdir(parents=True)
    (d / "config.yaml").write_text("lr: 1\n")
    (d / "src" / "thesis.tex").write_text("precious")
    for force in (False, True):
        with pytest.raises(AlignlabError, match="not empty and is not an alignlab run"):
            execute(spec(tmp_path, "p", force=force))
    assert (d / "src" / "thesis.tex").read_text() == "precious"
    assert (d / "config.yaml").read_text() == "lr: 1\n"


def test_negative_seed_and_file_out_are_refused_before_writing(tmp_path, toy):
    with pytest.raises(AlignlabError, match="non-negative"):
        execute(spec(tmp_path, "neg", seed=-1))
    assert not (tmp_path / "neg").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AlignlabError, match="is a file"):
        execute(spec(tmp_path, "afile"))


def test_files_get_the_usual_permissions(tmp_path, toy):
    d = execute(spec(tmp_path)).dir
    mask = os.umask(0)
    os.umask(mask)
    for name in ("results.json", "claims.json", "config.yaml", "run.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_run_directory_is_locked_while_it_runs(tmp_path, toy):
    from alignlab.core.run import RunLock

    d = tmp_path / "r"
    with RunLock(d), pytest.raises(AlignlabError, match="another process"):
        execute(spec(tmp_path, "r"))
