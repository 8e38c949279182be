"""Side-by-side study designs and ratings files (Imagen 3 Sec. 3.1)."""

import json
from collections import Counter

import numpy as np
import pytest

from alignlab.t2i.eval.sxs import (
    ASPECTS,
    Rating,
    design_round_robin,
    design_study,
    rater_shares,
    read_ratings,
    run_study,
    write_ratings,
)


def test_design_study_is_balanced_shuffled_and_spreads_raters():
    rng = np.random.default_rng(0)
    prompts = list(range(170))
    rows = design_study("full", "raw", prompts, 2500, rng, aspect="alignment", set="drawbench")
    assert len(rows) == 2500
    per_prompt = Counter(r.prompt_id for r in rows)
    assert set(per_prompt) == set(prompts)
    assert set(per_prompt.values()) == {14, 15}  # 2500 / 170 = 14.7: floor or floor + 1
    assert sum(v == 15 for v in per_prompt.values()) == 2500 - 14 * 170
    left = sum(r.model_a == "full" for r in rows) / 2500
    assert 0.45 < left < 0.55  # sides shuffled per rating
    assert {frozenset((r.model_a, r.model_b)) for r in rows} == {frozenset(("full", "raw"))}
    per_rater = Counter(r.rater for r in rows)
    assert max(per_rater.values()) <= 0.02 * 2500 and len(per_rater) == 50
    assert all(r.choice is None and r.study == "alignment/drawbench/full~raw" for r in rows)
    # deterministic given the generator; the order of prompts is random
    again = design_study(
        "full", "raw", prompts, 2500, np.random.default_rng(0), aspect="alignment", set="drawbench"
    )
    assert again == rows
    assert [r.prompt_id for r in rows[:20]] != sorted(r.prompt_id for r in rows[:20])


def test_design_study_small_and_bad_inputs():
    rng = np.random.default_rng(1)
    rows = design_study("a", "b", ["p1", "p2", "p3"], 10, rng)
    assert len({r.rater for r in rows}) == 10  # 2 % of 10 ratings rounds to one each
    with pytest.raises(ValueError, match="empty prompt set"):
        design_study("a", "b", [], 10, rng)
    with pytest.raises(ValueError, match="two different models"):
        design_study("a", "a", [1], 10, rng)
    with pytest.raises(ValueError, match="too few.*at least 50 raters"):
        design_study("a", "b", [1, 2], 2500, rng, n_raters=10)
    with pytest.raises(ValueError, match="unknown aspect 'style'; valid aspects: overall"):
        design_study("a", "b", [1, 2], 10, rng, aspect="style")
    with pytest.raises(ValueError, match="needs rng"):
        design_study("a", "b", [1, 2], 10)


def test_round_robin_covers_every_pair_aspect_and_set():
    models = ["full", "full@2k", "short", "raw", "full@1k", "full_w1"]
    sets = {"genai": list(range(200)), "drawbench": list(range(200))}
    rows = design_round_robin(models, ASPECTS[:2], sets, 500, np.random.default_rng(2))
    studies = Counter(r.study for r in rows)
    assert len(studies) == 15 * 2 * 2 and set(studies.values()) == {500}
    assert max(rater_shares(rows).values()) <= 0.02
    # each rater takes part in at most 10 % of the 60 studies
    studies_per_rater = Counter(r for r, _ in {(x.rater, x.study) for x in rows})
    assert max(studies_per_rater.values()) <= 6
    with pytest.raises(ValueError, match="valid aspects"):
        design_round_robin(models, ["beauty"], sets, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty prompt set 'genai'"):
        design_round_robin(models, ["overall"], {"genai": []}, 10, np.random.default_rng(0))


def test_run_study_fills_choices_from_a_vectorised_rater():
    rows = design_study("a", "b", list(range(20)), 100, np.random.default_rng(3))
    # a rater who always prefers model "a", wherever it is shown
    rated = run_study(rows, lambda rs: np.array([0 if r.model_a == "a" else 1 for r in rs]))
    assert all(r.winner == "a" and r.loser == "b" for r in rated)
    assert [r.prompt_id for r in rated] == [r.prompt_id for r in rows]
    with pytest.raises(ValueError, match="2 choices for 100 rows"):
        run_study(rows, lambda rs: ["left", "tie"])
    with pytest.raises(ValueError, match="'maybe'; valid choices: left, right, tie"):
        run_study(rows, lambda rs: ["maybe"] * len(rs))


def test_ratings_round_trip_and_bad_lines(tmp_path):
    rows = design_study("a", "b", list(range(5)), 30, np.random.default_rng(4), aspect="appeal")
    rated = run_study(rows, lambda rs: ["left", "right", "tie"] * 10)
    path = tmp_path / "ratings.jsonl"
    write_ratings(path, rated)
    assert read_ratings(path) == rated
    assert len(path.read_text().splitlines()) == 30
    with pytest.raises(ValueError, match="no choice"):
        write_ratings(tmp_path / "x.jsonl", rows)

    good = rated[0].to_dict()
    cases = [
        ("{not json", "line 2: not valid JSON"),
        (
            json.dumps({**good, "aspect": "beauty"}),
            "line 2: unknown aspect 'beauty'; valid aspects: overall, alignment, appeal, detailed",
        ),
        (json.dumps({**good, "choice": "both"}), "line 2: unknown choice 'both'; valid choices"),
        (json.dumps({k: v for k, v in good.items() if k != "rater"}), "line 2: missing field"),
        (json.dumps({**good, "extra": 1}), "line 2: unknown field"),
        (json.dumps({**good, "model_b": good["model_a"]}), "line 2: .*two different models"),
        (json.dumps({**good, "prompt_id": 1.5}), "line 2: field 'prompt_id'"),
        (json.dumps([1, 2]), "line 2: expected a JSON object"),
    ]
    for bad, msg in cases:
        p = tmp_path / "bad.jsonl"
        p.write_text(json.dumps(good) + "\n" + bad + "\n")
        with pytest.raises(ValueError, match=msg):
            read_ratings(p)


def test_rating_validates_itself():
    with pytest.raises(ValueError, match="valid aspects"):
        Rating("s", "x", "vibes", 0, "a", "b", "left")
    r = Rating("s", "x", "overall", 0, "a", "b", "tie")
    assert r.winner is None and r.left == "a" and r.right == "b"
