"""`alignlab reproduce --seeds`: one run per experiment and seed, hold rates in the report
and claims.json, robustness tables for the docs, and resuming."""

import json
import math

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.core import experiment as registry
from alignlab.core.claims import Claim, across_seeds, format_figure
from alignlab.core.report import ROBUSTNESS_BEGIN, ROBUSTNESS_END, update_docs

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), terminal_width=200)


@pytest.fixture
def toys(monkeypatch, toy):
    """A registry of the two toy experiments (system "toy"), nothing else."""
    monkeypatch.setattr(
        registry, "_REGISTRY", {"toy.regression": toy.TOY, "toy.seeded": toy.SEEDED}
    )
    monkeypatch.setattr(registry, "load_systems", lambda *a, **k: None)
    return toy


def seeded_claims(out):
    claims = json.loads((out / "claims.json").read_text())
    return {c["id"]: c for c in claims if c["experiment"] == "toy.seeded"}


def test_a_claim_failing_on_one_seed_shows_its_hold_rate_and_fails_the_headline(tmp_path, toys):
    r = invoke("reproduce", "--preset", "smoke", "--seeds", "0-2", "--workers", "1",
               "--out", str(tmp_path))  # fmt: skip
    assert r.exit_code == 0, r.output
    for seed in (0, 1, 2):
        for exp in ("toy.regression", "toy.seeded"):
            assert (tmp_path / "runs" / "smoke" / f"seed{seed}" / exp / "results.json").is_file()
    claims = seeded_claims(tmp_path)
    flaky = claims["not_the_fail_seed"]
    assert flaky["holds"] is False and flaky["held"] == 2 and flaky["n_seeds"] == 3
    assert flaky["hold_rate"] == "2/3 seeds"
    assert [(s["seed"], s["holds"]) for s in flaky["seeds"]] == [(0, True), (1, False), (2, True)]
    means = [s["figure"] for s in flaky["seeds"]]
    assert flaky["figure"][""]["values"] == means
    assert math.isclose(flaky["figure"][""]["mean"], sum(means) / 3)
    assert flaky["figure"][""]["ci95"] > 0 and "±" in flaky["measured"]
    named = claims["mean_near_half"]["figure"]
    assert named["seed"]["values"] == [0.0, 1.0, 2.0] and named["seed"]["mean"] == 1.0
    assert claims["mean_near_half"]["hold_rate"] == "3/3 seeds"

    md = (tmp_path / "report.md").read_text()
    headline = md.splitlines()[2]
    assert "2/3 claims hold on every seed run (seeds 0–2)" in headline
    assert "counts only if it holds on every seed" in headline
    assert "| toy | 2/3 |" in md
    assert "| not_the_fail_seed | ✅ " in md and "| 2/3 seeds |" in md
    assert "seed 1: seed 1" in md  # the failing seed's measured figure is shown
    assert "2/3 claims hold on every seed" in r.output and "2/3 seeds" in r.output
    table = (tmp_path / "robustness" / "toy.md").read_text()
    assert "| claim | seed 0 | seed 1 | seed 2 | mean ± 95% CI | hold rate |" in table
    assert "toy.seeded (smoke preset, seeds 0–2)" in table

    r = invoke("reproduce", "--preset", "smoke", "--seeds", "0-2", "--workers", "1",
               "--out", str(tmp_path), "--strict")  # fmt: skip
    assert r.exit_code == 1


def test_more_seeds_reuse_the_finished_runs_and_a_crashed_run_resumes(tmp_path, toys):
    out = str(tmp_path)
    r = invoke("reproduce", "--preset", "smoke", "--seed", "0", "--out", out)
    assert r.exit_code == 0, r.output
    seed0 = tmp_path / "runs" / "smoke" / "seed0" / "toy.regression"
    started = json.loads((seed0 / "run.json").read_text())["started"]
    assert "3/3 claims hold in the 2 experiments" in r.output

    toys.CRASH_AT = 15  # every toy.regression run crashes after its checkpoint at step 10
    r = invoke("reproduce", "--preset", "smoke", "--seeds", "0-1", "--workers", "1", "--out", out)
    assert r.exit_code == 2 and "toy.regression (seed 1) failed" in r.output
    assert json.loads((seed0 / "run.json").read_text())["started"] == started  # reused
    seed1 = tmp_path / "runs" / "smoke" / "seed1" / "toy.regression"
    assert json.loads((seed1 / "run.json").read_text())["status"] == "failed"
    assert "seed1" in str(seeded_claims(tmp_path)["mean_near_half"]["seeds"][1]["run"])

    toys.CRASH_AT = -1
    r = invoke("reproduce", "--preset", "smoke", "--seeds", "0-1", "--workers", "1", "--out", out)
    assert r.exit_code == 0, r.output
    assert "resuming from step 10" in (seed1 / "log.txt").read_text()
    assert json.loads((seed0 / "run.json").read_text())["started"] == started
    claims = json.loads((tmp_path / "claims.json").read_text())
    converges = next(c for c in claims if c["id"] == "converges")
    assert converges["hold_rate"] == "2/2 seeds" and converges["holds"]


