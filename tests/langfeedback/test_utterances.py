"""Utterance classes, the original's templates, our paraphrases and their splits."""

import json

import pytest

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import utterances as U
from alignlab.langfeedback import world as W


@pytest.fixture(scope="module")
def splits():
    return U.build_splits(0)


def _low(s):
    return " ".join(s.lower().split())


def test_ten_classes_and_their_names():
    assert len(U.CLASSES) == 10 == 2 * len(U.FEATURES)
    assert U.CLASSES[:2] == ("gt_reward+", "gt_reward-")
    for c in U.CLASSES:
        feature, direction = U.parse_class(c)
        assert U.class_of(feature, direction) == c
        assert U.class_of(feature, "greater" if direction > 0 else "less") == c
    assert U.class_of("speed", -1) == "speed-"
    with pytest.raises(AlignlabError, match="valid features: gt_reward, speed"):
        U.class_of("sped", 1)
    with pytest.raises(AlignlabError, match="valid directions"):
        U.class_of("speed", 0)
    with pytest.raises(AlignlabError, match="valid classes: gt_reward\\+"):
        U.parse_class("speed")


def test_templates_are_the_originals_thirty(splits):
    assert sum(len(U.TEMPLATES[c]) for c in U.CLASSES) == 30
    assert U.TEMPLATES["speed+"] == (
        "Move faster.",
        "Move quicker.",
        "Move swifter.",
        "Move at a higher speed.",
    )
    assert "Move more down." in U.TEMPLATES["height-"]
    assert "Move more nearby to the bottle." in U.TEMPLATES["distance_to_bottle-"]
    assert "Move farther from the cube." in U.TEMPLATES["distance_to_cube+"]
    assert U.TEMPLATES["gt_reward-"] == ("Lift the cube worse.", "Lift the cube not as well.")
    for c in U.CLASSES:
        assert set(U.TEMPLATES[c]) <= set(splits.get("train", c))


def test_grid_of_verb_phrases_and_frames():
    assert len(U.FRAMES) >= 10
    for c in U.CLASSES:
        assert len(U.VERB_PHRASES[c]) >= 10
        assert len(U.STRESS_VERB_PHRASES[c]) == 2
        assert len(set(U.paraphrases(c))) == len(U.VERB_PHRASES[c]) * len(U.FRAMES)
    assert U.render("Could you {vp}?", "go faster") == "Could you go faster?"
    assert U.render("{Vp}.", "go faster") == "Go faster."


def test_splits_are_disjoint_complete_and_sized(splits):
    assert set(splits.splits) == set(U.SPLITS)
    seen = {}
    for name in U.SPLITS:
        for c in U.CLASSES:
            items = splits.get(name, c)
            assert items, (name, c)
            for s in items:
                assert _low(s) not in seen, (s, seen.get(_low(s)), name)
                seen[_low(s)] = name
                assert s[0].isupper() and s[-1] in ".?", s
    for c in U.CLASSES:
        n = len(U.paraphrases(c))
        assert len(splits.get("val", c)) == len(splits.get("test", c)) == round(0.1 * n)
        assert len(splits.get("train", c)) == n - 2 * round(0.1 * n) + len(U.TEMPLATES[c])
        assert len(splits.get("stress", c)) == 2 * len(U.FRAMES)
        # every paraphrase of the class lands in exactly one of train/val/test
        held = set(splits.get("train", c) + splits.get("val", c) + splits.get("test", c))
        assert held == set(U.paraphrases(c)) | set(U.TEMPLATES[c])
    counts = splits.counts()
    assert counts == {"train": 830, "val": 100, "test": 100, "stress": 200}


def test_stress_split_shares_no_verb_phrase(splits):
    seen_text = [_low(s) for n in ("train", "val", "test") for s in splits.sentences(n)]
    stress_text = [_low(s) for s in splits.sentences("stress")]
    stress_vps = [vp for c in U.CLASSES for vp in U.STRESS_VERB_PHRASES[c]]
    main_vps = [vp for c in U.CLASSES for vp in U.VERB_PHRASES[c]]
    for vp in stress_vps:
        assert not any(vp in s for s in seen_text), vp
    for vp in main_vps:
        assert not any(vp in s for s in stress_text), vp
    # every stress sentence is a frame filled with a stress verb phrase
    for c in U.CLASSES:
        assert splits.get("stress", c) == U.paraphrases(c, stress=True)


def test_splits_are_seeded(splits):
    assert U.build_splits(0).splits == splits.splits
    other = U.build_splits(1)
    assert other.splits != splits.splits
    assert other.splits["stress"] == splits.splits["stress"]

    def held(s, c):
        return sorted(s.get("train", c) + s.get("val", c) + s.get("test", c))

    for c in U.CLASSES:  # same sentences, split differently
        assert held(other, c) == held(splits, c)


def test_save_and_load_round_trip(splits, tmp_path):
    path = splits.save(tmp_path / "utterances.json")
    back = U.UtteranceSplits.load(path)
    assert back.splits == splits.splits and back.seed == 0
    assert back.labelled("val")[0] == (splits.get("val", U.CLASSES[0])[0], U.CLASSES[0])


def _bad(splits, edit):
    data = json.loads(json.dumps(splits.to_dict()))
    edit(data["splits"])
    return data


