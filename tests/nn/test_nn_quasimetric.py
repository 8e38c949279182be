"""Quasimetric heads: non-negativity, d(x, x) = 0 and the triangle inequality by construction."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alignlab.nn import IQE, MRN, MLPDistance, QuasimetricDistance
from alignlab.nn.quasimetric import interval_union_length

D = 16
# Values that make ties and near-ties likely, besides arbitrary floats.
PALETTE = [0.0, 1.0, -1.0, 0.5, 3.0, 1e-7, -1e-7, 1.0 + 1e-6, 1.0 - 1e-6]
element = st.one_of(st.sampled_from(PALETTE), st.floats(-3, 3, width=32))
vector = arrays(np.float32, D, elements=element)
nudge = arrays(np.float32, D, elements=st.sampled_from([0.0, 1e-6, -1e-6, 1e-3, -1e-3]))


@st.composite
def triples(draw):
    """(x, y, z) either arbitrary or each a tiny nudge of the previous: adversarial near-ties."""
    x = draw(vector)
    if draw(st.booleans()):
        return x, draw(vector), draw(vector)
    y = x + draw(nudge)
    return x, y, y + draw(nudge)


@st.composite
def constrained_heads(draw):
    """MRN or IQE with random structure and, for IQE, a random alpha including the extremes."""
    if draw(st.booleans()):
        return MRN(D, n_components=draw(st.sampled_from([1, 2, 4, 8])))
    head = IQE(D, component_dim=draw(st.sampled_from([1, 2, 4, 8, 16])))
    with torch.no_grad():
        head.alpha_logit.fill_(draw(st.floats(-30, 30)))
    return head


def check_quasimetric(head, x, y, z, rtol):
    d_xy, d_yz, d_xz = head(x, y), head(y, z), head(x, z)
    assert (d_xy >= 0).all() and (d_yz >= 0).all()
    assert (head(x, x) == 0).all()
    assert (d_xz <= d_xy + d_yz + rtol * (1 + d_xy + d_yz)).all()


@settings(max_examples=200, deadline=None)
@given(constrained_heads(), triples())
def test_constrained_heads_are_quasimetrics_float32(head, xyz):
    x, y, z = (torch.from_numpy(v)[None] for v in xyz)
    with torch.no_grad():
        check_quasimetric(head, x, y, z, rtol=1e-5)


@settings(max_examples=100, deadline=None)
@given(constrained_heads(), triples())
def test_constrained_heads_are_quasimetrics_float64(head, xyz):
    x, y, z = (torch.from_numpy(v).double()[None] for v in xyz)
    with torch.no_grad():
        check_quasimetric(head.double(), x, y, z, rtol=1e-12)


def triangle_gaps(pairwise):
    """gaps[i, j, k] = d(i, j) + d(j, k) - d(i, k): negative where the triangle inequality fails."""
    return pairwise[:, :, None] + pairwise[None, :, :] - pairwise[:, None, :]


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["mrn", "iqe"]), st.integers(0, 2**31 - 1))
def test_randomly_initialised_distance_networks_obey_triangle_on_all_triples(head, seed):
    torch.manual_seed(seed)
    net = QuasimetricDistance(6, 6, embed_dim=D, hidden=(32,), head=head)
    points = 3 * torch.randn(24, 6)
    with torch.no_grad():
        d = net.pairwise(points, points)
    assert (d >= 0).all() and (torch.diagonal(d) == 0).all()
    assert triangle_gaps(d).min() >= -1e-5 * (1 + d.max())


def test_mlp_distance_can_violate_the_triangle_inequality():
    """The ablation breaks what MRN and IQE guarantee, on the very same points."""
    torch.manual_seed(0)
    points = 10 * torch.randn(48, D)
    with torch.no_grad():
        mlp_d = MLPDistance(D, hidden=(64, 64)).pairwise(points, points)
        assert triangle_gaps(mlp_d).min() < -0.1
        assert (torch.diagonal(mlp_d) > 0).all()  # nor is d(x, x) = 0
        for head in (MRN(D, n_components=2), IQE(D, component_dim=4)):
            d = head.pairwise(points, points)
            assert triangle_gaps(d).min() >= -1e-5 * (1 + d.max())


@pytest.mark.parametrize("head", [MRN(D), MRN(D, n_components=4), IQE(D, 4), MLPDistance(D, (32,))])
def test_pairwise_matches_forward_on_every_pair(head):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, D, generator=gen), torch.randn(7, D, generator=gen)
    with torch.no_grad():
        pairwise = head.pairwise(x, y)
        every_pair = head(x.repeat_interleave(7, dim=0), y.repeat(5, 1)).reshape(5, 7)
        paired = head(x[:5], y[:5])
    assert pairwise.shape == (5, 7)
    assert torch.allclose(pairwise, every_pair, atol=1e-6)
    assert torch.allclose(torch.diagonal(pairwise), paired, atol=1e-6)


def test_mrn_by_hand():
    # One component: first half symmetric, second half asymmetric.
    x = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    y = torch.tensor([[3.0, 4.0, 1.0, 3.0]])
    assert MRN(4)(x, y).item() == pytest.approx(5.0 + 1.0)  # ||(-3, -4)|| + max(ReLU(1), ReLU(-2))
    assert MRN(4)(y, x).item() == pytest.approx(5.0 + 2.0)
    # Two components of [sym, asym]: mean of (|0 - 3| + ReLU(0 - 4)) and (|2 - 1| + ReLU(1 - 3)).
    assert MRN(4, n_components=2)(x, y).item() == pytest.approx((3.0 + 1.0) / 2)


def union_length_by_merging(intervals):
    """Independent reference: merge sorted intervals, then add up their lengths."""
    merged = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return sum(hi - lo for lo, hi in merged)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-10, 10), st.integers(0, 6)), min_size=1, max_size=9))
def test_interval_union_length_matches_merging(starts_and_widths):
    intervals = [(lo, lo + w) for lo, w in starts_and_widths]
    lo = torch.tensor([a for a, _ in intervals], dtype=torch.float64)
    hi = torch.tensor([b for _, b in intervals], dtype=torch.float64)
    assert interval_union_length(lo, hi).item() == union_length_by_merging(intervals)


def test_iqe_by_hand():
    head = IQE(4, component_dim=2)  # two groups of two components
    with torch.no_grad():
        head.alpha_logit.fill_(0.0)  # alpha = 1/2
    x = torch.tensor([[0.0, 1.0, 0.0, 5.0]])
    y = torch.tensor([[2.0, 3.0, -1.0, 4.0]])
    # Group 1: [0, 2] u [1, 3] = [0, 3], length 3. Group 2: [0, 0] u [5, 5], length 0.
    assert head(x, y).item() == pytest.approx(0.5 * 1.5 + 0.5 * 3.0)
    # Reverse: group 1: [2, 2] u [3, 3] -> 0; group 2: [-1, 0] u [4, 5] -> 2.
    assert head(y, x).item() == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)


def test_gradients_flow_and_are_finite_at_zero_distance():
    x = torch.randn(4, D, requires_grad=True)
    for head in (MRN(D, n_components=2), IQE(D, 4)):
        head.pairwise(x, x).sum().backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None


def test_iqe_gradcheck_away_from_ties():
    head = IQE(8, component_dim=4).double()
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x, y))


def test_distance_network_shapes_sharing_and_errors():
    shared = QuasimetricDistance(6, 6, embed_dim=D, hidden=(8,), head="iqe")
    assert shared.g_encoder is None
    sa = torch.randn(3, 6)
    assert shared(sa, sa).abs().max() == 0  # one encoder: d(x, x) = 0 through the network
    assert shared.pairwise(sa, sa).shape == (3, 3)
    separate = QuasimetricDistance(6, 4, embed_dim=D, hidden=(8,), share_encoder=False)
    assert separate(sa, torch.randn(3, 4)).shape == (3,)
    assert isinstance(
        QuasimetricDistance(6, 6, embed_dim=D, head="mrn", head_kwargs={"n_components": 4}).head,
        MRN,
    )
    with pytest.raises(ValueError, match="valid heads: mrn, iqe, mlp"):
        QuasimetricDistance(6, 6, head="max")
    with pytest.raises(ValueError, match="share_encoder=False"):
        QuasimetricDistance(6, 4)
    with pytest.raises(ValueError, match="divisible"):
        MRN(6, n_components=2)
    with pytest.raises(ValueError, match="divisible"):
        IQE(10, component_dim=4)
