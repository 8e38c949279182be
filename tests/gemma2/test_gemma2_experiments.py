"""Smoke runs of the gemma2 experiments, teacher caching, exact resume, and their claims."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from alignlab.core.run import RunSpec, execute, run_status
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM
from alignlab.gemma2 import experiments as ex


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """One corpus/tokenizer cache for this module, never the user's ~/.cache."""
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(experiment, preset="smoke", out=str(tmp_path / name), quiet=True, **kw)


@pytest.mark.parametrize("experiment", ["gemma2.distill", "gemma2.window"])
def test_smoke_preset_runs_and_evaluates_claims(tmp_path, experiment):
    out = execute(spec(tmp_path, experiment))
    assert run_status(out.dir) == "complete"
    assert out.claims and all(c["measured"] is not None for c in out.claims)
    assert list((out.dir / "plots").glob("*.png"))


def test_distill_results_have_every_student_and_curve(tmp_path):
    r = execute(spec(tmp_path, "gemma2.distill")).results
    assert [s["d_model"] for s in r["students"]] == [16, 32]
    for s in r["students"]:
        for objective in ("ntp", "kd"):
            run = s[objective]
            assert run["tokens"] == 4 * 4 * 32  # steps x batch x seq_len: equal budgets
            assert run["curve"][0][0] == 0 and run["curve"][-1][0] == run["tokens"]
            assert run["val_ppl"] > 1
    assert r["teacher"]["params"] == sum(
        p.numel() for p in Gemma2ForCausalLM(ex._smoke_teacher().model()).parameters()
    )


def test_cached_teacher_is_reused_and_gives_identical_results(tmp_path):
    overrides = ("teacher.cache=true",)
    first = execute(spec(tmp_path, "gemma2.distill", "a", overrides=overrides))
    assert "teacher: cached at" in (first.dir / "log.txt").read_text()
    second = execute(spec(tmp_path, "gemma2.distill", "b", overrides=overrides))
    assert "reusing the cached checkpoint" in (second.dir / "log.txt").read_text()
    assert (first.dir / "results.json").read_bytes() == (second.dir / "results.json").read_bytes()
    assert ex.teacher_checkpoint(ex._smoke_teacher(), seed=0, threads=1) is not None
    assert ex.teacher_checkpoint(ex._smoke_teacher(), seed=1, threads=1) is None
    teachers = Path(os.environ["ALIGNLAB_CACHE"]) / "gemma2" / "teachers"
    assert not [p for p in teachers.iterdir() if p.name.endswith(".tmp")]  # no temp folder left


def test_teacher_key_follows_what_changes_the_weights():
    t = ex._smoke_teacher()
    data = ex.load_data(t)
    key = ex.teacher_key(t, data, seed=0, threads=1)
    same = dataclasses.replace(t, train=dataclasses.replace(t.train, log_every=1, eval_every=5))
    assert ex.teacher_key(same, data, seed=0, threads=1) == key
    for other in (
        dataclasses.replace(t, d_model=64),
        dataclasses.replace(t, sliding_window=4),
        dataclasses.replace(t, train=dataclasses.replace(t.train, lr=1e-3)),
    ):
        assert ex.teacher_key(other, data, seed=0, threads=1) != key
    assert ex.teacher_key(t, data, seed=1, threads=1) != key
    assert ex.teacher_key(t, data, seed=0, threads=2) != key


class Crash(RuntimeError):
    pass


def test_killed_run_resumes_to_the_same_results(tmp_path, monkeypatch):
    reference = execute(spec(tmp_path, "gemma2.distill", "ref"))
    real = ex.train

    def crashing(*a, key, **kw):
        def on_step(step, metrics):
            if key == "student1_ntp" and step == 3:  # after its checkpoint at step 2
                raise Crash("killed")

        return real(*a, key=key, on_step=on_step, **kw)

    monkeypatch.setattr(ex, "train", crashing)
    with pytest.raises(Crash):
        execute(spec(tmp_path, "gemma2.distill", "crashy"))
    monkeypatch.setattr(ex, "train", real)
    d = tmp_path / "crashy"
    assert run_status(d) == "failed"
    resumed = execute(spec(tmp_path, "gemma2.distill", "crashy", resume=True))
    assert resumed.results == reference.results
    assert (d / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    log = (d / "log.txt").read_text()
    assert "resuming from step" in log and "resuming at step" in log

    def lines(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]

    assert lines(d) == lines(reference.dir)  # no line lost or repeated across stages


def test_distill_claim_needs_kd_below_ntp_at_every_size():
    def result(pairs):
        students = [{"params": 1e6, "ntp": {"val_ppl": n}, "kd": {"val_ppl": k}} for n, k in pairs]
        return {"students": students, "teacher": {"val_ppl": 10.0}}

    assert ex._claim_distill(result([(30, 25), (20, 18)]))[1]
    assert not ex._claim_distill(result([(30, 25), (20, 21)]))[1]


def test_window_claim_checks_halved_and_quartered_windows_only():
    def result(changes):
        rows = [
            {"divisor": d, "window": 64 // d, "val_ppl": 10 * (1 + c), "rel_change": c}
            for d, c in changes
        ]
        return {"rows": rows, "tolerance": 0.05}

    assert ex._claim_window(result([(1, 0), (2, 0.01), (4, 0.04), (16, 0.5)]))[1]
    assert not ex._claim_window(result([(1, 0), (2, 0.01), (4, 0.06)]))[1]
    assert not ex._claim_window(result([(1, 0), (16, 0.0)]))[1]


@pytest.mark.parametrize("attn_impl", ["eager", "fast"])
def test_set_sliding_window_equals_a_model_built_with_that_window(attn_impl):
    cfg = Gemma2Config.preset("tiny", sliding_window=16, attn_impl=attn_impl)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg).eval()
    narrow = Gemma2ForCausalLM(Gemma2Config.preset("tiny", sliding_window=4, attn_impl=attn_impl))
    narrow.load_state_dict(model.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        wide = model(ids)
        model.set_sliding_window(4)
        assert torch.equal(model(ids), narrow.eval()(ids))
        assert (model(ids) - wide).abs().max() > 1e-4  # the window binds at this length
        model.set_sliding_window(16)
        assert torch.equal(model(ids), wide)


def test_bad_student_sizes_are_one_clear_error(tmp_path):
    from alignlab.core.errors import AlignlabError

    with pytest.raises(AlignlabError, match="student_widths and student_layers"):
        execute(spec(tmp_path, "gemma2.distill", overrides=("student_layers=[1]",)))
    assert not (tmp_path / "run" / "results.json").exists()
