"""The Gemma Scope experiments beyond the run contract (tests/test_contract.py): the frontier's
results and saved SAEs, its SAE stage resumed mid-training, config errors, and the claims on
hand-built results."""

from __future__ import annotations

import json

import pytest

from alignlab.core.checkpoint import SimulatedCrash
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, is_timing, run_status
from alignlab.gemmascope.experiments import frontier, synthetic
from alignlab.gemmascope.formats import load_npz


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One corpus/tokenizer cache for this module, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(
        experiment, preset="smoke", out=str(tmp_path / name), quiet=True, threads=1, **kw
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted smoke run of gemmascope.frontier, shared by the tests below."""
    return execute(spec(tmp_path_factory.mktemp("ref"), "gemmascope.frontier"))


def test_frontier_results_cover_the_grid_and_save_release_format_saes(reference):
    out = reference
    r = out.results
    assert {(s["site"], s["width"], s["l0_coefficient"]) for s in r["saes"]} == {
        (site, w, lam) for site in r["sites"] for w in r["widths"] for lam in r["l0_coefficients"]
    }
    for row in r["saes"]:
        assert len(row["per_position_mse"]) == 32  # the smoke seq_len
        # position 0 is always <bos>, never spliced: null, not the string "nan"
        assert row["per_position_mse"][0] is None and row["per_position_fvu"][0] is None
        assert all(isinstance(v, float) for v in row["per_position_mse"][1:])
        h = row["log10_frequency_histogram"]
        assert sum(h["counts"]) + h["dead"] == row["width"]
    # every SAE is saved in the release format (raw activations, no pre-encoder bias)
    for row in r["saes"]:
        sae = load_npz(out.dir / "saes" / row["name"] / "params.npz")
        assert sae.d_sae == row["width"] and sae.input_scale == 1.0
        assert not sae.apply_b_dec_to_input and (sae.threshold > 0).all()
    assert r["warmup_steps"] == {"lr_warmup_steps": 1, "l0_warmup_steps": 2}
    assert {p.name for p in (out.dir / "plots").glob("*.png")} == {
        "frontier.png", "frontier_sites.png", "frontier_positions.png"
    }  # fmt: skip


def test_frontier_metric_lines_are_the_stages_in_order(reference):
    rows = [json.loads(x) for x in (reference.dir / "metrics.jsonl").read_text().splitlines()]
    teacher = [r for r in rows if r.get("stage") == "teacher"]
    saes = [r for r in rows if r.get("stage") == "saes"]
    assert teacher and saes and len(teacher) + len(saes) == len(rows)
    # the SAE stage numbers its lines after the teacher's span (6 steps + 1)
    assert sorted({r["step"] for r in saes}) == [7 + 2, 7 + 4, 7 + 6]
    assert len(saes) == 3 * 12 and max(r["step"] for r in teacher) <= 6


def test_killed_sae_stage_resumes_mid_training_to_the_same_results(
    tmp_path, monkeypatch, reference
):
    """Killed right after the SAE stage's first checkpoint (step 3 of 6), the run resumes
    from it: the trainers' state restored, the activation stream replayed to step 3."""
    real = frontier.save_trainers

    def save_then_crash(checkpoint, step, trainers):
        real(checkpoint, step, trainers)
        raise SimulatedCrash(f"killed after the SAE checkpoint at step {step}")

    monkeypatch.setattr(frontier, "save_trainers", save_then_crash)
    with pytest.raises(SimulatedCrash, match="step 3"):
        execute(spec(tmp_path, "gemmascope.frontier", "killed"))
    monkeypatch.undo()
    d = tmp_path / "killed"
    assert run_status(d) == "failed" and (d / "stages" / "saes" / "checkpoint").is_dir()
    resumed = execute(spec(tmp_path, "gemmascope.frontier", "killed", resume=True))
    assert (d / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert "saes: resuming at SAE step 3" in (d / "log.txt").read_text()

    def lines(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]

    assert lines(d) == lines(reference.dir)
    assert resumed.claims == reference.claims


def test_another_seed_trains_other_saes(tmp_path, reference):
    other = execute(spec(tmp_path, "gemmascope.frontier", "seed1", seed=1))
    assert other.results["saes"] != reference.results["saes"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("sites=[attn,mlp_out]", "sites must be non-empty, no repeats, one of attn_z, mlp_out"),
        ("widths=[]", "widths must be non-empty"),
        ("l0_coefficients=[0.01,0.01]", "l0_coefficients must be non-empty, no repeats"),
        ("layer=9", r"layer must be in \[0, 2\) or -1 \(the middle layer\), got 9"),
        ("layer=-2", "layer must be >= -1, got -2"),
        ("buffer_tokens=10", r"buffer_tokens must be >= 2 x batch_size \(128\), got 10"),
        ("sae.lr=0", "sae.lr must be > 0, got 0.0"),
        ("l0_coefficients=[0.001,0.0010000001]", "l0_coefficients must be distinct at 6 sig"),
        ("seq_len=1000", r"seq_len must be <= 4 x teacher.train.seq_len \(128\), got 1000"),
    ],
)
def test_bad_frontier_config_names_the_key_and_writes_nothing(tmp_path, override, message):
    with pytest.raises(AlignlabError, match=f"^Invalid config: {message}"):
        execute(spec(tmp_path, "gemmascope.frontier", overrides=(override,)))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.l0=100", r"data.l0 must be <= n_features \(16\), got 100.0"),
        ("data.magnitude=gamma", "data.magnitude must be one of half_normal"),
        ("recovery_target=1.5", r"recovery_target must be in \(0, 1\], got 1.5"),
        ("l0_coefficients=[0.001,0.0010000001]", "l0_coefficients must be distinct at 6 sig"),
    ],
)
def test_bad_synthetic_config_names_the_key_and_writes_nothing(tmp_path, override, message):
    with pytest.raises(AlignlabError, match=f"^Invalid config: {message}"):
        execute(spec(tmp_path, "gemmascope.synthetic", overrides=(override,)))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# claims on hand-built results


