"""The cmd experiments beyond the run contract (tests/test_contract.py): the claims on
hand-built results, the exact d_SD claim at smoke scale, config errors naming their dotted
key, and a unit killed mid-way continuing from its own checkpoint."""

import json
import re

import pytest

from alignlab.cmd import train as trainlib
from alignlab.cmd.experiments import stitching, triangle
from alignlab.cmd.experiments.pointmaze import claim_pointmaze
from alignlab.core import experiment as registry
from alignlab.core.checkpoint import Checkpointer, SimulatedCrash, crash_after_checkpoint
from alignlab.core.config import apply_overrides
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, is_timing, run_status


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(
        experiment, preset="smoke", out=str(tmp_path / name), quiet=True, threads=1, **kw
    )


def methods(**means):
    """Hand-built results: each method's mean and CI half-width."""
    return {"methods": {m: {"mean": mu, "ci95": h} for m, (mu, h) in means.items()}}


def test_stitching_claim_needs_every_cmd_ci_above_every_baseline_ci():
    apart = methods(cmd2=(0.9, 0.05), cmd1=(0.8, 0.05), crl=(0.5, 0.1), gcbc=(0.4, 0.1))
    assert stitching.beats(apart, ("cmd2", "cmd1"), ("crl", "gcbc"))[1]
    overlap = methods(cmd2=(0.9, 0.05), cmd1=(0.7, 0.1), crl=(0.5, 0.11), gcbc=(0.4, 0.1))
    assert not stitching.beats(overlap, ("cmd2", "cmd1"), ("crl", "gcbc"))[1]
    missing = methods(cmd2=(0.9, 0.05), crl=(0.5, 0.1), gcbc=(0.4, 0.1))
    assert not stitching.beats(missing, ("cmd2", "cmd1"), ("crl", "gcbc"))[1]
    # one seed: no interval, written "nan" in results.json; separation cannot be claimed
    one_seed = methods(cmd2=(0.9, "nan"), cmd1=(0.8, "nan"), crl=(0.1, "nan"))
    measured, holds = stitching.beats(one_seed, ("cmd2", "cmd1"), ("crl",))
    assert not holds and measured == "CMD-2 0.90 ± nan; CMD-1 0.80 ± nan; CRL 0.10 ± nan"


def test_pointmaze_claim_compares_cmd2_with_crl_and_gcbc():
    assert claim_pointmaze(methods(cmd2=(0.9, 0.1), crl=(0.88, 0.1), gcbc=(0.5, 0.1)))[1]
    assert not claim_pointmaze(methods(cmd2=(0.84, 0.1), crl=(0.88, 0.1), gcbc=(0.5, 0.1)))[1]
    assert claim_pointmaze(methods(cmd2=(0.9, 0.1), crl=(0.5, 0.1))) == ("methods missing", False)


def population(**ok):
    """Hand-built population results: how many of 10 MDPs each distance leaves unviolated."""
    zero = {"negative": 0, "diagonal": 0, "triangle": 0}
    return {
        "n_mdps": 10,
        "population": {
            name: {
                "mdps_ok": n,
                "mdps_violating": {**zero, "triangle": 10 - n},
                "violations": {**zero, "triangle": 10 - n},
                "mean_frac_triangle": 0.0,
            }
            for name, n in ok.items()
        },
    }


def test_triangle_claims_on_hand_built_populations():
    good = population(
        successor_distance=10, neg_log_occupancy=0, successor_distance_strict=0, mean_time_gap=9
    )
    assert triangle.claim_exact_dsd(good)[1] and triangle.claim_alternatives(good)[1]
    bad = population(
        successor_distance=9, neg_log_occupancy=0, successor_distance_strict=0, mean_time_gap=10
    )
    assert not triangle.claim_exact_dsd(bad)[1] and not triangle.claim_alternatives(bad)[1]
    check = {"negative": 0, "diagonal": 0, "triangle": 0}
    learned = {"learned": {"quasimetric": {"quasimetric_check": check}, "ablation": None}}
    assert triangle.claim_learned_triangle(learned)[1]
    check["triangle"] = 1
    assert not triangle.claim_learned_triangle(learned)[1]


