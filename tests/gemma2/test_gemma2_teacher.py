"""The teacher (alignlab.gemma2.teacher): its cache key follows what changes its weights, a
cached teacher gives the same results as a freshly trained one and keeps its stage's span."""

import dataclasses
import json

from alignlab.core.cache import cache_dir
from alignlab.core.run import RunSpec, execute, is_timing
from alignlab.gemma2 import Gemma2ForCausalLM
from alignlab.gemma2.teacher import (
    load_data,
    smoke_teacher,
    teacher_checkpoint,
    teacher_dir,
    teacher_key,
)

SEED = 3  # a seed no other test trains a smoke teacher with: its cache starts empty


def spec(tmp_path, name, **kw) -> RunSpec:
    return RunSpec("gemma2.distill", preset="smoke", seed=SEED, out=str(tmp_path / name),
                   quiet=True, threads=1, overrides=("teacher.cache=true",), **kw)  # fmt: skip


def metric_lines(run_dir, stages=None):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if stages is None or r["stage"] in stages]
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


def test_cached_teacher_is_reused_and_gives_identical_results(tmp_path):
    assert teacher_checkpoint(smoke_teacher(), seed=SEED, threads=1) is None
    first = execute(spec(tmp_path, "a"))
    assert "teacher: cached at" in (first.dir / "log.txt").read_text()
    second = execute(spec(tmp_path, "b"))
    assert "teacher: reusing the cached checkpoint" in (second.dir / "log.txt").read_text()
    assert (first.dir / "results.json").read_bytes() == (second.dir / "results.json").read_bytes()

    # the cached teacher still holds its stage's span: students keep their metric steps
    students = {f"student{i}_{o}" for i in (0, 1) for o in ("ntp", "kd")}
    assert metric_lines(second.dir) == metric_lines(first.dir, students)
    assert min(r["step"] for r in metric_lines(second.dir)) == smoke_teacher().train.steps + 1

    folder = teacher_checkpoint(smoke_teacher(), seed=SEED, threads=1)
    assert folder == teacher_dir(folder.name)
    assert {"config.json", "model.safetensors", "tokenizer.json", "teacher.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert teacher_checkpoint(smoke_teacher(), seed=SEED + 1, threads=1) is None
    teachers = cache_dir() / "gemma2" / "teachers"
    assert not [p for p in teachers.iterdir() if p.name.startswith(".")]  # no temp folder left

    r = first.results  # every student, each on the same token budget
    assert [s["d_model"] for s in r["students"]] == [16, 32]
    for s in r["students"]:
        for objective in ("ntp", "kd"):
            run = s[objective]
            assert run["tokens"] == 4 * 4 * 32  # steps x batch x seq_len: equal budgets
            assert run["curve"][0][0] == 0 and run["curve"][-1][0] == run["tokens"]
            assert run["val_ppl"] > 1
    assert r["teacher"]["params"] == sum(
        p.numel() for p in Gemma2ForCausalLM(smoke_teacher().model()).parameters()
    )


def test_teacher_key_follows_what_changes_the_weights():
    t = smoke_teacher()
    data = load_data(t)
    key = teacher_key(t, data, seed=0, threads=1)
    same = dataclasses.replace(t, train=dataclasses.replace(t.train, log_every=1, eval_every=5))
    assert teacher_key(same, data, seed=0, threads=1) == key
    assert teacher_key(dataclasses.replace(t, cache=True), data, seed=0, threads=1) == key
    for other in (
        dataclasses.replace(t, d_model=64),
        dataclasses.replace(t, sliding_window=4),
        dataclasses.replace(t, train=dataclasses.replace(t.train, lr=1e-3)),
    ):
        assert teacher_key(other, data, seed=0, threads=1) != key
    assert teacher_key(t, data, seed=1, threads=1) != key
    assert teacher_key(t, data, seed=0, threads=2) != key
    assert teacher_key(t, data, seed=0, device="cuda", threads=1) != key
