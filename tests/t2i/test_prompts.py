"""Evaluation prompt sets, the simulated policy and the raters' utilities."""

import re
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from alignlab.t2i.prompts import (
    DEFAULT_N,
    GECKO_SEEN,
    GECKO_STRUCTURES,
    GECKO_UNSEEN,
    PROMPT_SETS,
    SAFETY_CATEGORIES,
    Prompt,
    alignment_utility,
    appeal,
    detailed_alignment,
    heldout_scene,
    is_violation,
    prompt_set,
)
from alignlab.t2i.world import (
    COLOUR_SYNONYMS,
    MOTIF_SYNONYMS,
    NUMBERS,
    STYLES,
    VOCAB,
    Group,
    Perceived,
    PObject,
    Scene,
    fact_question,
    original_caption,
    parse_caption,
    perceive,
    render,
    sample_scene,
    scene_facts,
    synthetic_caption,
    words,
)


def _sets(seed=0):
    return {name: prompt_set(name, np.random.default_rng(seed)) for name in PROMPT_SETS}


def _obj(shape, colour, size="small", centre=(10.0, 10.0)):
    return PObject(shape, colour, size, centre, 1.0, 1.0, 64)


def test_sets_are_deterministic_sized_and_parse_to_their_facts():
    sets, again = _sets(0), _sets(0)
    for name, prompts in sets.items():
        assert prompts == again[name]
        assert len(prompts) == DEFAULT_N.get(name, len(prompts)) and prompts
        for p in prompts:
            assert p.set == name
            # a prompt's facts are what its text asks for
            assert parse_caption(p.text) == p.facts, (name, p.text)
            assert Prompt.from_dict(p.to_dict()) == p
    assert prompt_set("genai", np.random.default_rng(1)) != sets["genai"]
    assert len(prompt_set("genai", np.random.default_rng(1), n=7)) == 7
    assert len(sets["docci"]) == 100 and len(sets["diversity"]) == 30


def test_every_generated_word_is_in_vocab():
    vocab = set(VOCAB)
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for i in range(2000):
        s = sample_scene(rng, motif=i % 10 == 0)
        for style in STYLES:
            seen |= set(words(synthetic_caption(s, style, rng)))
        seen |= set(words(original_caption(s, rng, wrong_p=0.5)))
        for f in scene_facts(s):
            seen |= set(words(fact_question(f)))
    for prompts in _sets(1).values():
        for p in prompts:
            seen |= set(words(p.text))
            for f in p.facts:
                seen |= set(words(fact_question(f)))
            seen |= set(words(f"Does this figure show '{p.text}'? Please answer yes or no."))
    assert seen <= vocab, sorted(seen - vocab)


def test_gecko_num_counts_by_structure_and_unseen_phrasings():
    prompts = prompt_set("gecko_num", np.random.default_rng(0))
    assert len(GECKO_STRUCTURES) == 7 and set(GECKO_SEEN) | set(GECKO_UNSEEN) == set(
        GECKO_STRUCTURES
    )
    assert len(GECKO_SEEN) == 3 and len(GECKO_UNSEEN) == 4
    cells = Counter((p.number, p.structure) for p in prompts)
    assert set(cells) == {(n, s) for n in range(1, 6) for s in GECKO_STRUCTURES}
    assert set(cells.values()) == {3}
    for p in prompts:
        assert [f for f in p.facts if f[0] == "count"][0][3] == p.number
        assert NUMBERS[p.number - 1] in words(p.text)
    # training captions use the seen phrasings and never the unseen ones
    rng = np.random.default_rng(3)
    captions = []
    for _ in range(700):
        s = sample_scene(rng)
        captions += [synthetic_caption(s, st, rng).lower() for st in STYLES]
        captions.append(original_caption(s, rng))
    text = " | ".join(captions)
    num = "(" + "|".join(NUMBERS) + ")"
    seen_regex = {
        "{n} {obj}": rf"(^|, ){num} [a-z]+ [a-z]+ [a-z]+",
        "there {be} {n} {obj}": rf"there (is|are) {num} ",
        "a picture of {n} {obj}": rf"a picture of ({num}|a single) ",
    }
    for structure in GECKO_SEEN:
        assert re.search(seen_regex[structure], text), structure
    for phrase in ("exactly", "a total of", "the number of", "in total"):
        assert phrase not in text


def test_diversity_prompts_are_colour_free():
    prompts = prompt_set("diversity", np.random.default_rng(0))
    colour_words = {w for syn in COLOUR_SYNONYMS.values() for w in syn}
    assert Counter(p.shape for p in prompts) == {"circle": 10, "square": 10, "triangle": 10}
    for p in prompts:
        assert not colour_words & set(words(p.text))
        assert p.facts == (("count", p.shape, None, p.number),)
    sub = prompt_set("diversity", np.random.default_rng(0), n=5)
    assert len(sub) == 5 and all(p in prompts for p in sub)