def test_exact_dsd_claim_holds_at_smoke_scale(tmp_path):
    claims = {c["id"]: c for c in execute(spec(tmp_path, "cmd.triangle")).claims}
    assert claims["dsd_is_quasimetric"]["holds"]
    assert claims["learned_head_triangle"]["holds"]


@pytest.mark.parametrize(
    "experiment, override, message",
    [
        ("cmd.stitching", "method.gamma=1.5", "method.gamma must be in (0, 1), got 1.5"),
        ("cmd.stitching", "loop.checkpoint_every=0", "loop.checkpoint_every must be >= 1, got 0"),
        (
            "cmd.stitching",
            "methods=[cmd2,cmd3]",
            "methods must be non-empty, no repeats, one of cmd2, cmd1, crl, gcbc, td, qrl, "
            "got ['cmd2', 'cmd3']",
        ),
        ("cmd.stitching", "methods=[cmd2,cmd2]", "methods must be non-empty, no repeats"),
        ("cmd.pointmaze", "method.head=mrn2", "method.head must be one of mrn, iqe, mlp"),
        ("cmd.triangle", "branching=9", "branching must be <= n_states (8), got 9"),
        ("cmd.triangle", "method.goal_current=false", "method.goal_current must be True"),
    ],
)
def test_a_bad_setting_is_one_error_naming_its_dotted_key(experiment, override, message):
    cfg = registry.get(experiment).preset("smoke")
    with pytest.raises(AlignlabError, match="^" + re.escape(f"Invalid config: {message}")):
        apply_overrides(cfg, [override])


def metric_lines(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


def test_a_unit_killed_mid_way_continues_from_its_own_checkpoint(tmp_path, monkeypatch):
    """Units in order (workers=1): the run dies right after the first unit's checkpoint at
    step 10; resumed, that unit trains only its last 10 steps and the run ends as an
    uninterrupted one."""
    overrides = ("methods=[cmd2]",)  # units cmd2/seed0 and cmd2/seed1, 20 steps each
    reference = execute(spec(tmp_path, "cmd.stitching", "reference", overrides=overrides))
    killed = spec(tmp_path, "cmd.stitching", "killed", overrides=overrides, workers=1)
    with crash_after_checkpoint(1), pytest.raises(SimulatedCrash):
        execute(killed)
    d = tmp_path / "killed"
    assert run_status(d) == "failed"
    assert Checkpointer(d / "units" / "cmd2-seed0").last_step() == 10
    assert not (d / "units" / "cmd2-seed1").exists()

    steps = []
    real = trainlib.to_torch

    def counting(batch, *a, **kw):
        steps.append(1)
        return real(batch, *a, **kw)

    monkeypatch.setattr(trainlib, "to_torch", counting)
    resumed = execute(
        spec(tmp_path, "cmd.stitching", "killed", overrides=overrides, workers=1, resume=True)
    )
    assert len(steps) == 10 + 20  # the killed unit's last 10 steps, then the other unit's 20
    assert (d / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert resumed.claims == reference.claims
    assert sorted(map(json.dumps, metric_lines(d))) == sorted(
        map(json.dumps, metric_lines(reference.dir))
    )
    assert (
        "[unit cmd2/seed0] resuming from its checkpoint at step 10" in (d / "log.txt").read_text()
    )
    assert not (d / "units").exists()


def test_learned_distance_claim_needs_rho_above_zero_outside_its_ci_over_goals():
    def result(rho, half):
        q = {
            "per_goal_spearman": rho,
            "per_goal_spearman_ci95": half,
            "overall_spearman_target": 0.9,
            "overall_spearman_pair_dsd": 0.5,
        }
        return {"learned": {"quasimetric": q}}

    assert triangle.claim_learned_rho(result(0.77, 0.05))[1]
    assert not triangle.claim_learned_rho(result(0.04, 0.05))[1]
    assert not triangle.claim_learned_rho(result(-0.3, 0.05))[1]
    # an undefined correlation (a constant distance), written "nan" in results.json
    assert not triangle.claim_learned_rho(result("nan", "nan"))[1]
