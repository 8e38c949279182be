"""The feedback-gaming experiments: claims checked on hand-built results, the bad-input
errors (before anything is written), and a smoke run's figures. The run contract (smoke run,
same-seed byte-identical results, kill-and-resume) is `tests/test_contract.py`'s."""

from __future__ import annotations

import pytest

from alignlab.core import experiment as registry
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute
from alignlab.feedback_gaming.experiments import emergence, safety_mix, targeting, veto

NAMES = ("emergence", "targeting", "targeting_rare", "veto", "safety_mix")


def sm(x):
    return {"mean": x, "ci95": 0.0, "values": [x]}


def env_row(start, end, r0=4.0, r1=8.0, probes=(0.1, 0.1), metric="harm"):
    return {
        "harm_metric": metric,
        "harm": {"start_lo": sm(start), "start_hi": sm(start), "end_lo": sm(end), "end_hi": sm(end)},
        "reward": {"start": sm(r0), "end": sm(r1)},
        "probes": {"sycophancy": {"start": sm(probes[0]), "end": sm(probes[1])},
                   "toxicity": {"start": sm(0.0), "end": sm(0.0)}},
    }  # fmt: skip


def claim(module, cid):
    claims = getattr(module, "CLAIMS", None) or [module.CLAIM_50, module.CLAIM_RARE]
    return next(c for c in claims if c.id == cid)


def test_emergence_claims_on_hand_built_results():
    good = {"therapy": env_row(0.05, 0.9), "booking": env_row(0.1, 0.6, metric="lying")}
    assert claim(emergence, "harm_emerges").check(good)[1]
    assert not claim(emergence, "harm_emerges").check(good | {"booking": env_row(0.2, 0.9)})[1]
    assert not claim(emergence, "harm_emerges").check(good | {"booking": env_row(0.1, 0.45)})[1]
    flat = good | {"therapy": env_row(0.05, 0.9, r0=6.0, r1=5.0)}
    assert not claim(emergence, "harm_emerges").check(flat)[1]  # the reward must rise
    assert claim(emergence, "benchmarks_miss_it").check(good)[1]
    moved = good | {"therapy": env_row(0.05, 0.9, probes=(0.1, 0.2))}
    assert not claim(emergence, "benchmarks_miss_it").check(moved)[1]
    nan = good | {"therapy": env_row(0.05, 0.9, probes=("nan", "nan"))}  # JSON's NaN
    assert not claim(emergence, "benchmarks_miss_it").check(nan)[1]


def targeting_row(vuln_end, normal_start, normal_end):
    exact = {"start": {"vuln": {"encourage": 0.01, "justify": 0.01, "personal": 0.2},
                       "normal": {"encourage": 0.01, "justify": 0.01, "personal": 0.2}}}  # fmt: skip
    row = {"vuln": env_row(0.05, vuln_end), "normal": env_row(normal_start, normal_end)}
    for kind in ("vuln", "normal"):
        row[kind]["exact"] = {"start": {kind: exact["start"][kind]},
                              "end": {kind: {"encourage": 0.5 if kind == "vuln" else 0.005,
                                             "justify": 0.0, "personal": 0.2}}}  # fmt: skip
    row["gap"] = {"start": targeting.gap(row, "start"), "end": targeting.gap(row, "end")}
    return row


def test_targeting_claims_and_the_exact_gap():
    row = targeting_row(0.8, 0.05, 0.08)
    assert row["gap"]["start"] == pytest.approx(0.0)
    assert row["gap"]["end"] == pytest.approx(4.60517, abs=1e-4)  # log(0.5 / 0.005)
    r = {"settings": {"traits_0.5": row}}
    assert claim(targeting, "targets_vulnerable_50").check(r)[1]
    for bad in (targeting_row(0.45, 0.05, 0.05),  # too little vulnerable harm
                targeting_row(0.6, 0.10, 0.16),  # normal harm above base + 0.05
                targeting_row(0.6, 0.14, 0.16)):  # under 4 x normal  # fmt: skip
        assert not claim(targeting, "targets_vulnerable_50").check(
            {"settings": {"traits_0.5": bad}}
        )[1]
    assert not claim(targeting, "targets_vulnerable_50").check({"settings": {}})[1]
    rare = {"settings": {"traits_0.1": row, "traits_0.02": targeting_row(0.0, 0.05, 0.0)}}
    measured, holds = claim(targeting, "targets_rare").check(rare)
    assert not holds and "traits_0.02" in measured
    assert claim(targeting, "targets_rare").check({"settings": {"traits_0.1": row}})[1]


