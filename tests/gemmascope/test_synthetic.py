import math

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemmascope.metrics import mean_max_cosine
from alignlab.gemmascope.synthetic import (
    SyntheticActivations,
    SyntheticConfig,
    firing_probabilities,
)


def make(**kw) -> SyntheticActivations:
    base = dict(d_in=16, n_features=64, l0=4.0)
    return SyntheticActivations(SyntheticConfig(**{**base, **kw}))


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_stream_different_seed_different():
    gen = make()
    a = list(gen.stream(32, seed=5, n_batches=3))
    b = list(make().stream(32, seed=5, n_batches=3))
    c = list(gen.stream(32, seed=6, n_batches=3))
    assert len(a) == 3
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # successive batches differ


def test_default_stream_seed_is_derived_from_config_seed():
    x = next(make(seed=3).stream(16))
    assert torch.equal(x, next(make(seed=3).stream(16)))
    assert not torch.equal(x, next(make(seed=4).stream(16)))


def test_dictionary_seeded_and_unit_norm():
    a, b, c = make(seed=1).D, make(seed=1).D, make(seed=2).D
    assert a.shape == (64, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(64), atol=1e-6, rtol=0)


def test_sample_matches_batch_and_stream_for_same_generator():
    gen = make(noise_std=0.1)
    x1, _ = gen.sample(20, gen.new_generator(9))
    x2 = gen.batch(20, gen.new_generator(9))
    x3 = next(gen.stream(20, seed=9))
    assert torch.equal(x1, x2) and torch.equal(x1, x3)


# --- the generative model ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_features=512, l0=8.0, zipf_exponent=0.0),
        dict(n_features=512, l0=8.0, zipf_exponent=0.5),
        dict(n_features=64, l0=12.0, zipf_exponent=2.0),  # the first features saturate at p = 1
        dict(n_features=256, l0=None, firing_prob=0.02),
        dict(n_features=64, l0=6.0, n_correlated_pairs=8, pair_correlation=0.7),
    ],
)
def test_empirical_l0_matches_expected(kw):
    gen = make(**kw)
    n = 20000
    _, c = gen.sample(n, gen.new_generator(0))
    active = c != 0
    per_sample = active.sum(1).double()
    # standard error of the mean L0 (pairs make the count's variance larger; bound it by 2x)
    se = math.sqrt(2 * float((gen.p * (1 - gen.p)).sum()) / n)
    assert abs(per_sample.mean().item() - gen.expected_l0) < 5 * se + 1e-9
    # and every feature fires at its own rate
    freq = active.double().mean(0)
    sd = (gen.p * (1 - gen.p) / n).sqrt()
    z = ((freq - gen.p).abs() / sd.clamp_min(1e-12))[gen.p < 1]
    assert z.max() < 5.5
    assert torch.all(freq[gen.p == 1] == 1)


def test_expected_l0_is_configured_value_without_pairs():
    assert make(l0=4.0).expected_l0 == pytest.approx(4.0, rel=1e-12)
    assert make(n_features=64, l0=None, firing_prob=0.25).expected_l0 == pytest.approx(16.0)


def test_x_equals_codes_times_dictionary_without_noise():
    gen = make(n_features=300, l0=10.0)
    x, c = gen.sample(500, gen.new_generator(1))
    assert x.shape == (500, 16) and c.shape == (500, 300)
    assert x.dtype == torch.float32 and c.dtype == torch.float32
    assert torch.all(c >= 0)
    exact = (c.double() @ gen.D.double()).float()
    torch.testing.assert_close(x, exact, atol=1e-5, rtol=1e-6)


def test_noise_is_added_with_configured_std():
    gen = make(noise_std=0.5)
    x, c = gen.sample(4000, gen.new_generator(2))
    resid = x - c @ gen.D
    assert abs(resid.std().item() - 0.5) < 0.02
    assert abs(resid.mean().item()) < 0.02


def test_sparse_codes_equal_dense():
    gen = make()
    x1, cs = gen.sample(50, gen.new_generator(3), sparse=True)
    x2, cd = gen.sample(50, gen.new_generator(3))
    assert cs.layout == torch.sparse_csr
    assert torch.equal(cs.to_dense(), cd) and torch.equal(x1, x2)