def _row(site, width, lam, l0, delta, fvu=0.1):
    return {"site": site, "width": width, "l0_coefficient": lam, "l0": l0,
            "delta_lm_loss": delta, "fvu": fvu}  # fmt: skip


def _results(rows, sites=("attn_z", "mlp_out", "resid_post"), widths=(8, 32)):
    lams = sorted({r["l0_coefficient"] for r in rows})
    return {"sites": list(sites), "widths": list(widths), "l0_coefficients": lams, "saes": rows}


def _frontier(delta_wide=0.5, resid_factor=10.0, monotone=True):
    rows = []
    for site in ("attn_z", "mlp_out", "resid_post"):
        k = resid_factor if site == "resid_post" else 1.0
        for width, scale in ((8, 1.0), (32, delta_wide)):
            for lam, l0 in ((0.001, 40.0), (0.01, 10.0), (0.1, 3.0)):
                if not monotone and site == "mlp_out" and lam == 0.1:
                    l0 = 50.0
                rows.append(_row(site, width, lam, l0, k * scale * 0.1 / l0))
    return _results(rows)


def test_width_claim():
    assert frontier.claim_width(_frontier(delta_wide=0.5))[1]
    assert not frontier.claim_width(_frontier(delta_wide=2.0))[1]
    shifted = _frontier()
    for r in shifted["saes"]:
        if r["width"] == 32 and r["site"] == "attn_z":
            r["l0"] *= 100  # no common L0 with the narrow SAE
    measured, holds = frontier.claim_width(shifted)
    assert not holds and "do not overlap" in measured


def test_residual_claim():
    assert frontier.claim_resid(_frontier(resid_factor=10.0))[1]
    measured, holds = frontier.claim_resid(_frontier(resid_factor=0.5))
    assert not holds and "residual" in measured


def test_claims_need_two_lambdas_and_two_widths():
    r = _frontier()
    one = dict(
        r, l0_coefficients=[0.01], saes=[s for s in r["saes"] if s["l0_coefficient"] == 0.01]
    )
    assert frontier.claim_lambda(one)[:2] == ("needs at least 2 values of λ", False)
    one_w = dict(r, widths=[8], saes=[s for s in r["saes"] if s["width"] == 8])
    assert frontier.claim_width(one_w) == ("needs at least 2 widths", False)
    dead = _frontier()
    for s in dead["saes"]:
        if s["site"] == "attn_z" and s["width"] == 32:
            s["l0"] = 0.0  # a fully dead SAE: no curve to compare, no crash
    measured, holds = frontier.claim_width(dead)
    assert not holds and "< 2 SAEs with L0 > 0" in measured
    assert synthetic.claim_lambda({"runs": [{"l0_coefficient": 0.1, "l0": 3.0}]})[1] is False


def test_lambda_claim():
    measured, holds, detail = frontier.claim_lambda(_frontier())
    assert holds and measured.startswith("6/6")
    measured, holds, detail = frontier.claim_lambda(_frontier(monotone=False))
    assert not holds and "MLP" in detail


def test_synthetic_claims():
    r = {"true_l0": 4.0, "l0_tolerance": 0.5, "recovery_target": 0.9, "runs": [
        {"l0_coefficient": 0.01, "l0": 9.0, "fvu": 0.05, "mean_max_cosine": 0.95},
        {"l0_coefficient": 0.03, "l0": 4.5, "fvu": 0.1, "mean_max_cosine": 0.93},
        {"l0_coefficient": 0.1, "l0": 1.0, "fvu": 0.5, "mean_max_cosine": 0.5},
    ]}  # fmt: skip
    measured, holds = synthetic.claim_recovery(r)
    assert holds and "0.930" in measured  # the 0.95 run is at the wrong L0
    r["runs"][1]["mean_max_cosine"] = 0.8
    assert not synthetic.claim_recovery(r)[1]
    r["runs"][1]["l0"] = 7.0  # the closest run (L0 7 vs 4) is outside ±50 %
    measured, holds = synthetic.claim_recovery(r)
    assert not holds and "no run within" in measured
    assert synthetic.claim_lambda(r)[1]
    r["runs"][2]["l0"] = 8.0  # L0 9, 7, 8: not monotone
    assert not synthetic.claim_lambda(r)[1]