def test_parallel_seeds_give_the_files_of_one_seed_run_in_process(tmp_path, toys):
    one = invoke("reproduce", "--preset", "smoke", "--seed", "1", "--out", str(tmp_path / "a"))
    assert one.exit_code == 0, one.output
    par = invoke("reproduce", "--preset", "smoke", "--seeds", "0-1", "--workers", "2",
                 "--out", str(tmp_path / "b"))  # fmt: skip
    assert par.exit_code == 0, par.output
    for exp in ("toy.regression", "toy.seeded"):
        a = tmp_path / "a" / "runs" / "smoke" / "seed1" / exp
        b = tmp_path / "b" / "runs" / "smoke" / "seed1" / exp
        assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    # one seed keeps the plain report: no hold rates, no robustness folder
    assert not (tmp_path / "a" / "robustness").exists()
    single = json.loads((tmp_path / "a" / "claims.json").read_text())
    assert all(c["hold_rate"] in ("0/1 seed", "1/1 seed") and "run" in c for c in single)


def test_robustness_tables_go_into_the_docs_between_their_markers(tmp_path, toys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "toy.md").write_text("# Toy\n\nSome text.\n")
    r = invoke("reproduce", "--preset", "smoke", "--seeds", "0-1", "--workers", "1",
               "--out", str(tmp_path / "o"), "--docs", str(docs))  # fmt: skip
    assert r.exit_code == 0, r.output
    page = (docs / "toy.md").read_text()
    assert page.startswith("# Toy\n\nSome text.\n\n## Robustness\n")
    assert page.count(ROBUSTNESS_BEGIN) == 1 and "| seed 0 | seed 1 |" in page
    # a second write replaces the block and keeps what follows it
    (docs / "toy.md").write_text(page + "\n## After\n")
    assert update_docs(tmp_path / "o" / "robustness", docs) == [docs / "toy.md"]
    again = (docs / "toy.md").read_text()
    assert again.count(ROBUSTNESS_BEGIN) == 1 and again.count(ROBUSTNESS_END) == 1
    assert again.endswith("## After\n") and again.count("| seed 0 | seed 1 |") == 2


def test_bad_seeds_and_backend_are_one_clear_error(tmp_path, toys):
    r = invoke("reproduce", "--seeds", "0-x", "--out", str(tmp_path))
    assert r.exit_code == 2 and "expected non-negative seeds" in r.output
    r = invoke("reproduce", "--seeds", "0-1", "--backend", "slurm", "--out", str(tmp_path))
    assert r.exit_code == 2 and "Valid backends: local, ray" in r.output
    r = invoke("reproduce", "--seeds", "0", "--docs", str(tmp_path), "--out", str(tmp_path))
    assert r.exit_code == 2 and "need several seeds" in r.output
    r = invoke(
        "reproduce", "--seeds", "0-1", "--docs", str(tmp_path / "nope"), "--out", str(tmp_path)
    )
    assert r.exit_code == 2 and "no such folder" in r.output
    assert not (tmp_path / "runs").exists()


