"""The simulated shapes world: sampling, rendering, perception, captions and facts."""

import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from alignlab.t2i import world as W
from alignlab.t2i.world import (
    BACKGROUNDS,
    COLOURS,
    DEROGATORY,
    MOTIF_COLOUR,
    MOTIF_SYNONYMS,
    NUMBERS,
    SHAPES,
    SIZES,
    STYLES,
    VOCAB,
    Group,
    Perceived,
    PObject,
    Scene,
    WorldConfig,
    check_facts,
    fact_question,
    geneval_relations,
    original_caption,
    parse_caption,
    perceive,
    perceive_batch,
    render,
    render_batch,
    same_graph,
    sample_scene,
    scene_facts,
    synthetic_caption,
    to_tensor,
    to_uint8,
    words,
)


def _scenes(seed, n, **kw):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, **kw) for _ in range(n)]


def _exact(perceived, scene):
    got = perceived.to_scene()
    return got is not None and same_graph(got, scene)


def test_constants_and_vocab():
    assert len(COLOURS) == 6 and MOTIF_COLOUR not in COLOURS
    assert list(VOCAB) == sorted(set(VOCAB)) and all(w == w.lower() for w in VOCAB)
    for w in (*DEROGATORY, *MOTIF_SYNONYMS, *NUMBERS, *SHAPES, *COLOURS, *BACKGROUNDS):
        assert w in VOCAB
    for w in "is are there exactly the a an does this figure show yes no".split():
        assert w in VOCAB
    # backgrounds are far from every object colour (and the motif)
    objs = np.array([*COLOURS.values(), W.MOTIF_RGB], float)
    for rgb in BACKGROUNDS.values():
        assert np.linalg.norm(objs - np.array(rgb), axis=1).min() > 80


def test_sample_scene_constraints_and_determinism():
    wc = WorldConfig()
    scenes = _scenes(0, 400)
    assert scenes == _scenes(0, 400)
    ns = [s.n_objects for s in scenes]
    assert min(ns) == 1 and max(ns) == wc.max_objects
    assert {len(s.groups) for s in scenes} == {1, 2}
    for s in scenes:
        assert len({g.key for g in s.groups}) == len(s.groups)
        boxes = []
        for g, cs in zip(s.groups, s.centres):
            le, ri, up, do = W._extent(g.shape, W.diameter(g.size, wc))
            for x, y in cs:
                assert x - le >= 0 and x + ri <= wc.res and y - up >= 0 and y + do <= wc.res
                boxes.append((x - le, x + ri, y - up, y + do))
        for i, a in enumerate(boxes):  # bounding boxes at least 2 px apart
            for b in boxes[:i]:
                assert a[1] + 2 <= b[0] or b[1] + 2 <= a[0] or a[3] + 2 <= b[2] or b[3] + 2 <= a[2]
        if len(s.groups) == 2:
            assert s.relation in W.RELATIONS and len(s.relations()) == 1
    skew = {"circle": [1, 0, 0, 0, 0, 0]}
    for s in _scenes(1, 100, colour_probs=skew):
        assert all(g.colour == "red" for g in s.groups if g.shape == "circle")
    for s in _scenes(2, 50, motif=True):
        assert sum(g.colour == MOTIF_COLOUR for g in s.groups) == 1
    for s in _scenes(3, 20, n_objects=4, n_groups=2, background="grey"):
        assert s.n_objects == 4 and len(s.groups) == 2 and s.background == "grey"


def test_sample_scene_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_objects"):
        sample_scene(rng, n_objects=9)
    with pytest.raises(ValueError, match="two groups"):
        sample_scene(rng, n_objects=1, n_groups=2)
    with pytest.raises(ValueError, match="white, black, grey"):
        sample_scene(rng, background="blue")
    with pytest.raises(ValueError, match="colour_probs"):
        sample_scene(rng, colour_probs={"circle": [1, 0]})
    with pytest.raises(ValueError, match="circle, square, triangle"):
        Group("cross", "red", "small", 1)
    with pytest.raises(ValueError, match="max_objects must be in 1..5 at res 32"):
        WorldConfig(max_objects=6)
    assert WorldConfig(res=64, max_objects=8).max_objects == 8


