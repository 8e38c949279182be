"""Simulated raters (Imagen 3 Sec. 3.1): utilities, noisy choices, ties, counting, caching."""

import numpy as np
import pytest

from alignlab.core.seeding import generator
from alignlab.t2i import prompts as P
from alignlab.t2i import world
from alignlab.t2i.raters import ASPECTS, SimulatedRaters

WC = world.WorldConfig()
RED3 = world.Scene(
    "white",
    (world.Group("circle", "red", "large", 3),),
    (((6.0, 6.0), (20.0, 8.0), (10.0, 22.0)),),
)
BLUE2 = world.Scene(
    "white", (world.Group("circle", "blue", "large", 2),), (((6.0, 6.0), (20.0, 8.0)),)
)
PROMPT = P.Prompt(
    "three red circles",
    (("object", "circle", "red", None), ("count", "circle", "red", 3)),
    "genai",
)


@pytest.fixture(scope="module")
def images():
    return world.render(RED3, WC), world.render(BLUE2, WC)


def test_utilities_follow_the_aspects(images):
    good, bad = images
    r = SimulatedRaters(n_raters=4, seed=0)
    assert r.utility("alignment", PROMPT, good) == 1.0
    assert r.utility("alignment", PROMPT, bad) == 0.0
    # appeal hides the prompt: any prompt gives the same value
    assert r.utility("appeal", PROMPT, bad) == r.utility("appeal", "anything", bad) > 0.9
    app = r.utility("appeal", PROMPT, bad)
    assert r.utility("overall", PROMPT, bad) == pytest.approx(0.6 * 0.0 + 0.4 * app)
    docci = P.prompt_set("docci", generator(0, "docci-test"), n=1)[0]
    ref = world.render(docci.reference, WC)
    assert r.utility("detailed", docci, ref) > 0.95 > r.utility("detailed", docci, bad)
    with pytest.raises(ValueError, match="reference"):
        r.utility("detailed", PROMPT, good)
    with pytest.raises(ValueError, match="valid aspects: " + ", ".join(ASPECTS)):
        r.utility("style", PROMPT, good)


def test_choices_prefer_the_better_image_with_logistic_noise(images):
    good, bad = images
    r = SimulatedRaters(n_raters=3, noise=0.5, band=0.0, seed=1)
    rng = np.random.default_rng(0)
    n = 20000
    u_l, u_r = np.full(n, 0.6), np.full(n, 0.4)
    c = r.choose(u_l, u_r, [0] * n, rng)
    # Gumbel differences are logistic: P(left) = sigmoid(du / s)
    expected = 1 / (1 + np.exp(-0.2 / r.scale(0)))
    assert abs((c == "left").mean() - expected) < 0.015
    assert set(np.unique(c)) == {"left", "right"}
    # noiseless raters always pick the aligned image, on either side
    exact = SimulatedRaters(n_raters=2, noise=0.0, band=0.01, seed=0)
    assert exact.rate("alignment", PROMPT, good, bad, 0, rng) == "left"
    assert exact.rate("alignment", PROMPT, bad, good, 1, rng) == "right"
    # identical images fall inside the indifference band
    assert exact.rate("overall", PROMPT, good, good, 0, rng) == "tie"


def test_rater_scales_are_drawn_per_rater_and_stable():
    r = SimulatedRaters(n_raters=20, noise=0.1, seed=3)
    assert len(set(np.round(r.scales, 9))) == 20
    assert np.all((r.scales >= 0.05) & (r.scales <= 0.15))
    assert r.scale("rater00007") == SimulatedRaters(n_raters=1, noise=0.1, seed=3).scale(
        "rater00007"
    )
    assert r.scale("rater00007") != r.scale("rater00008")
    with pytest.raises(ValueError, match="outside the pool"):
        r.scale(20)


def test_rate_batch_is_vectorised_and_perceives_each_image_once(images, monkeypatch):
    good, bad = images
    calls = []
    real = world.perceive
    monkeypatch.setattr(world, "perceive", lambda im, wc=WC: calls.append(1) or real(im, wc))
    r = SimulatedRaters(n_raters=10, noise=0.05, seed=0)
    n = 500
    lefts = np.stack([good, bad] * (n // 2))
    rights = np.stack([bad, good] * (n // 2))
    c = r.rate_batch(
        "alignment",
        [PROMPT] * n,
        lefts,
        rights,
        [i % 10 for i in range(n)],
        np.random.default_rng(0),
    )
    assert len(calls) == 2
    assert (c[0::2] == "left").mean() > 0.99 and (c[1::2] == "right").mean() > 0.99
    with pytest.raises(ValueError, match="rows disagree"):
        r.rate_batch("alignment", [PROMPT], lefts, rights, [0], np.random.default_rng(0))


def test_count_objects_answers_how_many(images):
    good, bad = images
    r = SimulatedRaters(n_raters=1)
    assert r.count_objects(good, "circle") == 3
    assert r.count_objects(good, "circle", "blue") == 0
    assert r.count_objects(bad, "circle", "blue") == 2
    assert r.count_objects(bad, "square") == 0
    with pytest.raises(ValueError, match="valid: circle, square, triangle"):
        r.count_objects(good, "cross")
