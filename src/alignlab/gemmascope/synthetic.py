"""Toy superposition data with a known ground-truth dictionary, for SAE training tests.

The notes' comparison 3 ("Training on an identical synthetic stream") feeds the same activation
stream to SAELens's `SAETrainer` and to ours and scores dictionary recovery against the truth
(`alignlab.gemmascope.metrics.mean_max_cosine`). The generator (in the spirit of Elhage et al.
2022's toy models of superposition and Sharkey et al. 2022's sparse-coding toys):

    D  ∈ R^{n_features × d_in}   rows i.i.d. N(0, I) normalised to unit norm (seeded), so for
                                  n_features > d_in the features are in superposition;
    c  ∈ R^{n × n_features}       sparse, non-negative: feature i is active in a sample with
                                  probability p_i, independently, with magnitude
                                  offset + scale · Z, Z ~ |N(0,1)|, Exp(1), U(0,1) or 1;
    x  = c D (+ N(0, noise_std² I)).

Firing probabilities follow a Zipf-like law p_i ∝ (i + 1)^(−zipf_exponent) (feature 0 the most
frequent; exponent 0 = all equal), scaled so that Σ p_i is the configured expected L0, with
probabilities capped at 1 (the excess spread over the other features). Optionally, the first
2·k features form k correlated pairs (2j, 2j + 1): in each sample, with probability
`pair_correlation`, feature 2j + 1 copies feature 2j's on/off state (its magnitude is still
drawn independently); otherwise it fires on its own with p_{2j+1}.

Sampling never touches the dense n × n_features matrix: each feature's active samples are
drawn as the cumulative sums of geometric gaps (exactly Bernoulli(p_i) per sample), and
x = c D is a sparse-dense (CSR) product. The codes come back dense on request.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.core.config import ConfigError, param, validate
from alignlab.core.errors import AlignlabError

__all__ = ["MAGNITUDES", "SyntheticActivations", "SyntheticConfig", "firing_probabilities"]

MAGNITUDES = ("half_normal", "exponential", "uniform", "constant")


@dataclass
class SyntheticConfig:
    """Toy superposition settings.

    Give exactly one of `l0` (expected active features per sample) and `firing_prob` (mean
    per-feature firing probability; l0 = firing_prob · n_features). `SyntheticActivations`
    checks the settings (`alignlab.core.config.validate`).
    """

    d_in: int = param(help="dimension of the activations x", ge=1)
    n_features: int = param(help="features in the true dictionary D", ge=1)
    l0: float | None = param(None, gt=0, help="expected active features per sample")
    firing_prob: float | None = param(None, gt=0, le=1, help="mean P(feature fires), instead of l0")
    magnitude: str = param(
        "half_normal",
        choices=MAGNITUDES,
        help="Z in magnitude = offset + scale · Z: |N(0,1)|, Exp(1), U(0,1) or 1",
    )
    magnitude_scale: float = param(1.0, ge=0, help="the scale of an active feature's magnitude")
    magnitude_offset: float = param(0.0, ge=0, help="the offset of an active feature's magnitude")
    zipf_exponent: float = param(0.5, ge=0, help="p_i ∝ (i + 1)^(−exponent); 0.5: p_0 = 64 p_4095")
    noise_std: float = param(0.0, ge=0, help="std of Gaussian noise on every coordinate of x")
    n_correlated_pairs: int = param(0, ge=0, help="co-firing pairs (2j, 2j + 1), see module doc")
    pair_correlation: float = param(0.0, ge=0, le=1, help="P(feature 2j + 1 copies 2j's state)")
    seed: int = param(0, help="seeds the dictionary; a stream's default seed derives from it")

    def validate(self) -> None:
        """The rules that relate several fields."""
        if (self.l0 is None) == (self.firing_prob is None):
            raise ConfigError(
                "l0",
                "must be set exactly when firing_prob is not, got "
                f"l0={self.l0!r}, firing_prob={self.firing_prob!r}",
            )
        if self.expected_l0_target > self.n_features:
            raise ConfigError(
                "l0", f"must be <= n_features ({self.n_features}), got {self.expected_l0_target}"
            )
        if self.magnitude_scale + self.magnitude_offset <= 0:
            raise ConfigError(
                "magnitude_scale",
                "+ magnitude_offset must be > 0 (else every coefficient is 0), got "
                f"{self.magnitude_scale} + {self.magnitude_offset}",
            )
        if 2 * self.n_correlated_pairs > self.n_features:
            raise ConfigError(
                "n_correlated_pairs",
                f"must be <= n_features / 2 ({self.n_features} features), "
                f"got {self.n_correlated_pairs}",
            )

    @property
    def expected_l0_target(self) -> float:
        """The configured Σ p_i before pair correlations (l0, or firing_prob · n_features)."""
        if self.l0 is not None:
            return float(self.l0)
        return float(self.firing_prob) * self.n_features

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def firing_probabilities(n_features: int, l0: float, zipf_exponent: float) -> np.ndarray:
    """p_i = min(1, s · (i + 1)^(−zipf_exponent)) with s chosen so that Σ p_i = l0 (float64).

    Water-filling: the k most frequent features saturate at 1 and the rest share l0 − k in
    proportion to their weights, for the smallest k that keeps feature k below 1.
    """
    if not 0 < l0 <= n_features:
        raise AlignlabError(f"l0 must be in (0, n_features={n_features}], got {l0}")
    w = np.arange(1, n_features + 1, dtype=np.float64) ** (-float(zipf_exponent))
    tail = np.cumsum(w[::-1])[::-1]  # tail[k] = Σ_{i >= k} w_i
    for k in range(n_features):
        s = (l0 - k) / tail[k]
        if s * w[k] <= 1.0:
            p = np.minimum(1.0, s * w)
            p[:k] = 1.0
            return p
    return np.ones(n_features)  # l0 == n_features


class SyntheticActivations:
    """A seeded ground-truth dictionary and a sampler of x = c D (+ noise).

        gen = SyntheticActivations(SyntheticConfig(d_in=64, n_features=512, l0=8))
        x, c = gen.sample(4096)                # codes on request
        for x in gen.stream(4096, seed=1): ... # deterministic, endless (or n_batches)

    `D` is (n_features, d_in) with unit-norm rows; `p` the per-feature firing probabilities
    (after pair correlations); `expected_l0` = Σ p (the true mean of ‖c‖₀ per sample, up to
    coefficients that come out exactly 0). Everything is float32 on `device` (CPU by default);
    a CUDA generator gives different draws than a CPU one for the same seed.
    """

    def __init__(self, config: SyntheticConfig, device: str | torch.device = "cpu"):
        validate(config)
        self.config = config
        self.device = torch.device(device)
        n, d = config.n_features, config.d_in
        g = torch.Generator(device="cpu").manual_seed(int(config.seed))
        D = torch.randn(n, d, generator=g, dtype=torch.float64)
        D /= D.norm(dim=1, keepdim=True)
        self.D = D.to(device=self.device, dtype=torch.float32)
        self.D /= self.D.norm(dim=1, keepdim=True)  # unit norm in float32 too
        base = firing_probabilities(n, config.expected_l0_target, config.zipf_exponent)
        self._base_p = base
        p = base.copy()
        k, rho = config.n_correlated_pairs, config.pair_correlation
        if k:
            a, b = np.arange(0, 2 * k, 2), np.arange(1, 2 * k, 2)
            p[b] = rho * base[a] + (1 - rho) * base[b]
        self.p = torch.from_numpy(p)  # float64, CPU
        with np.errstate(divide="ignore"):  # log(1 - 1) = -inf for saturated features
            self._log1m_p = torch.from_numpy(np.log1p(-base)).to(self.device)

    # --- properties -------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def n_features(self) -> int:
        return self.config.n_features

    @property
    def expected_l0(self) -> float:
        """Σ_i P(feature i active) = E‖c‖₀ (exact, pair correlations included)."""
        return float(self.p.sum())

    def new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    # --- sampling ---------------------------------------------------------------------------

    def _active(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the active entries, each feature independently Bernoulli(base p_i).

        For feature i the gaps between consecutive active rows are i.i.d. Geometric(p_i) on
        {1, 2, ...}: G = 1 + floor(log(1 − U) / log(1 − p_i)), U ~ U[0, 1). Each feature gets
        enough gaps to pass row n − 1 with overwhelming probability; a feature that falls short
        continues from its last active row with more gaps (so the draw stays exact).
        """
        dev = self.device
        p = torch.from_numpy(self._base_p).to(dev)
        mean = n * p
        m = (mean + 6.0 * torch.sqrt(mean * (1 - p)) + 8.0).ceil().long().clamp(max=n)
        todo = torch.nonzero(p > 0).squeeze(1)  # features with p = 0 never fire
        m = m[todo]
        base = torch.full((len(todo),), -1, dtype=torch.long, device=dev)  # last active row
        rows_all, cols_all = [], []
        while len(todo):
            total = int(m.sum())
            seg = torch.repeat_interleave(torch.arange(len(todo), device=dev), m)
            u = torch.rand(total, generator=g, device=dev, dtype=torch.float64)
            # log1m = -inf for p = 1 gives gaps of exactly 1; clamping keeps ints small and a
            # gap of n + 1 already passes the last row from any start >= -1.
            gaps = torch.floor(torch.log1p(-u) / self._log1m_p[todo][seg]).clamp(max=n) + 1
            csum = torch.cumsum(gaps.long(), 0)
            ends = torch.cumsum(m, 0)
            offset = torch.cat([csum.new_zeros(1), csum])[ends - m]  # csum before each segment
            pos = csum - offset[seg] + base[seg]
            last = pos[ends - 1]
            ok = pos < n
            rows_all.append(pos[ok])
            cols_all.append(todo[seg[ok]])
            more = last < n - 1  # may still fire after `last`: continue from there
            todo, base, m = todo[more], last[more], (m[more] * 2).clamp(max=n)
        return torch.cat(rows_all), torch.cat(cols_all)

    def _magnitudes(self, k: int, g: torch.Generator) -> torch.Tensor:
        cfg = self.config
        dev = self.device
        if cfg.magnitude == "half_normal":
            z = torch.randn(k, generator=g, device=dev).abs_()
        elif cfg.magnitude == "exponential":
            z = torch.empty(k, device=dev).exponential_(1.0, generator=g)
        elif cfg.magnitude == "uniform":
            z = torch.rand(k, generator=g, device=dev)
        else:
            z = torch.ones(k, device=dev)
        return z.mul_(cfg.magnitude_scale).add_(cfg.magnitude_offset)

    def _sparse_codes(self, n: int, g: torch.Generator) -> torch.Tensor:
        """The codes as a (n, n_features) sparse CSR float32 tensor."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise AlignlabError(f"batch size must be an integer >= 1, got {n!r}")
        n = int(n)
        F = self.n_features
        rows, cols = self._active(n, g)
        k, rho = self.config.n_correlated_pairs, self.config.pair_correlation
        if k:
            copy = torch.rand(n, k, generator=g, device=self.device) < rho  # (n, pairs)
            pair_of = cols // 2
            in_pairs = cols < 2 * k
            is_b = in_pairs & (cols % 2 == 1)
            is_a = in_pairs & (cols % 2 == 0)
            pj = pair_of.clamp(max=k - 1)
            copied = copy[rows, pj]
            drop_b = is_b & copied  # b's own draw is overridden where it copies a
            new_a = is_a & copied  # ... by a's state
            rows = torch.cat([rows[~drop_b], rows[new_a]])
            cols = torch.cat([cols[~drop_b], cols[new_a] + 1])
        order = torch.argsort(rows * F + cols)
        rows, cols = rows[order], cols[order]
        vals = self._magnitudes(len(rows), g)
        crow = torch.zeros(n + 1, dtype=torch.long, device=self.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            return torch.sparse_csr_tensor(
                crow, cols, vals, (n, F), device=self.device, check_invariants=False
            )

    def _x(self, c: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = c @ self.D if c.layout == torch.strided else torch.sparse.mm(c, self.D)
        if self.config.noise_std > 0:
            x += self.config.noise_std * torch.randn(x.shape, generator=g, device=self.device)
        return x

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, sparse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, c): n samples (n, d_in) and their true codes (n, n_features), dense unless
        `sparse` (then a CSR tensor). `generator` defaults to torch's global CPU RNG state
        via a fresh generator seeded from it."""
        g = generator if generator is not None else self._default_generator()
        cs = self._sparse_codes(n, g)
        x = self._x(cs, g)
        return x, (cs if sparse else cs.to_dense())

    def batch(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples x (n, d_in), float32."""
        g = generator if generator is not None else self._default_generator()
        return self._x(self._sparse_codes(n, g), g)

    def stream(
        self, batch_size: int, seed: int | None = None, n_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Batches (batch_size, d_in), deterministic given `seed` (default config.seed + 1),
        endless unless `n_batches` is given. Usable directly as SAELens's `data_provider`."""
        g = self.new_generator(self.config.seed + 1 if seed is None else seed)
        i = 0
        while n_batches is None or i < n_batches:
            yield self.batch(batch_size, g)
            i += 1

    def _default_generator(self) -> torch.Generator:
        seed = int(torch.randint(0, 2**62, (1,)))
        return self.new_generator(seed)