def test_safety_set_and_policy():
    prompts = prompt_set("safety", np.random.default_rng(0))
    cats = Counter(p.structure for p in prompts)
    assert set(cats) == set(SAFETY_CATEGORIES)
    motif_words = {w for p in prompts if p.structure == "motif" for w in words(p.text)}
    assert set(MOTIF_SYNONYMS) <= motif_words
    square = _obj("square", "purple")
    red = _obj("circle", "red")
    pink = _obj(None, "pink")
    # the report's pig example: a benign prompt and a benign image combine into a violation
    assert is_violation("a pig", Perceived("white", (square,)))
    assert is_violation("a pig: two purple squares", Perceived("white", (square, red)))
    assert is_violation("two violet boxes, like rats", Perceived("white", (square,)))
    assert not is_violation("a pig", Perceived("white", (red,)))
    assert not is_violation("two purple squares", Perceived("white", (square,)))
    assert not is_violation("a pig", Perceived(None, ()))
    # the motif is a violation whatever the prompt or its shape
    assert is_violation("a red circle", Perceived("white", (red, pink)))
    # on renders: requesting the motif and drawing it violates; benign controls do not
    for p in prompts:
        if p.structure == "benign":
            s = Scene("white", (Group("circle", "red", "small", 1),), (((10.0, 10.0),),))
            assert not is_violation(p.text, perceive(render(s)))
    motif = Scene("black", (Group("triangle", "pink", "large", 1),), (((16.0, 18.0),),))
    assert is_violation("a red circle", perceive(render(motif)))


def test_alignment_utility_on_renders():
    s = Scene(
        "grey",
        (Group("circle", "red", "small", 2), Group("square", "blue", "large", 1)),
        (((5.0, 8.0), (5.0, 20.0)), ((24.0, 14.0),)),
    )
    p = perceive(render(s))
    assert alignment_utility(Prompt("", scene_facts(s), "genai"), p) == 1.0
    assert alignment_utility(parse_caption("two circles to the left of a box"), p) == 1.0
    assert alignment_utility(parse_caption("three red circles on a white background"), p) == 0.0
    half = parse_caption("a red circle on a black background")
    assert alignment_utility(half, p) == 0.5
    assert alignment_utility(Prompt("a pig", (), "safety"), p) == 1.0
    # on random scenes, a scene's own synthetic caption beats another scene's
    rng = np.random.default_rng(0)
    own, other = [], []
    scenes = [sample_scene(rng) for _ in range(60)]
    for a, b in zip(scenes, scenes[1:] + scenes[:1]):
        seen = perceive(render(a))
        own.append(alignment_utility(parse_caption(synthetic_caption(a, "descriptive", rng)), seen))
        other.append(alignment_utility(scene_facts(b), seen))
    assert np.mean(own) == 1.0 and np.mean(other) < 0.5


def test_appeal_prefers_clean_renders():
    rng = np.random.default_rng(2)
    scenes = [sample_scene(rng) for _ in range(40)]
    clean = [appeal(perceive(render(s))) for s in scenes]
    blurred = [
        appeal(
            perceive(
                np.rint(ndimage.gaussian_filter(render(s).astype(float), (1.2, 1.2, 0))).astype(
                    np.uint8
                )
            )
        )
        for s in scenes
    ]
    assert min(clean) > 0.9 and np.mean(blurred) < np.mean(clean)
    assert appeal(Perceived("white", ())) == 0.0


def test_detailed_alignment():
    rng = np.random.default_rng(4)
    refs = [heldout_scene(rng) for _ in range(30)]
    same = [detailed_alignment(r, perceive(render(r))) for r in refs]
    other = [detailed_alignment(r, perceive(render(o))) for r, o in zip(refs, refs[1:])]
    assert min(same) > 0.95 and max(same) <= 1.0
    assert np.mean(other) < np.mean(same) - 0.2
    assert detailed_alignment(refs[0], Perceived("white", ())) == 0.0
    # a missing object costs its share
    s = Scene("white", (Group("circle", "red", "small", 2),), (((6.0, 6.0), (24.0, 24.0)),))
    one = Scene("white", (Group("circle", "red", "small", 1),), (((6.0, 6.0),),))
    assert detailed_alignment(s, perceive(render(one))) == pytest.approx(0.5, abs=0.02)


def test_docci_prompts_carry_held_out_references():
    prompts = prompt_set("docci", np.random.default_rng(0), n=20)
    for p in prompts:
        assert isinstance(p.reference, Scene) and p.facts == scene_facts(p.reference)
        assert len(words(p.text)) >= 12
    assert prompts[0].reference == heldout_scene(np.random.default_rng(0))


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="genai, drawbench, docci, gecko_num, diversity, safety"):
        prompt_set("parti", rng)
    with pytest.raises(ValueError, match="empty prompt set"):
        prompt_set("genai", rng, n=0)
    with pytest.raises(ValueError, match="has 30 prompts"):
        prompt_set("diversity", rng, n=31)
