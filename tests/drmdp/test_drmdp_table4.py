"""Table 4 reproduced exactly, its disagreements and the paper's conclusions."""

import json

import pytest

from alignlab.drmdp.exact import solve_exact
from alignlab.drmdp.examples import EXAMPLES, clickbait, dehydration, writers_curse
from alignlab.drmdp.table4 import PAPER_TABLE4, compute_table4, explain_mismatches, paper_cells


@pytest.fixture(scope="module")
def default_table():
    return compute_table4()


def test_table_data_shape():
    assert len(PAPER_TABLE4) == 52 and len(paper_cells("default")) == 48
    assert len({c.id for c in PAPER_TABLE4}) == 52
    assert {c.example for c in PAPER_TABLE4} == set(EXAMPLES)
    assert sum(c.judgement == "mixed" for c in PAPER_TABLE4) == 3


def test_default_readings_match_all_but_clickbait_constrained(default_table):
    assert default_table["n_cells"] == 48
    assert default_table["n_match"] == 47
    assert default_table["mismatches"] == ["clickbait/constrained_real_time"]
    assert default_table["vacuous"] == ["writers_curse/myopic", "dehydration/myopic"]
    json.dumps(default_table)  # JSON-serialisable


def test_cells_report_what_was_solved(default_table):
    cells = {c["id"]: c for c in default_table["cells"]}
    rt = cells["conspiracy/real_time"]
    assert (
        rt["representative"] == ["influence"] * 3 and rt["influences"] and rt["influence_incentive"]
    )
    assert (
        rt["value"] == {"exact": "100", "float": 100.0} and rt["judgement"] == "✗" and rt["match"]
    )
    assert cells["writers_curse/final"]["value"]["exact"] == "3/2"
    myopic = cells["clickbait/myopic"]
    assert myopic["judgement"] == "mixed"
    assert myopic["per_theta0"]["normal"]["representative"] == ["clickbait", "news"]
    assert myopic["per_theta0"]["disillusioned"]["representative"] == ["news", "news"]
    bad = cells["clickbait/constrained_real_time"]
    assert (
        bad["representative"] == ["news", "clickbait"]
        and not bad["influences"]
        and bad["judgement"] == "✗"
    )


def test_third_party_reading_gives_fifty_of_fifty_two():
    """The notes: 50 of 52 with the two failures the Initial "for all theta_0" claims, 4 vacuous."""
    table = compute_table4(initial_theta0="all", include_theta_H=True)
    assert (table["n_match"], table["n_cells"]) == (50, 52)
    assert table["mismatches"] == [
        "writers_curse/initial@theta0=unhappy",
        "clickbait/initial@theta0=disillusioned",
    ]
    assert len(table["vacuous"]) == 4
    assert compute_table4(initial_theta0="all")["n_match"] == 49


def test_explanations_of_the_default_disagreement():
    (d,) = explain_mismatches()
    assert d["id"] == "clickbait/constrained_real_time" and d["explained"]
    assert d["explained_by"] == [
        {
            "readings": {"include_theta_H": True},
            "effect": "matches",
            "representative": ["news", "news"],
        }
    ]


def test_explanations_under_the_for_all_reading():
    out = {d["id"]: d for d in explain_mismatches(initial_theta0="all")}
    assert set(out) == {
        "writers_curse/initial@theta0=unhappy",
        "clickbait/initial@theta0=disillusioned",
        "clickbait/constrained_real_time",
    }
    assert all(d["explained"] for d in out.values())
    assert (
        out["clickbait/initial@theta0=disillusioned"]["explained_by"][0]["effect"] == "not claimed"
    )
    assert out["clickbait/initial@theta0=disillusioned"]["measured"]["representative"] == [
        "news",
        "news",
    ]


@pytest.mark.parametrize(
    "readings, broken",
    [
        ({"reward_argument": "s_next"}, "writers_curse/real_time"),
        ({"poetry_node": "absorbing"}, "writers_curse/final"),
        ({"r3_at_2": -5}, "dehydration/pareto_ud"),
    ],
)
def test_alternative_readings_break_cells(readings, broken):
    """Each documented reading matters: its alternative breaks a cell the default reproduces."""
    table = compute_table4(**readings)
    assert broken in table["mismatches"]
    assert any(d["id"] == broken and d["explained"] for d in explain_mismatches(**readings))


def test_unexplainable_mismatch_is_reported(monkeypatch):
    import alignlab.drmdp.table4 as t4

    wrong = t4.PaperCell("conspiracy", "real_time", "noop", "✓", ("noop",) * 3)
    monkeypatch.setattr(t4, "PAPER_TABLE4", (wrong,))
    (d,) = t4.explain_mismatches()
    assert not d["explained"] and d["explained_by"] == [] and "not optimal" in d["reason"]


def test_influence_claims(default_table):
    claims = default_table["claims"]
    assert claims["claim2_every_other_objective_has_incentive"]
    assert claims["influence_incentive_examples"]["constrained_real_time"] == []
    assert claims["influence_incentive_examples"]["pareto_ud"] == ["dehydration"]
    assert claims["claim3_cautious_forgo_beneficial"] == {
        "constrained_real_time": ["dehydration", "personal_trainer"],
        "pareto_ud": ["personal_trainer"],
    }
    # under Def. 5's xi^theta = theta_0..theta_{H-1}, constrained RT may clickbait at the last step
    assert claims["undesirable_cells"]["constrained_real_time"] == [
        "clickbait/constrained_real_time"
    ]
    assert not claims["claim3_holds"]
    assert compute_table4(include_theta_H=True)["claims"]["claim3_holds"]


def test_bad_readings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown readings"):
        compute_table4(horizon=3)
    with pytest.raises(ValueError, match="r3_at_2=-3 is not one of"):
        compute_table4(r3_at_2=-3)


def test_example_numbers():
    """The notes' table of examples, read back from the models."""
    assert solve_exact(writers_curse(), "initial").optimal_value == pytest.approx(1.5)
    wc = writers_curse()
    assert wc.transition("poetry", "unhappy", "noop") == {("no_poetry", "ambitious"): 1.0}
    assert writers_curse(poetry_node="absorbing").transition("poetry", "unhappy", "noop") == {
        ("poetry", "unhappy"): 1.0
    }
    assert clickbait().transition("feed", "disillusioned", "news") == {
        ("feed", "disillusioned"): 1.0
    }
    d = dehydration()
    assert d.reward[1, 1, 0, 0] == -2 and dehydration(r3_at_2=-5).reward[1, 1, 0, 0] == -5
    assert d.reward[2, 2, 0, 0] == -5 and d.reward[0, 0, 0, 0] == -1  # R_4(3), R_2(1)
    assert d.transition("1", "2", "a4") == {("3", "4"): 1.0} and d.transition("2", "3", "a4") == {
        ("2", "3"): 1.0
    }
    with pytest.raises(ValueError, match="poetry_node"):
        writers_curse(poetry_node="maybe")