@pytest.mark.parametrize(
    "magnitude,check",
    [
        ("constant", lambda v: torch.all(v == 1.5)),
        ("uniform", lambda v: v.min() >= 0.5 and v.max() <= 1.5),
        ("exponential", lambda v: v.min() >= 0.5 and abs(v.mean().item() - 1.5) < 0.05),
        ("half_normal", lambda v: v.min() >= 0.5 and abs(v.mean().item() - 1.298) < 0.05),
    ],
)
def test_magnitude_distributions(magnitude, check):
    gen = make(magnitude=magnitude, magnitude_offset=0.5, magnitude_scale=1.0)
    _, c = gen.sample(3000, gen.new_generator(4))
    assert check(c[c != 0])


def test_correlated_pairs_co_fire():
    gen = make(n_features=32, l0=4.0, zipf_exponent=0.0, n_correlated_pairs=2, pair_correlation=0.8)
    _, c = gen.sample(40000, gen.new_generator(5))
    a, b = c[:, 0] != 0, c[:, 1] != 0
    p = 4.0 / 32
    # P(b | a) = rho + (1 - rho) p; P(b | not a) = (1 - rho) p
    assert abs(b[a].float().mean().item() - (0.8 + 0.2 * p)) < 0.02
    assert abs(b[~a].float().mean().item() - 0.2 * p) < 0.01
    # an unpaired feature is independent of its neighbour
    e, f = c[:, 4] != 0, c[:, 5] != 0
    assert abs(f[e].float().mean().item() - p) < 0.03


def test_firing_probabilities_water_filling():
    p = firing_probabilities(100, 10.0, 0.5)
    assert p.sum() == pytest.approx(10.0, rel=1e-12)
    assert np.all(np.diff(p) <= 0) and p.max() <= 1
    p = firing_probabilities(10, 8.0, 3.0)  # steep: the head saturates
    assert p.sum() == pytest.approx(8.0, rel=1e-12)
    assert p[0] == 1.0 and np.all(p <= 1)
    assert np.array_equal(firing_probabilities(5, 5.0, 1.0), np.ones(5))
    assert np.allclose(firing_probabilities(8, 2.0, 0.0), 0.25)


def test_dictionary_recovers_itself():
    gen = make()
    r = mean_max_cosine(gen.D[torch.randperm(64)], gen.D)
    assert r.mean == pytest.approx(1.0, abs=1e-6)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(n_features=0), "n_features must be >= 1, got 0"),
        (dict(d_in=0), "d_in must be >= 1, got 0"),
        (dict(l0=65.0), r"l0 must be <= n_features \(64\), got 65.0"),
        (dict(l0=0.0), "l0 must be > 0, got 0.0"),
        (dict(l0=None), "l0 must be set exactly when firing_prob is not"),
        (dict(firing_prob=0.1), "l0 must be set exactly when firing_prob is not"),
        (dict(l0=None, firing_prob=1.5), r"firing_prob must be in \(0, 1\], got 1.5"),
        (dict(magnitude="gamma"), "magnitude must be one of half_normal, exponential"),
        (dict(noise_std=-1.0), "noise_std must be >= 0, got -1.0"),
        (dict(magnitude_scale=0.0, magnitude_offset=0.0), r"magnitude_scale \+ magnitude_offset"),
        (dict(n_correlated_pairs=33), "n_correlated_pairs must be <= n_features / 2"),
        (dict(pair_correlation=1.5), r"pair_correlation must be in \[0, 1\], got 1.5"),
        (dict(zipf_exponent=float("nan")), "zipf_exponent must be >= 0, got nan"),
    ],
)
def test_config_validation_names_the_field(kw, message):
    with pytest.raises(AlignlabError, match=f"^Invalid config: {message}"):
        make(**kw)


def test_bad_batch_size():
    gen = make()
    with pytest.raises(AlignlabError, match="batch size"):
        gen.batch(0, gen.new_generator(0))
