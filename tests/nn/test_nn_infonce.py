"""InfoNCE losses against hand-computed cases, gradient checks and the dispatcher."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignlab.nn import (
    INFONCE_KINDS,
    contrastive_accuracy,
    forward_infonce,
    infonce,
    nce_loss,
    symmetric_infonce,
)

L2 = [[2.0, 0.0], [1.0, 3.0]]
L3 = [[1.0, 0.5, -1.0], [0.0, 2.0, 1.0], [3.0, -2.0, 0.5]]


def log_softmax_ce(values, target):
    """-log softmax(values)[target], written out."""
    return -values[target] + math.log(sum(math.exp(v) for v in values))


def by_hand(logits):
    """Row-wise and column-wise cross-entropies and row logsumexps, with plain Python."""
    b = len(logits)
    rows = sum(log_softmax_ce(logits[i], i) for i in range(b)) / b
    cols = sum(log_softmax_ce([logits[i][j] for i in range(b)], j) for j in range(b)) / b
    lse = [math.log(sum(math.exp(v) for v in row)) for row in logits]
    return rows, cols, lse


def test_symmetric_2x2_by_hand():
    # rows: -2 + log(e^2 + 1), -3 + log(e + e^3); columns: -2 + log(e^2 + e), -3 + log(1 + e^3)
    rows = ((-2 + math.log(math.e**2 + 1)) + (-3 + math.log(math.e + math.e**3))) / 2
    cols = ((-2 + math.log(math.e**2 + math.e)) + (-3 + math.log(1 + math.e**3))) / 2
    got = symmetric_infonce(torch.tensor(L2, dtype=torch.float64))
    assert got.item() == pytest.approx((rows + cols) / 2, rel=1e-12)


@pytest.mark.parametrize("logits", [L2, L3])
def test_symmetric_and_forward_by_hand(logits):
    rows, cols, lse = by_hand(logits)
    t = torch.tensor(logits, dtype=torch.float64)
    assert symmetric_infonce(t).item() == pytest.approx((rows + cols) / 2, rel=1e-12)
    penalty = 0.01 * sum(v * v for v in lse) / len(lse)
    assert forward_infonce(t).item() == pytest.approx(rows + penalty, rel=1e-12)
    assert forward_infonce(t, logsumexp_penalty=0.0).item() == pytest.approx(rows, rel=1e-12)
    assert infonce(t, "forward", logsumexp_penalty=0.5).item() == pytest.approx(
        rows + 50 * penalty, rel=1e-12
    )


@pytest.mark.parametrize("logits", [L2, L3])
def test_nce_by_hand(logits):
    b = len(logits)
    # BCE: -log sigmoid(x) = log(1 + e^-x) on the diagonal, -log(1 - sigmoid(x)) = log(1 + e^x) off it.
    total = sum(
        math.log1p(math.exp(-x)) if i == j else math.log1p(math.exp(x))
        for i, row in enumerate(logits)
        for j, x in enumerate(row)
    )
    got = nce_loss(torch.tensor(logits, dtype=torch.float64))
    assert got.item() == pytest.approx(total / b**2, rel=1e-12)


def test_uniform_logits_give_log_b_and_separated_logits_near_zero():
    b = 5
    assert symmetric_infonce(torch.zeros(b, b)).item() == pytest.approx(math.log(b), rel=1e-6)
    assert symmetric_infonce(30 * torch.eye(b)).item() < 1e-10


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_symmetric_is_invariant_to_transposing(b, seed):
    logits = torch.randn(b, b, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.allclose(symmetric_infonce(logits), symmetric_infonce(logits.T))


@pytest.mark.parametrize("loss", [symmetric_infonce, forward_infonce, nce_loss])
def test_gradcheck_float64(loss):
    logits = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (logits,))


def test_dispatcher_matches_functions_and_rejects_unknown_kinds():
    t = torch.tensor(L3)
    assert infonce(t) == symmetric_infonce(t)
    assert infonce(t, "forward") == forward_infonce(t)
    assert infonce(t, "nce") == nce_loss(t)
    with pytest.raises(ValueError, match="valid kinds: symmetric, forward, nce"):
        infonce(t, "cpc")
    assert INFONCE_KINDS == ("symmetric", "forward", "nce")


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 2, 2)])
def test_non_square_logits_are_rejected(shape):
    with pytest.raises(ValueError, match="square"):
        symmetric_infonce(torch.zeros(shape))


def test_accuracy_counts_rows_whose_argmax_is_the_diagonal():
    # Row 0: argmax 0 (hit); row 1: argmax 1 (hit); row 2: argmax 0 (miss).
    assert contrastive_accuracy(torch.tensor(L3)).item() == pytest.approx(2 / 3)
    assert contrastive_accuracy(torch.eye(4)).item() == 1.0
    assert not contrastive_accuracy(torch.eye(3, requires_grad=True)).requires_grad