CASES = {
    "missing class": (
        lambda s: s["val"].pop("height-"),
        r"Split 'val' is missing class 'height-'",
    ),
    "empty split": (
        lambda s: s.__setitem__("test", {c: [] for c in U.CLASSES}),
        r"Split 'test' is empty",
    ),
    "empty class": (
        lambda s: s["stress"].__setitem__("speed+", []),
        r"Split 'stress' has no sentences for class 'speed\+'",
    ),
    "sentence in two splits": (
        lambda s: s["test"]["speed+"].append("Move faster."),
        r"'Move faster\.' appears in two splits: 'train' \(speed\+\) and 'test' \(speed\+\)",
    ),
    "sentence in two classes": (
        lambda s: s["train"]["speed-"].append("move FASTER."),
        r"'move FASTER\.' appears in two classes of split 'train': 'speed\+' and 'speed-'",
    ),
    "unknown split": (
        lambda s: s.__setitem__("dev", s.pop("val")),
        r"Unknown utterance split 'dev'; valid splits: train, val, test, stress",
    ),
    "unknown class": (
        lambda s: s["train"].__setitem__("velocity+", ["Go go go."]),
        r"Unknown utterance class 'velocity\+'; valid classes: gt_reward\+, gt_reward-",
    ),
    "missing split": (
        lambda s: s.pop("stress"),
        r"Split 'stress' is missing",
    ),
    "not a sentence": (
        lambda s: s["val"]["height+"].append(3),
        r"class 'height\+': 3 is not a non-blank sentence",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_files_give_one_clear_error(splits, tmp_path, case):
    edit, message = CASES[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bad(splits, edit)), encoding="utf-8")
    with pytest.raises(AlignlabError, match=message) as err:
        U.UtteranceSplits.load(path)
    assert str(path) in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(AlignlabError, match="does not exist"):
        U.UtteranceSplits.load(tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(AlignlabError, match="not readable JSON"):
        U.UtteranceSplits.load(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    with pytest.raises(AlignlabError, match="'splits' object"):
        U.UtteranceSplits.load(tmp_path / "list.json")


def test_lookups_name_valid_values(splits):
    with pytest.raises(AlignlabError, match="valid splits: train, val, test, stress"):
        splits.get("validation", "speed+")
    with pytest.raises(AlignlabError, match="Did you mean: speed\\+"):
        splits.get("train", "sped+")
    with pytest.raises(AlignlabError, match="non-negative integer"):
        U.build_splits(-1)


@pytest.mark.parametrize("features", [W.FEATURE_SETS["rich"], U.METAWORLD_FEATURES])
def test_other_feature_sets_have_full_vocabularies(features):
    """The richer world's ten features and Meta-World's three: every class has templates,
    10 verb phrases x the frames, 2 stress verb phrases; splits 80/10/10, disjoint (`validate`
    rejects a sentence in two places), stress wording unseen; the paper's five split as before."""
    sp = U.build_splits(0, features)
    assert sp.classes == U.classes_of(features) and len(sp.classes) == 2 * len(features)
    for c in sp.classes:
        assert U.TEMPLATES[c] and len(U.VERB_PHRASES[c]) == 10
        assert len(U.STRESS_VERB_PHRASES[c]) == 2
        assert len(sp.get("val", c)) == len(sp.get("test", c)) == 10
        assert len(sp.get("train", c)) == 80 + len(U.TEMPLATES[c])
    train_text = " ".join(_low(s) for s in sp.sentences("train"))
    for c in sp.classes:
        for vp in U.STRESS_VERB_PHRASES[c]:
            assert vp.lower() not in train_text


def test_the_paper_splits_are_those_the_quick_results_were_measured_on():
    """sha256 of the paper's five features' splits (seeds 0 and 1), as first built: adding
    feature sets and their vocabularies must not move a sentence of these."""
    import hashlib

    want = {
        0: "7ed0f629bd6fff1bf52a40138e9483df5494d4ca992dce6fa5ae8cfec858f102",
        1: "06939cc038f3af5a0073b9ee4292550cf1170723e6de81b916c5d3a5732d3694",
    }
    for seed, digest in want.items():
        splits = U.build_splits(seed).to_dict()["splits"]
        got = hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()
        assert got == digest, seed


def test_feature_sets_round_trip_and_reject_unknown(tmp_path):
    sp = U.build_splits(1, U.METAWORLD_FEATURES)
    back = U.UtteranceSplits.load(sp.save(tmp_path / "mw.json"))
    assert back.features == U.METAWORLD_FEATURES and back.sentences() == sp.sentences()
    with pytest.raises(AlignlabError, match="Unknown feature 'hight'.*valid features"):
        U.build_splits(0, ("hight",))
    with pytest.raises(AlignlabError, match="repeat"):
        U.build_splits(0, ("height", "height"))
    with pytest.raises(AlignlabError, match="missing class 'speed\\+'"):
        U.UtteranceSplits(sp.to_dict()["splits"], features=U.METAWORLD_FEATURES + ("speed",))
    with pytest.raises(AlignlabError, match="Unknown utterance class 'height\\+'"):
        U.UtteranceSplits(sp.to_dict()["splits"], features=("velocity", "distance"))
