import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM
from alignlab.gemma2.data import eval_batches, token_stream
from alignlab.gemmascope.lm_metrics import spliced_lm_metrics
from alignlab.gemmascope.metrics import (
    ReconstructionStats,
    evaluate_reconstruction,
    mean_max_cosine,
)
from alignlab.gemmascope.sae import JumpReLUSAE
from alignlab.gemmascope.synthetic import SyntheticActivations, SyntheticConfig

PAD, EOS, BOS = 0, 1, 2
SPECIAL = (PAD, EOS, BOS)


# --- helpers ----------------------------------------------------------------------------------


def numpy_reference(x, x_hat, f):
    x, x_hat, f = (np.asarray(a, dtype=np.float64) for a in (x, x_hat, f))
    err = ((x - x_hat) ** 2).sum(1)
    var = ((x - x.mean(0)) ** 2).sum(1).mean()
    return {
        "l0": (f != 0).sum(1).mean(),
        "l1": np.abs(f).sum(1).mean(),
        "mse": err.mean(),
        "fvu": err.mean() / var,
        "total_variance": var,
        "counts": (f != 0).sum(0),
    }


def random_data(n=257, d=6, d_sae=20, seed=0, offset=50.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) + offset  # a large mean, as residual streams have
    x_hat = x + 0.3 * torch.randn(n, d, generator=g)
    f = torch.relu(torch.randn(n, d_sae, generator=g) - 1.0)
    return x, x_hat, f


class IdentitySAE:
    """decode(encode(x)) == x exactly."""

    def __init__(self, d):
        self.d_in = self.d_sae = d

    def encode(self, x):
        return x.clone()

    def decode(self, f):
        return f.clone()


class GarbageSAE:
    """Returns large noise for every row it is given, and remembers its inputs."""

    def __init__(self, d):
        self.d_in = self.d_sae = d
        self.inputs = []
        self.g = torch.Generator().manual_seed(123)

    def encode(self, x):
        self.inputs.append(x.clone())
        return 100 * torch.randn(x.shape, generator=self.g)

    def decode(self, f):
        return f


def random_model(seed=0, std=0.2) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(Gemma2Config.preset("tiny")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else std)
    return model


