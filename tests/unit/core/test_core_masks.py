"""Hand-computed tests for steprl.core.masks."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.core import masked_mean, masked_sum, masked_var, masked_whiten

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
# masked entries: 1, 2, 5, 6


def test_masked_sum():
    assert masked_sum(X, M).item() == 14.0  # 1+2+5+6
    assert masked_sum(X, M, dim=-1).tolist() == [3.0, 11.0]
    assert masked_sum(X, M, dim=0).tolist() == [1.0, 7.0, 6.0]


def test_masked_sum_float_mask_and_nan_outside_mask():
    x = torch.tensor([[1.0, float("nan"), float("inf")]])
    m = torch.tensor([[0.5, 0.0, 0.0]])
    assert masked_sum(x, m).item() == 0.5  # 1 * 0.5; NaN and inf are masked out


def test_masked_mean():
    assert masked_mean(X, M).item() == pytest.approx(3.5)  # 14 / 4
    assert masked_mean(X, M, dim=-1).tolist() == [1.5, 5.5]


def test_masked_mean_empty_rows_give_zero_not_nan():
    m = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    out = masked_mean(X, m, dim=-1)
    assert out.tolist() == [1.5, 0.0]
    assert masked_mean(X, torch.zeros_like(m)).item() == 0.0


def test_masked_var():
    # mean 3.5, deviations -2.5 -1.5 1.5 2.5, squares sum 6.25+2.25+2.25+6.25 = 17
    assert masked_var(X, M).item() == pytest.approx(17 / 3)
    assert masked_var(X, M, unbiased=False).item() == pytest.approx(17 / 4)
    # per row: [1,2] -> 0.5/1 ; [5,6] -> 0.5/1
    assert masked_var(X, M, dim=-1).tolist() == pytest.approx([0.5, 0.5])


def test_masked_var_degenerate_is_zero():
    one = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert masked_var(X, one).item() == 0.0  # single element, unbiased
    assert masked_var(X, torch.zeros_like(one), unbiased=False).item() == 0.0


def test_masked_whiten_values():
    std = math.sqrt(17 / 3 + 1e-8)
    out = masked_whiten(X, M)
    expected = [[(1 - 3.5) / std, (2 - 3.5) / std, 0.0], [0.0, (5 - 3.5) / std, (6 - 3.5) / std]]
    assert out.tolist() == [pytest.approx(r, abs=1e-6) for r in expected]
    kept = masked_whiten(X, M, shift_mean=False)
    expected_kept = [[(1 - 3.5) / std + 3.5, (2 - 3.5) / std + 3.5, 0.0], [0.0, (5 - 3.5) / std + 3.5, (6 - 3.5) / std + 3.5]]
    assert kept.tolist() == [pytest.approx(r, abs=1e-6) for r in expected_kept]


def test_masked_whiten_gradient_ignores_nan_outside_mask():
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 5.0]], requires_grad=True)
    m = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    out = masked_whiten(x, m)
    assert torch.isfinite(out).all()
    (out * torch.arange(6.0).reshape(2, 3)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 2] == 0 and x.grad[1, 1] == 0


@settings(max_examples=60, deadline=None)
@given(
    vals=st.lists(st.floats(-100, 100), min_size=6, max_size=40),
    bits=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_whiten_gives_mean_zero_var_one(vals, bits):
    x = torch.tensor(vals, dtype=torch.float64).reshape(1, -1)
    m = torch.tensor(bits[: len(vals)]).reshape(1, -1)
    sel = [v for v, b in zip(vals, bits) if b]
    if len(sel) < 2:
        return
    mu = sum(sel) / len(sel)
    var = sum((v - mu) ** 2 for v in sel) / (len(sel) - 1)
    if var < 1e-3:
        return  # eps dominates; whitening is then only approximately unit variance
    w = masked_whiten(x, m)
    ws = [w[0, i].item() for i, b in enumerate(bits[: len(vals)]) if b]
    assert sum(ws) / len(ws) == pytest.approx(0.0, abs=1e-6)
    assert sum(v * v for v in ws) / (len(ws) - 1) == pytest.approx(1.0, rel=1e-4)
    assert all(w[0, i].item() == 0.0 for i, b in enumerate(bits[: len(vals)]) if not b)