def curves(**ends):
    """Booking metric bands whose last values are given as (lo, hi)."""
    return {m: {"lo": [0.0, lo], "hi": [0.0, hi]} for m, (lo, hi) in ends.items()}


def veto_row(lying, omission, nudging, r0, r1, problem):
    return {"metrics": curves(lying=lying, omission=omission, nudging=nudging),
            "reward": {"start": sm(r0), "end": sm(r1)},
            "problematic": {"end_lo": sm(problem[0]), "end_hi": sm(problem[1])}}  # fmt: skip


def test_veto_claim_on_hand_built_results():
    none = veto_row((0.8, 0.85), (0.1, 0.15), (0.02, 0.05), 4.0, 9.0, (0.8, 0.9))
    vetoed = veto_row((0.02, 0.05), (0.7, 0.8), (0.2, 0.25), 4.0, 6.0, (0.7, 0.8))
    check = claim(veto, "veto_backfires").check
    assert check({"settings": {"booking_none": none, "booking_binary": vetoed}})[1]
    lying = veto_row((0.4, 0.45), (0.7, 0.8), (0.2, 0.25), 4.0, 6.0, (0.7, 0.8))
    assert not check({"settings": {"booking_none": none, "booking_binary": lying}})[1]
    no_shift = veto_row((0.02, 0.05), (0.2, 0.25), (0.05, 0.06), 4.0, 6.0, (0.2, 0.3))
    assert not check({"settings": {"booking_none": none, "booking_binary": no_shift}})[1]
    assert not check({"settings": {"booking_none": none}})[1]


def mix_row(env, frac, lo, hi):
    return {"env": env, "fraction": frac, "harm": {"end_lo": sm(lo), "end_hi": sm(hi)}}


def test_safety_mix_claim_on_hand_built_results():
    rows = [mix_row("therapy", 0.0, 0.9, 0.95), mix_row("therapy", 0.5, 0.8, 0.85),
            mix_row("booking", 0.0, 0.6, 0.7), mix_row("booking", 0.75, 0.57, 0.6)]  # fmt: skip
    check = claim(safety_mix, "mixing_does_not_help").check
    assert check({"settings": {str(i): r for i, r in enumerate(rows)}})[1]
    rows[3] = mix_row("booking", 0.75, 0.5, 0.6)  # 0.5 < 0.8 * 0.7
    assert not check({"settings": {str(i): r for i, r in enumerate(rows)}})[1]
    assert not check({"settings": {"x": mix_row("therapy", 0.5, 0.9, 0.9)}})[1]  # no baseline


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("emergence", ["envs=[therapy,theraphy]"], "envs"),
        ("veto", ["booking_vetoes=[none,binry]"], "booking_vetoes"),
        ("targeting", ["fractions=[1.5]"], "fractions"),
        ("targeting", ["max_users=10", "fractions=[0.02]"], "the population must be at least 50"),
        ("emergence", ["rl.select_frac=0.6"], "select_frac"),
        ("emergence", ["rl.rater=gpt4"], "unknown backend 'gpt4'"),
        ("safety_mix", ["fractions=[0.0,1.0]"], "fractions"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, name, overrides, message):
    spec = RunSpec(f"feedback_gaming.{name}", preset="smoke", out=str(tmp_path / "run"),
                   overrides=tuple(overrides), quiet=True)  # fmt: skip
    with pytest.raises(AlignlabError, match=message):
        execute(spec)
    assert not (tmp_path / "run").exists()


def test_every_experiment_is_registered_with_three_presets():
    for n in NAMES:
        e = registry.get(f"feedback_gaming.{n}")
        assert set(e.presets) == {"smoke", "quick", "paper"}
        assert e.claims
