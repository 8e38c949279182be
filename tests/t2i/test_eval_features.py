"""Fréchet distance and CMMD in any feature space (Imagen 3 Sec. 3.2.2, Table 1)."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from alignlab.core.resources import torch_threads
from alignlab.t2i.eval.features import _kernel_mean, cmmd, frechet_distance


class Extractor(torch.nn.Module):
    """A fixed random projection of the pixels (a stand-in for any feature network)."""

    num_features = 12

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3 * 8 * 8, 12, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x.double().flatten(1) @ self.proj / 8)


def test_frechet_distance_equals_torchmetrics_fid_with_a_custom_extractor():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(300, 3, 8, 8, generator=g)
    fake = (torch.rand(250, 3, 8, 8, generator=g) * 0.8 + 0.15).clamp(0, 1)
    ext = Extractor()
    with torch_threads(1):
        fid = FrechetInceptionDistance(feature=ext)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        ref = float(fid.compute())
        fa, fb = ext(real).numpy(), ext(fake).numpy()
    ours = frechet_distance(fb, fa)
    assert ref > 0.01
    assert ours == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_properties():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    assert abs(frechet_distance(a, a)) < 1e-9
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(shift @ shift, rel=1e-9)
    b = rng.normal(size=(400, 6)) * 1.7
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = a.mean(0) - b.mean(0)
    ref = mu @ mu + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(a, b[:, :5])
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], b)


def _cmmd_reference(x, y, sigma=10.0, scale=1000.0, unbiased=False):
    """CMMD written out plainly: every pairwise squared distance, then kernel means."""

    def k(u, v):
        return np.exp(-((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if unbiased:
        n, m = len(x), len(y)
        sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        return scale * (sxx + syy - 2 * kxy.mean())
    return scale * (kxx.mean() + kyy.mean() - 2 * kxy.mean())


def test_cmmd_equals_a_plain_reimplementation_and_is_zero_on_itself():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 16)) * 4
    y = rng.normal(size=(90, 16)) * 4 + 1.5
    ours = cmmd(x, y)
    assert ours > 1.0
    assert ours == pytest.approx(_cmmd_reference(x, y), rel=1e-10)
    assert cmmd(x, y, unbiased=True) == pytest.approx(
        _cmmd_reference(x, y, unbiased=True), rel=1e-10
    )
    assert cmmd(x, y, sigma=3.0, scale=1.0) == pytest.approx(
        _cmmd_reference(x, y, sigma=3.0, scale=1.0), rel=1e-10
    )
    assert cmmd(x, x) == 0.0
    assert cmmd(x, x.copy()) == 0.0
    # row blocks give the same kernel means
    assert _kernel_mean(x, y, 0.005, block=7) == pytest.approx(_kernel_mean(x, y, 0.005), rel=1e-12)
    assert _kernel_mean(x, x, 0.005, True, block=7) == pytest.approx(
        _kernel_mean(x, x, 0.005, True), rel=1e-12
    )
    # more distant sets are farther apart
    assert cmmd(x, y + 3) > ours
    with pytest.raises(ValueError, match="embedding dimensions differ"):
        cmmd(x, y[:, :3])