def test_geneval_relation_rule():
    assert geneval_relations((5, 16), (25, 16), 8, 8) == {"left of"}
    assert geneval_relations((16, 26), (16, 6), 8, 8) == {"below"}
    assert geneval_relations((6, 6), (26, 26), 8, 8) == {"left of", "above"}  # diagonal
    assert geneval_relations((16, 16), (17, 16), 8, 8) == set()  # inside the 0.1 slack


def test_render_supersampled_and_batched():
    s = Scene("black", (Group("circle", "red", "large", 1),), (((16.3, 15.7),),))
    img = render(s)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 0).all() and tuple(img[16, 16]) == COLOURS["red"]
    red = img[..., 0].astype(int)
    edge = (red > 0) & (red < COLOURS["red"][0])  # anti-aliased edge pixels
    assert edge.sum() > 10
    area = (red / COLOURS["red"][0]).sum()  # box filter preserves the area
    assert abs(area - np.pi * 6**2) < 1.5
    batch = render_batch(_scenes(0, 3))
    assert batch.shape == (3, 32, 32, 3) and (batch[1] == render(_scenes(0, 2)[1])).all()


def test_perceive_exact_on_clean_renders_and_fast():
    """Target >= 99 % exact scene graphs at about 5 ms per image."""
    scenes = _scenes(123, 400) + _scenes(124, 60, motif=True)
    images = render_batch(scenes)
    perceive(images[0])  # warm-up
    t = time.perf_counter()
    perceived = perceive_batch(images)
    ms = 1000 * (time.perf_counter() - t) / len(images)
    acc = np.mean([_exact(p, s) for p, s in zip(perceived, scenes)])
    print(f"perceive: {acc:.4f} exact on {len(scenes)} clean renders, {ms:.2f} ms per image")
    assert acc >= 0.99
    assert ms < 25  # about 1.5 ms uncontended; generous for a shared CPU
    for p, s in zip(perceived[:50], scenes):
        assert p.background == s.background
        assert all(o.purity == 1.0 and o.iou > 0.8 for o in p.objects)
        got = np.array([o.centre for o in p.objects])
        want = np.array([c for cs in s.centres for c in cs])
        dist = np.linalg.norm(got[:, None] - want[None], axis=-1)
        rows, cols = linear_sum_assignment(dist)  # each perceived centre to its own object
        assert len(rows) == len(want) and np.abs(got[rows] - want[cols]).max() < 0.6


def test_perceive_paper_resolution():
    wc = WorldConfig(res=64, max_objects=8)
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng, wc) for _ in range(40)]
    assert {s.res for s in scenes} == {64} and max(s.n_objects for s in scenes) > 5
    perceived = perceive_batch(render_batch(scenes, wc), wc)
    assert np.mean([_exact(p, s) for p, s in zip(perceived, scenes)]) >= 0.97
    with pytest.raises(ValueError, match="resolution 64"):
        render(scenes[0])


def test_perceive_robust_to_blur_noise_and_specks():
    scenes = _scenes(7, 150)
    images = render_batch(scenes)
    blurred = np.stack(
        [np.rint(ndimage.gaussian_filter(im.astype(float), (0.8, 0.8, 0))) for im in images]
    ).astype(np.uint8)
    assert np.mean([_exact(perceive(b), s) for b, s in zip(blurred, scenes)]) >= 0.95
    rng = np.random.default_rng(0)
    noisy = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).round().astype(np.uint8)
    assert np.mean([_exact(perceive(b), s) for b, s in zip(noisy, scenes)]) >= 0.95
    # specks smaller than MIN_AREA are not objects
    blank = render(Scene("white", (Group("square", "blue", "large", 1),), (((20.0, 20.0),),)))
    blank[2:4, 2] = COLOURS["red"]
    p = perceive(blank)
    assert [(o.shape, o.colour, o.size) for o in p.objects] == [("square", "blue", "large")]
    # appeal ingredients drop on degraded images
    clean = perceive(images[0]).objects
    blur = perceive(blurred[0]).objects
    assert np.mean([o.iou * o.purity for o in blur]) < np.mean([o.iou * o.purity for o in clean])


