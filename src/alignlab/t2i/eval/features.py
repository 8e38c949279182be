"""Distribution distances between image sets in any feature space (Imagen 3 Sec. 3.2.2).

The report measures image quality with FID (Inception features), FD-Dino and CMMD (CLIP
features) after Vasconcelos et al. 2024 (Table 1). Both functions here take feature arrays
(N, D) from any extractor, so the same code gives FID, FD-Dino or an FD in a small world's
feature space.

- `frechet_distance`: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) with unbiased
  (N - 1) covariances, in float64; equal to torchmetrics' FrechetInceptionDistance with a
  custom feature extractor producing the same features (torchmetrics takes the trace term as
  the sum of the square roots of the eigenvalues of S_a S_b; we take the eigenvalues of the
  symmetric S_a^{1/2} S_b S_a^{1/2}, which are the same numbers, computed more stably).
- `cmmd`: as google-research/cmmd (`distance.py`): squared MMD with the Gaussian RBF kernel
  k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), sigma = 10, times 1000, using the
  minimum-variance (biased, V-statistic) estimator of Gretton et al. 2012 Eq. 5: plain means
  of the three kernel matrices, diagonals included, so CMMD(x, x) = 0. `unbiased=True` gives
  the U-statistic instead (diagonals of k_xx and k_yy left out).
"""

from __future__ import annotations

import numpy as np

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def _feats(x: object, name: str, min_rows: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature array, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a


def gaussian_stats(feats: object) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (N - 1) covariance of (N, D) features, float64."""
    f = _feats(feats, "features", 2)
    mu = f.mean(axis=0)
    c = f - mu
    return mu, (c.T @ c) / (f.shape[0] - 1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((s + s.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise ValueError("means (D,) and covariances (D, D) must have matching dimensions")
    r = _psd_sqrt(cov_a)
    mid = r @ cov_b @ r
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2.0), 0.0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)


def frechet_distance(feats_a: object, feats_b: object) -> float:
    """Fréchet distance between two (N, D) feature sets (FID when the features are Inception's)."""
    a = _feats(feats_a, "feats_a", 2)
    b = _feats(feats_b, "feats_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _kernel_mean(x, y, gamma, exclude_diag=False, block=2048) -> float:
    """Mean of exp(-gamma ||x_i - y_j||^2) over (i, j), in row blocks (memory O(block * N))."""
    xn = np.einsum("ij,ij->i", x, x)
    yn = np.einsum("ij,ij->i", y, y)
    total = 0.0
    for s in range(0, x.shape[0], block):
        d2 = -2.0 * (x[s : s + block] @ y.T) + xn[s : s + block, None] + yn[None, :]
        k = np.exp(-gamma * d2)
        if exclude_diag:
            idx = np.arange(k.shape[0])
            k[idx, s + idx] = 0.0
        total += float(k.sum())
    n = x.shape[0] * y.shape[0] - (x.shape[0] if exclude_diag else 0)
    return total / n


def cmmd(
    x: object,
    y: object,
    sigma: float = CMMD_SIGMA,
    scale: float = CMMD_SCALE,
    *,
    unbiased: bool = False,
) -> float:
    """CMMD: scale x squared MMD between (N, D) and (M, D) embeddings, Gaussian RBF kernel of
    bandwidth sigma (gamma = 1 / (2 sigma^2)), as google-research/cmmd (see module docstring)."""
    a = _feats(x, "x", 2 if unbiased else 1)
    b = _feats(y, "y", 2 if unbiased else 1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx = _kernel_mean(a, a, gamma, unbiased)
    k_yy = _kernel_mean(b, b, gamma, unbiased)
    k_xy = _kernel_mean(a, b, gamma)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))