def test_across_seeds_on_hand_built_verdicts():
    entries = [
        (0, "r0", {"id": "c", "statement": "s", "measured": "a", "holds": True, "figure": 1.0}),
        (1, "r1", {"id": "c", "statement": "s", "measured": "b", "holds": False, "figure": 3.0}),
    ]
    c = across_seeds(entries)
    assert (c["holds"], c["held"], c["hold_rate"]) == (False, 1, "1/2 seeds")
    assert c["figure"][""]["mean"] == 2.0
    # t(0.975, 1) · sd / √2 = 12.706 · √2 / √2
    assert math.isclose(c["figure"][""]["ci95"], 12.7062047, rel_tol=1e-6)
    assert c["measured"] == "2 ± 13"
    assert format_figure({"a": {"mean": 0.98034, "ci95": 0.0076}}) == "a 0.9803 ± 0.0076"
    assert format_figure({"": {"mean": 271.31, "ci95": 6.8}}) == "271.3 ± 6.8"
    assert format_figure({"n": {"mean": 100.0, "ci95": 0.0}}) == "n 100 ± 0"
    # figures with different names across seeds are not averaged
    entries[1][2]["figure"] = {"x": 3.0}
    assert "figure" not in across_seeds(entries)
    # without figures: the measured text when every seed agrees, else a pointer to the seeds
    for _, _, c in entries:
        c.pop("figure", None)
    assert across_seeds(entries)["measured"] == "differs by seed (see the 2 seeds)"
    entries[1][2]["measured"] = "a"
    assert across_seeds(entries)["measured"] == "a"
    one = across_seeds(entries[:1])
    assert one["measured"] == "a" and one["run"] == "r0" and one["hold_rate"] == "1/1 seed"


def test_a_figure_that_crashes_fails_its_claim():
    claim = Claim("c", "s", lambda r: (1.0, True), figure=lambda r: r["missing"])
    entry = claim.evaluate({})
    assert entry["holds"] is False and "KeyError" in entry["detail"]


def test_a_failing_preflight_is_one_error_before_any_write_and_reproduce_names_it(
    tmp_path, toys, monkeypatch
):
    import dataclasses

    from alignlab.core.errors import AlignlabError
    from alignlab.core.reproduce import NEEDS_REASON, plan
    from alignlab.core.run import RunSpec, execute

    def needs_endpoint(cfg):
        raise AlignlabError("set TOY_ENDPOINT")

    gated = dataclasses.replace(toys.SEEDED, preflight=needs_endpoint)
    monkeypatch.setitem(registry._REGISTRY, "toy.seeded", gated)
    out = tmp_path / "run"
    with pytest.raises(AlignlabError, match="set TOY_ENDPOINT"):
        execute(RunSpec("toy.seeded", preset="smoke", out=str(out), quiet=True))
    assert not out.exists()
    p = plan(None, "smoke", [0], tmp_path)
    assert [e.name for e in p.experiments] == ["toy.regression"]
    (left,) = [x for x in p.left_out if x.experiment == "toy.seeded"]
    assert left.reason == f"{NEEDS_REASON}: set TOY_ENDPOINT"


def test_a_finished_run_is_reused_without_its_preflight(tmp_path, toys, monkeypatch):
    import dataclasses

    from alignlab.core.errors import AlignlabError
    from alignlab.core.reproduce import plan
    from alignlab.core.run import RunSpec, execute

    out = tmp_path / "runs" / "smoke" / "seed0" / "toy.seeded"
    first = execute(RunSpec("toy.seeded", preset="smoke", out=str(out), quiet=True))

    def endpoint_down(cfg):
        raise AlignlabError("endpoint down")

    monkeypatch.setitem(
        registry._REGISTRY, "toy.seeded", dataclasses.replace(toys.SEEDED, preflight=endpoint_down)
    )
    again = execute(RunSpec("toy.seeded", preset="smoke", out=str(out), quiet=True))
    assert again.skipped and again.results == first.results
    assert "toy.seeded" in [e.name for e in plan(None, "smoke", [0], tmp_path).experiments]


def test_a_study_is_never_reproduced_even_with_only_and_is_named(tmp_path, toys, monkeypatch):
    import dataclasses

    from alignlab.core.reproduce import STUDY_REASON, plan

    study = dataclasses.replace(toys.SEEDED, study=True)
    monkeypatch.setitem(registry._REGISTRY, "toy.seeded", study)
    for only in (None, ["toy"]):
        p = plan(only, "smoke", [0], tmp_path)
        assert "toy.seeded" not in [e.name for e in p.experiments]
        (left,) = [x for x in p.left_out if x.experiment == "toy.seeded"]
        assert left.reason == STUDY_REASON
