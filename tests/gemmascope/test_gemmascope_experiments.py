"""Smoke runs of the Gemma Scope experiments, determinism, exact resume, bad configs, the
claims on hand-built results, and the saved SAEs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, run_status
from alignlab.gemmascope import experiments as ex
from alignlab.gemmascope.formats import load_npz


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One corpus/tokenizer cache for this module, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(experiment, preset="smoke", out=str(tmp_path / name), quiet=True, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted smoke run of gemmascope.frontier, shared by the tests below."""
    return execute(spec(tmp_path_factory.mktemp("ref"), "gemmascope.frontier"))


def test_frontier_smoke_runs_and_evaluates_claims(reference):
    assert run_status(reference.dir) == "complete"
    assert len(reference.claims) == 3
    assert all(c["measured"] is not None for c in reference.claims)
    assert {p.name for p in (reference.dir / "plots").glob("*.png")} == {
        "frontier.png", "frontier_sites.png", "frontier_positions.png"
    }  # fmt: skip


def test_synthetic_smoke_runs_and_evaluates_claims(tmp_path):
    out = execute(spec(tmp_path, "gemmascope.synthetic"))
    assert run_status(out.dir) == "complete"
    assert len(out.claims) == 2 and all(c["measured"] is not None for c in out.claims)
    assert (out.dir / "plots" / "synthetic.png").exists()
    again = execute(spec(tmp_path, "gemmascope.synthetic", "again"))
    assert (out.dir / "results.json").read_bytes() == (again.dir / "results.json").read_bytes()


def test_same_seed_same_results_and_other_seed_differs(tmp_path, reference):
    b = execute(spec(tmp_path, "gemmascope.frontier", "b"))
    c = execute(spec(tmp_path, "gemmascope.frontier", "c", seed=1))
    assert (reference.dir / "results.json").read_bytes() == (b.dir / "results.json").read_bytes()
    assert reference.results["saes"] != c.results["saes"]


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


class Crash(Exception):
    pass