def doc_batches(seq_len=12, batch_size=3, n_docs=12, seed=0):
    """Token windows of a stream of documents <bos> ... <eos> (eval_batches; overlapping by one)."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(3, 512, size=rng.integers(2, 9)).tolist() for _ in range(n_docs)]
    stream = token_stream(docs, bos_id=BOS, eos_id=EOS)
    assert stream[0] == BOS
    return [torch.from_numpy(b) for b in eval_batches(stream, seq_len, batch_size)]


def manual_ce(logits, ids, scored):
    nll = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).double(), ids[:, 1:].flatten(), reduction="none"
    )
    return nll.view(ids.shape[0], -1)[scored]


# --- ReconstructionStats ----------------------------------------------------------------------


def test_streaming_equals_one_shot_numpy_on_uneven_batches():
    x, x_hat, f = random_data()
    stats = ReconstructionStats()
    bounds = [0, 1, 8, 108, 141, 250, 257]
    for a, b in zip(bounds[:-1], bounds[1:]):
        stats.update(x[a:b], x_hat[a:b], f[a:b])
    ref = numpy_reference(x, x_hat, f)
    assert stats.n_tokens == 257
    for key in ("l0", "l1", "mse", "fvu", "total_variance"):
        assert getattr(stats, key) == pytest.approx(ref[key], rel=1e-10), key
    assert stats.mse_per_dim == pytest.approx(ref["mse"] / 6, rel=1e-10)
    assert stats.explained_variance == pytest.approx(1 - ref["fvu"], rel=1e-10)
    np.testing.assert_array_equal(stats.firing_counts, ref["counts"])
    np.testing.assert_allclose(stats.mean, x.double().mean(0).numpy(), rtol=1e-12)
    # one shot gives the same numbers
    one = ReconstructionStats()
    one.update(x, x_hat, f)
    assert one.fvu == pytest.approx(stats.fvu, rel=1e-12)
    assert one.summary()["l0"] == stats.summary()["l0"]


def test_leading_dims_and_mask():
    x, x_hat, f = random_data(n=24)
    mask = torch.arange(24) % 3 != 0
    a = ReconstructionStats()
    a.update(x.view(4, 6, -1), x_hat.view(4, 6, -1), f.view(4, 6, -1), mask=mask.view(4, 6))
    b = ReconstructionStats()
    b.update(x[mask], x_hat[mask], f[mask])
    assert a.n_tokens == b.n_tokens == 16
    assert a.summary() == b.summary()


def test_fvu_of_mean_is_one_and_of_x_is_zero():
    x, _, f = random_data(n=100)
    mean = x.double().mean(0).expand_as(x)
    s = ReconstructionStats()
    s.update(x.double(), mean, f)
    assert s.fvu == pytest.approx(1.0, rel=1e-12)
    s = ReconstructionStats()
    s.update(x, x.clone(), f)
    assert s.fvu == 0.0 and s.mse == 0.0


def test_fvu_is_a_ratio_of_means_not_a_mean_of_ratios():
    # 1-D tokens: two far from the mean, one very close to it; x_hat = x + 0.1 everywhere.
    x = torch.tensor([[-1.0], [1.0], [0.1]], dtype=torch.float64)
    x_hat = x + 0.1
    f = torch.ones(3, 1)
    s = ReconstructionStats()
    s.update(x, x_hat, f)
    err = ((x - x_hat) ** 2).sum(1)
    dev = ((x - x.mean(0)) ** 2).sum(1)
    ratio_of_means = (err.mean() / dev.mean()).item()
    legacy_mean_of_ratios = (err / dev).mean().item()  # SAELens explained_variance_legacy's form
    assert s.fvu == pytest.approx(ratio_of_means, rel=1e-12)
    assert ratio_of_means == pytest.approx(0.01 / (2.0067 / 3), rel=1e-3)
    assert legacy_mean_of_ratios > 10 * s.fvu


def test_dead_and_dense_fractions_on_hand_built_firing():
    # 10 tokens x 5 latents: never / always / exactly 10 % / 20 % / once-with-negative value
    f = torch.zeros(10, 5)
    f[:, 1] = 1.0
    f[3, 2] = 2.0
    f[[0, 9], 3] = 0.5
    f[4, 4] = -1.0  # non-zero counts as firing (SAELens != 0)
    x = torch.randn(10, 3)
    s = ReconstructionStats()
    s.update(x, x, f)
    np.testing.assert_array_equal(s.firing_counts, [0, 10, 1, 2, 1])
    np.testing.assert_allclose(s.firing_frequency, [0, 1, 0.1, 0.2, 0.1])
    np.testing.assert_array_equal(s.dead_mask, [True, False, False, False, False])
    assert s.dead_fraction == pytest.approx(0.2)
    # strictly more than 10 %: latents 1 and 3
    np.testing.assert_array_equal(s.dense_mask, [False, True, False, True, False])
    assert s.dense_fraction == pytest.approx(0.4)
    assert s.l0 == pytest.approx(14 / 10)
    t = ReconstructionStats(dense_threshold=0.5)
    t.update(x, x, f)
    assert t.dense_fraction == pytest.approx(0.2)


def test_log10_frequency_histogram():
    f = torch.zeros(1000, 6)
    f[:, 0] = 1  # frequency 1 -> log 0, the top edge, last bin
    f[:10, 1] = 1  # 1e-2
    f[:1, 2] = 1  # 1e-3
    f[:100, 3] = 1  # 1e-1
    x = torch.zeros(1000, 2)
    s = ReconstructionStats(hist_edges=[-2.5, -1.5, -0.5, 0.0])
    s.update(x, x, f)
    counts, edges, n_dead = s.log10_frequency_histogram()
    assert n_dead == 2
    assert counts.sum() + n_dead == 6
    # 1e-3 is below the first edge and clipped into the first bin with 1e-2
    np.testing.assert_array_equal(counts, [2, 1, 1])
    np.testing.assert_array_equal(edges, [-2.5, -1.5, -0.5, 0.0])
    # the default bins cover 1e-8 .. 1 and also sum to the number of latents
    d = ReconstructionStats()
    d.update(*random_data(n=50, d_sae=40)[:3])
    c, e, nd = d.log10_frequency_histogram()
    assert c.sum() + nd == 40 and e[0] == -8 and e[-1] == 0


def test_reconstruction_stats_errors():
    s = ReconstructionStats()
    with pytest.raises(AlignlabError, match="no tokens"):
        _ = s.fvu
    with pytest.raises(AlignlabError, match="same shape"):
        s.update(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 5))
    with pytest.raises(AlignlabError, match="leading shape"):
        s.update(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(5, 5))
    with pytest.raises(AlignlabError, match="mask"):
        s.update(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 5), mask=torch.ones(3))
    s.update(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 5))
    with pytest.raises(AlignlabError, match="earlier batches"):
        s.update(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 5))
    with pytest.raises(AlignlabError, match="dense_threshold"):
        ReconstructionStats(dense_threshold=1.5)
    with pytest.raises(AlignlabError, match="hist_edges"):
        ReconstructionStats(hist_edges=[0.0, -1.0])


def test_evaluate_reconstruction_with_the_real_sae():
    gen = SyntheticActivations(SyntheticConfig(d_in=16, n_features=64, l0=4.0))
    sae = JumpReLUSAE(16, 64, threshold_init=0.05, generator=torch.Generator().manual_seed(0))
    batches = list(gen.stream(100, seed=1, n_batches=3))
    stats = evaluate_reconstruction(sae, batches)
    x = torch.cat(batches)
    with torch.no_grad():
        f = sae.encode(x)
        ref = numpy_reference(x, sae.decode(f), f)
    assert stats.n_tokens == 300
    assert stats.fvu == pytest.approx(ref["fvu"], rel=1e-6)
    assert stats.l0 == pytest.approx(ref["l0"], rel=1e-12)
    assert evaluate_reconstruction(sae, batches, max_batches=1).n_tokens == 100


# --- mean_max_cosine --------------------------------------------------------------------------


def test_mean_max_cosine_permuted_rescaled_copy_is_one():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(50, 8, generator=g)
    perm = torch.randperm(50, generator=g)
    learned = true[perm] * (0.1 + 5 * torch.rand(50, 1, generator=g))
    learned = torch.cat([learned, torch.randn(30, 8, generator=g)])  # extra latents
    r = mean_max_cosine(learned, true, chunk_size=7)
    assert r.mean == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(r.per_feature, 1.0, atol=1e-6)
    np.testing.assert_array_equal(r.best_latent, torch.argsort(perm).numpy())


def test_mean_max_cosine_hand_case_and_zero_rows():
    true = np.array([[1.0, 0.0], [0.0, 1.0]])
    learned = np.array([[1.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    r = mean_max_cosine(learned, true)
    np.testing.assert_allclose(r.per_feature, [1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-12)
    assert r.mean == pytest.approx(1 / math.sqrt(2))
    r = mean_max_cosine(learned, true, absolute=True)
    np.testing.assert_allclose(r.per_feature, [1 / math.sqrt(2), 1.0], rtol=1e-12)
    # a zero true row has cosine 0 with everything; no NaN
    r = mean_max_cosine(learned, np.vstack([true, [[0.0, 0.0]]]))
    assert np.all(np.isfinite(r.per_feature)) and r.per_feature[2] == 0.0
    # chunking does not change the answer
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 5, generator=g), torch.randn(33, 5, generator=g)
    np.testing.assert_allclose(
        mean_max_cosine(a, b, chunk_size=1).per_feature,
        mean_max_cosine(a, b).per_feature,
        rtol=1e-6,  # float32 products, blocked differently
    )


def test_mean_max_cosine_errors():
    with pytest.raises(AlignlabError, match="dimension 3 but true rows have 4"):
        mean_max_cosine(torch.zeros(5, 3), torch.zeros(2, 4))
    with pytest.raises(AlignlabError, match="2-D"):
        mean_max_cosine(torch.zeros(5), torch.zeros(2, 5))
    with pytest.raises(AlignlabError, match="at least one row"):
        mean_max_cosine(torch.zeros(0, 3), torch.zeros(2, 3))


# --- spliced LM metrics -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def batches():
    return doc_batches()


@pytest.mark.parametrize("site", ["resid_post", "mlp_out", "attn_z"])
def test_identity_sae_gives_zero_delta_loss_and_score_one(model, batches, site):
    m = spliced_lm_metrics(model, batches, site, 1, IdentitySAE(64), SPECIAL)
    assert m.delta_lm_loss == 0.0
    assert m.ce_spliced == m.ce_clean
    assert m.ce_loss_score == 1.0
    assert m.kl_spliced == 0.0 and m.kl_div_score == 1.0
    assert m.ce_ablated != m.ce_clean  # a random model: ablation changes the loss, either way
    assert m.reconstruction["fvu"] == 0.0 and m.reconstruction["mse"] == 0.0
    counted = m.per_position_count > 0
    assert np.all(m.per_position_mse[counted] == 0.0)
    json.dumps(m.to_dict())


def test_clean_and_ablated_ce_match_manual_runs(model, batches):
    layer = 2
    sae = JumpReLUSAE(64, 256, threshold_init=0.05, generator=torch.Generator().manual_seed(0))
    m = spliced_lm_metrics(model, batches, "resid_post", layer, sae, SPECIAL)
    clean, ablated, n = [], [], 0
    with torch.no_grad():
        for ids in batches:
            scored = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)  # no padding
            clean.append(manual_ce(model(ids), ids, scored))
            mask = torch.isin(ids, torch.tensor(SPECIAL))[..., None].float()  # keep specials only
            with model.replace("resid_post", layer, lambda x, mask=mask: x * mask):
                ablated.append(manual_ce(model(ids), ids, scored))
            n += scored.sum().item()
    assert m.n_ce_tokens == n
    assert m.ce_clean == pytest.approx(torch.cat(clean).mean().item(), rel=1e-6)
    assert m.ce_ablated == pytest.approx(torch.cat(ablated).mean().item(), rel=1e-6)
    assert m.delta_lm_loss == pytest.approx(m.ce_spliced - m.ce_clean)
    score = (m.ce_ablated - m.ce_spliced) / (m.ce_ablated - m.ce_clean)
    assert m.ce_loss_score == pytest.approx(score)
    assert m.kl_spliced > 0 and m.kl_ablated > 0


def test_special_positions_are_not_spliced(model, batches):
    layer = 0
    finals = []
    handle = model.model.norm.register_forward_hook(lambda _m, _i, out: finals.append(out.clone()))
    sae = GarbageSAE(64)
    try:
        spliced_lm_metrics(model, batches[:1], "resid_post", layer, sae, SPECIAL)
    finally:
        handle.remove()
    ids = batches[0]
    clean, spliced, _ablated = finals  # one batch: clean, spliced, zero-ablated passes
    keep = ~torch.isin(ids, torch.tensor(SPECIAL))
    # the SAE saw exactly the clean activations at non-special positions
    with torch.no_grad(), model.capture([("resid_post", layer)]) as acts:
        model(ids)
    assert len(sae.inputs) == 1
    assert torch.equal(sae.inputs[0], acts[("resid_post", layer)][keep])
    # position 0 is BOS: causal, so its final hidden state is untouched by garbage elsewhere
    assert ids[0, 0] == BOS
    assert torch.equal(spliced[0, 0], clean[0, 0])
    # ... while spliced positions did change
    assert not torch.allclose(spliced[keep], clean[keep])


def test_per_position_loss_matches_manual(model, batches):
    layer, site = 1, "mlp_out"
    sae = JumpReLUSAE(64, 128, threshold_init=0.02, generator=torch.Generator().manual_seed(3))
    m = spliced_lm_metrics(model, batches, site, layer, sae, SPECIAL)
    T = max(b.shape[1] for b in batches)
    err_sum, cnt = np.zeros(T), np.zeros(T, dtype=np.int64)
    ref = ReconstructionStats()
    with torch.no_grad():
        for ids in batches:
            with model.capture([(site, layer)]) as acts:
                model(ids)
            x = acts[(site, layer)]
            keep = ~torch.isin(ids, torch.tensor(SPECIAL))
            f = sae.encode(x[keep])
            x_hat = sae.decode(f)
            ref.update(x[keep], x_hat, f)
            err = ((x[keep].double() - x_hat.double()) ** 2).sum(-1).numpy()
            np.add.at(err_sum, keep.nonzero()[:, 1].numpy(), err)
            np.add.at(cnt, keep.nonzero()[:, 1].numpy(), 1)
    assert len(m.per_position_mse) == T == 13
    np.testing.assert_array_equal(m.per_position_count, cnt)
    expected = np.where(cnt > 0, err_sum / np.maximum(cnt, 1), np.nan)
    np.testing.assert_allclose(m.per_position_mse, expected, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(
        m.per_position_fvu, expected / ref.total_variance, rtol=1e-6, equal_nan=True
    )
    # the count-weighted mean of per-position FVU is the FVU
    ok = cnt > 0
    assert (m.per_position_fvu[ok] * cnt[ok]).sum() / cnt.sum() == pytest.approx(
        m.reconstruction["fvu"], rel=1e-6
    )
    assert m.reconstruction["fvu"] == pytest.approx(ref.fvu, rel=1e-6)
    assert m.reconstruction["l0"] == pytest.approx(ref.l0, rel=1e-12)
    assert m.n_spliced_tokens == ref.n_tokens == cnt.sum()


def test_padding_is_neither_scored_nor_spliced(model):
    ids = torch.tensor([[BOS, 5, 6, 7, 8, EOS, PAD, PAD], [BOS, 9, 10, 11, 12, 13, 14, 15]])
    m = spliced_lm_metrics(model, [ids], "resid_post", 1, IdentitySAE(64), SPECIAL)
    assert m.n_ce_tokens == 5 + 7  # targets 5..EOS in row 0, all 7 in row 1
    assert m.n_spliced_tokens == 4 + 7
    assert m.delta_lm_loss == 0.0
    with torch.no_grad():
        logits = model(ids, attention_mask=(ids != PAD).long())
    scored = (ids[:, :-1] != PAD) & (ids[:, 1:] != PAD)
    assert m.ce_clean == pytest.approx(manual_ce(logits, ids, scored).mean().item(), rel=1e-6)
    np.testing.assert_array_equal(m.per_position_count, [0, 2, 2, 2, 2, 1, 1, 1])


def test_spliced_metrics_errors(model, batches):
    with pytest.raises(AlignlabError, match="d_in=32"):
        spliced_lm_metrics(model, batches[:1], "resid_post", 0, IdentitySAE(32), SPECIAL)
    with pytest.raises(AlignlabError, match="no token batches"):
        spliced_lm_metrics(model, [], "resid_post", 0, IdentitySAE(64), SPECIAL)
    with pytest.raises(AlignlabError, match="integer ids"):
        spliced_lm_metrics(model, [torch.zeros(2, 3)], "resid_post", 0, IdentitySAE(64), SPECIAL)
    with pytest.raises(AlignlabError, match="layer"):
        spliced_lm_metrics(model, batches[:1], "resid_post", 9, IdentitySAE(64), SPECIAL)
    m = spliced_lm_metrics(
        model, batches, "resid_post", 0, IdentitySAE(64), SPECIAL, max_batches=1, compute_kl=False
    )
    assert m.n_batches == 1 and math.isnan(m.kl_spliced) and math.isnan(m.kl_div_score)