def test_perceive_empty_and_bad_input():
    empty = np.zeros((32, 32, 3), np.uint8)
    p = perceive(empty)
    assert p.background == "black" and p.objects == () and p.to_scene() is None
    muddle = np.full((32, 32, 3), COLOURS["red"], np.uint8)  # the border is not a background
    assert perceive(muddle).background is None
    with pytest.raises(ValueError, match=r"\(32, 32, 3\)"):
        perceive(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        perceive(np.zeros((32, 32, 3), np.float32))


def test_json_roundtrip_and_hashable():
    s = _scenes(3, 1, n_objects=3, n_groups=2)[0]
    assert Scene.from_dict(s.to_dict()) == s and hash(s) == hash(Scene.from_dict(s.to_dict()))
    p = perceive(render(s))
    assert Perceived.from_dict(p.to_dict()) == p
    assert PObject.from_dict(p.objects[0].to_dict()) == p.objects[0]


def test_same_graph_ignores_order_and_centres():
    a, b = Group("circle", "red", "small", 2), Group("square", "blue", "large", 1)
    s = Scene("white", (a, b), (((5, 8), (5, 20)), ((24, 14),)))
    assert s.relation == "left of"
    flipped = Scene("white", (b, a), (((25, 14),), ((6, 8), (6, 21))))
    assert flipped.relation == "right of" and same_graph(s, flipped)
    moved = Scene("white", (b, a), (((5, 14),), ((24, 8), (24, 21))))
    assert not same_graph(s, moved)  # the relation differs
    assert not same_graph(s, Scene("black", s.groups, s.centres))
    other = Scene("white", (Group("circle", "red", "small", 1), b), (((5, 8),), ((24, 14),)))
    assert not same_graph(s, other)


def test_tensor_roundtrip():
    images = render_batch(_scenes(0, 4))
    t = to_tensor(images)
    assert tuple(t.shape) == (4, 3, 32, 32) and t.min() >= -1 and t.max() <= 1
    assert (to_uint8(t) == images).all()
    assert (to_uint8(torch.full((1, 3, 2, 2), 5.0)) == 255).all()  # clamped
    assert (to_uint8(torch.full((1, 3, 2, 2), -5.0)) == 0).all()
    with pytest.raises(ValueError, match="NCHW|N, 3, H, W"):
        to_uint8(t[0])


def test_synthetic_captions_parse_back_to_scene_facts():
    rng = np.random.default_rng(11)
    scenes = _scenes(10, 300) + _scenes(12, 60, motif=True)
    for s in scenes:
        facts = scene_facts(s)
        for style in STYLES:
            caption = synthetic_caption(s, style, rng)
            assert parse_caption(caption) == facts, (style, caption)
    with pytest.raises(ValueError, match="list, sentence, descriptive"):
        synthetic_caption(scenes[0], "poem", rng)


def test_descriptive_captions_use_synonyms_and_positions():
    rng = np.random.default_rng(0)
    scenes = _scenes(4, 200, n_objects=3, n_groups=2)
    text = " ".join(synthetic_caption(s, "descriptive", rng) for s in scenes)
    for w in ("disc", "box", "wedge", "scarlet", "azure", "little", "big", "gray"):
        assert w in words(text)
    assert "on the left" in text and "at the top" in text and "to the right of" in text
    motif = " ".join(synthetic_caption(s, "list", rng) for s in _scenes(5, 100, motif=True))
    assert set(MOTIF_SYNONYMS) <= set(words(motif))


def test_original_caption_is_short_and_noisy():
    rng = np.random.default_rng(1)
    scenes = _scenes(6, 400, n_objects=3, n_groups=2)
    forbidden = {*NUMBERS, *BACKGROUNDS, "gray", *SIZES, "little", "big", "background"}
    wrong = 0
    for s in scenes:
        c = original_caption(s, rng)
        ws = words(c)
        assert not forbidden & set(ws), c
        facts = parse_caption(c)
        assert len(facts) == 1 and facts[0][0] == "object", c
        _, shape, colour, _ = facts[0]
        wrong += shape != s.groups[0].shape or colour not in (None, s.groups[0].colour)
    assert 0.04 < wrong / len(scenes) < 0.18  # wrong_p = 0.1
    clean = [original_caption(s, rng, wrong_p=0.0) for s in scenes]
    for s, c in zip(scenes, clean):
        (_, shape, colour, _) = parse_caption(c)[0]
        assert shape == s.groups[0].shape and colour in (None, s.groups[0].colour)
        assert (words(c)[-1] in W.PLURAL.values()) == (s.groups[0].count > 1), c
    share_colour = np.mean([parse_caption(c)[0][2] is not None for c in clean])
    assert 0.4 < share_colour < 0.6


def test_parse_caption_forms():
    assert parse_caption("the number of red circles is three") == (("count", "circle", "red", 3),)
    assert parse_caption("red circles, two in total") == (("count", "circle", "red", 2),)
    assert parse_caption("a pig: two purple squares") == (("count", "square", "purple", 2),)
    assert parse_caption("a big golden wedge on a gray background") == (
        ("object", "triangle", "yellow", "large"),
        ("background", "grey"),
    )
    assert parse_caption("a box below a red disc") == (
        ("object", "circle", "red", None),
        ("object", "square", None, None),
        ("relation", ("circle", "red"), "above", ("square", None)),
    )
    assert parse_caption("a pig") == ()


def test_check_facts_partial_specs_and_relations():
    a, b = Group("circle", "red", "small", 2), Group("square", "blue", "large", 1)
    s = Scene("white", (a, b), (((5, 8), (5, 20)), ((24, 14),)))
    p = perceive(render(s))
    facts = [
        ("object", "circle", "red", "small"),
        ("object", "circle", None, None),
        ("object", None, "blue", None),
        ("object", "circle", "red", "large"),
        ("count", "circle", "red", 2),
        ("count", "circle", None, 3),
        ("count", None, None, 3),
        ("background", "white"),
        ("background", "grey"),
        ("relation", ("circle", "red"), "left of", ("square", "blue")),
        ("relation", ("square", None), "right of", ("circle", None)),
        ("relation", ("circle", "red"), "above", ("square", "blue")),
        ("relation", ("triangle", None), "above", ("square", "blue")),
    ]
    want = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0]
    assert check_facts(facts, p).tolist() == [bool(x) for x in want]
    assert check_facts(scene_facts(s), p).all()
    with pytest.raises(ValueError, match="fact kind"):
        check_facts([("colour", "red")], p)


def test_fact_questions():
    assert fact_question(("object", "circle", "red", None)) == "is there a red circle?"
    assert (
        fact_question(("object", "circle", "orange", "small")) == "is there a small orange circle?"
    )
    assert fact_question(("object", None, "orange", None)) == "is there an orange shape?"
    assert fact_question(("count", "square", None, 3)) == "are there exactly three squares?"
    assert fact_question(("count", "square", "red", 1)) == "is there exactly one red square?"
    assert fact_question(("background", "black")) == "is the background black?"
    q = fact_question(("relation", ("circle", "red"), "left of", ("square", "blue")))
    assert q == "is the red circle left of the blue square?"