def test_killed_frontier_resumes_to_the_same_results(tmp_path, monkeypatch, reference):
    real = ex.SAETrainer.step
    calls = {"n": 0}

    def crashing(self, xn):
        calls["n"] += 1
        if calls["n"] == 12 * 4 + 3:  # SAE step 5, after the checkpoint at step 3
            raise Crash("killed")
        return real(self, xn)

    monkeypatch.setattr(ex.SAETrainer, "step", crashing)
    with pytest.raises(Crash):
        execute(spec(tmp_path, "gemmascope.frontier", "crashy"))
    monkeypatch.setattr(ex.SAETrainer, "step", real)
    d = tmp_path / "crashy"
    assert run_status(d) == "failed"
    resumed = execute(spec(tmp_path, "gemmascope.frontier", "crashy", resume=True))
    assert (d / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert "resuming at SAE step 3" in (d / "log.txt").read_text()

    def lines(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]

    assert lines(d) == lines(reference.dir)
    assert resumed.claims == reference.claims


@pytest.mark.parametrize(
    "override, match",
    [
        ("sites=[attn,mlp_out]", "unknown sites"),
        ("widths=[]", "widths must be a non-empty list"),
        ("l0_coefficients=[0.01,0.01]", "without repeats"),
        ("layer=9", "layer must be in"),
        ("buffer_tokens=10", "buffer_tokens"),
        ("sae.lr=0", "lr must be"),
        ("l0_coefficients=[0.001,0.0010000001]", "not distinct"),
        ("seq_len=1000", "seq_len must be <= 4 x teacher.train.seq_len = 128"),
    ],
)
def test_bad_frontier_config_is_one_clear_error_and_leaves_no_results(tmp_path, override, match):
    with pytest.raises(AlignlabError, match=match):
        execute(spec(tmp_path, "gemmascope.frontier", overrides=(override,)))
    assert not (tmp_path / "run" / "results.json").exists()


def test_bad_synthetic_config_is_refused(tmp_path):
    with pytest.raises(AlignlabError, match="l0"):
        execute(spec(tmp_path, "gemmascope.synthetic", overrides=("data.l0=100",)))


def test_bos_windows_start_at_bos_and_are_spread_out():
    stream = np.array([2, 5, 6, 7, 1, 2, 8, 9, 1, 2, 3, 4, 5, 6, 1, 2, 7], dtype=np.int64)
    w = ex.bos_windows(stream, bos_id=2, seq_len=4, n=10)
    assert w.dtype == torch.int64 and (w[:, 0] == 2).all()
    assert w.tolist() == [[2, 5, 6, 7], [2, 8, 9, 1], [2, 3, 4, 5]]  # the last <bos> is too late
    assert ex.bos_windows(stream, 2, 4, 2).tolist() == [[2, 5, 6, 7], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="no <bos>"):
        ex.bos_windows(stream, bos_id=99, seq_len=4, n=3)


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
    assert ex._claim_width(_frontier(delta_wide=0.5))[1]
    assert not ex._claim_width(_frontier(delta_wide=2.0))[1]
    shifted = _frontier()
    for r in shifted["saes"]:
        if r["width"] == 32 and r["site"] == "attn_z":
            r["l0"] *= 100  # no common L0 with the narrow SAE
    measured, holds = ex._claim_width(shifted)
    assert not holds and "do not overlap" in measured


def test_residual_claim():
    assert ex._claim_resid(_frontier(resid_factor=10.0))[1]
    measured, holds = ex._claim_resid(_frontier(resid_factor=0.5))
    assert not holds and "residual" in measured


def test_claims_need_two_lambdas_and_two_widths():
    r = _frontier()
    one = dict(
        r, l0_coefficients=[0.01], saes=[s for s in r["saes"] if s["l0_coefficient"] == 0.01]
    )
    assert ex._claim_lambda(one)[:2] == ("needs at least 2 values of λ", False)
    one_w = dict(r, widths=[8], saes=[s for s in r["saes"] if s["width"] == 8])
    assert ex._claim_width(one_w) == ("needs at least 2 widths", False)
    dead = _frontier()
    for s in dead["saes"]:
        if s["site"] == "attn_z" and s["width"] == 32:
            s["l0"] = 0.0  # a fully dead SAE: no curve to compare, no crash
    measured, holds = ex._claim_width(dead)
    assert not holds and "< 2 SAEs with L0 > 0" in measured
    assert ex._claim_synthetic_lambda({"runs": [{"l0_coefficient": 0.1, "l0": 3.0}]})[1] is False


def test_lambda_claim():
    measured, holds, detail = ex._claim_lambda(_frontier())
    assert holds and measured.startswith("6/6")
    measured, holds, detail = ex._claim_lambda(_frontier(monotone=False))
    assert not holds and "MLP" in detail


def test_synthetic_claims():
    r = {"true_l0": 4.0, "l0_tolerance": 0.5, "recovery_target": 0.9, "runs": [
        {"l0_coefficient": 0.01, "l0": 9.0, "fvu": 0.05, "mean_max_cosine": 0.95},
        {"l0_coefficient": 0.03, "l0": 4.5, "fvu": 0.1, "mean_max_cosine": 0.93},
        {"l0_coefficient": 0.1, "l0": 1.0, "fvu": 0.5, "mean_max_cosine": 0.5},
    ]}  # fmt: skip
    measured, holds = ex._claim_recovery(r)
    assert holds and "0.930" in measured  # the 0.95 run is at the wrong L0
    r["runs"][1]["mean_max_cosine"] = 0.8
    assert not ex._claim_recovery(r)[1]
    r["runs"][1]["l0"] = 7.0  # the closest run (L0 7 vs 4) is outside ±50 %
    measured, holds = ex._claim_recovery(r)
    assert not holds and "no run within" in measured
    assert ex._claim_synthetic_lambda(r)[1]
    r["runs"][2]["l0"] = 8.0  # L0 9, 7, 8: not monotone
    assert not ex._claim_synthetic_lambda(r)[1]
