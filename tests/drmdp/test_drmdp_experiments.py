"""The drmdp experiments end to end: claims from actual runs, reports, sweeps (the run
contract itself is tests/test_contract.py's)."""

import json

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.core.run import RunSpec, execute
from alignlab.core.sweep import sweep

runner = CliRunner()


@pytest.mark.slow
def test_reproduce_quick_every_drmdp_claim_holds(tmp_path):
    r = runner.invoke(app, ["reproduce", "--only", "drmdp", "--out", str(tmp_path), "--strict"])
    assert r.exit_code == 0, r.output
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert {c["experiment"] for c in claims} == {
        "drmdp.table4",
        "drmdp.horizon",
        "drmdp.recommender",
    }
    assert all(c["system"] == "drmdp" for c in claims)
    failing = [(c["id"], c["measured"]) for c in claims if not c["holds"]]
    assert not failing
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "table4_matches" in html
    assert "![drmdp.table4: table4]" in (tmp_path / "report.md").read_text()


def test_reproduce_rejects_unknown_system(tmp_path):
    r = runner.invoke(app, ["reproduce", "--only", "drmpd", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "Did you mean: drmdp" in r.output


def test_horizon_sweep_local_aggregates_fraction_curve(tmp_path):
    res = sweep(
        "drmdp.horizon", [0, 1, 2], [], preset="smoke", out=tmp_path, workers=2, show_progress=False
    )
    cell = res.aggregate["cells"][0]
    assert cell["seeds"] == [0, 1, 2]
    curve = cell["curves"]["population.y"]
    assert len(curve["mean"]) == 4 and curve["mean"][0] == 0.0
    threshold = cell["claims"]["conspiracy_threshold"]
    assert threshold["held"] == 3 and threshold["holds"] and threshold["hold_rate"] == "3/3 seeds"
    assert threshold["figure"]["threshold H"]["values"] == [3.0, 3.0, 3.0]
    assert (tmp_path / "plots" / "population.y.png").exists()


def test_table4_claim_cannot_be_explained_by_switching_back_to_defaults(tmp_path):
    """Under alternative readings the table disagrees with the paper; returning to the main
    reading is not 'a documented ambiguity', so the claim must fail."""
    overrides = ("r3_at_2=-5", "reward_argument=s_next", "poetry_node=absorbing")
    out = execute(
        RunSpec(
            "drmdp.table4", preset="smoke", overrides=overrides, out=str(tmp_path / "r"), quiet=True
        )
    )
    claim = {c["id"]: c for c in out.claims}["table4_matches"]
    assert not claim["holds"] and "NOT explained" in claim["detail"]


def test_reproduce_keeps_presets_apart(tmp_path):
    for preset in ("smoke", "quick"):
        r = runner.invoke(
            app, ["reproduce", "--only", "drmdp", "--preset", preset, "--out", str(tmp_path)]
        )
        assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "smoke" / "seed0" / "drmdp.table4" / "results.json").exists()
    assert (tmp_path / "runs" / "quick" / "seed0" / "drmdp.table4" / "results.json").exists()


def test_horizon_claim_reads_grows_as_never_falling_and_rising_overall():
    from alignlab.drmdp.experiments import _claim_grows

    def result(y):
        return {"population": {"x": list(range(1, len(y) + 1)), "y": y}, "spearman_rho": 0.9}

    assert _claim_grows(result([0.0, 0.1, 0.1, 0.4]))[1]
    measured, holds = _claim_grows(result([0.0, 0.2, 0.1, 0.4]))
    assert not holds and "falls at H=2→3" in measured
    assert not _claim_grows(result([0.2, 0.2, 0.2]))[1]


def test_reproduce_on_two_seeds_gives_each_claim_a_hold_rate(tmp_path):
    r = runner.invoke(
        app, ["reproduce", "--only", "drmdp", "--preset", "smoke", "--seeds", "0-1",
              "--out", str(tmp_path)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert len(claims) == 7 and all(c["n_seeds"] == 2 for c in claims)
    assert all(c["hold_rate"] == "2/2 seeds" and c["holds"] for c in claims)
    for c in claims:
        assert [s["seed"] for s in c["seeds"]] == [0, 1]
        assert all(f"seed{s['seed']}" in s["run"] for s in c["seeds"])
    table = (tmp_path / "robustness" / "drmdp.md").read_text()
    assert table.count("| claim | seed 0 | seed 1 | mean ± 95% CI | hold rate |") == 3
