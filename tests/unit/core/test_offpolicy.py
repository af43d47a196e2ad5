"""Truncated importance sampling and the engine/trainer log-prob gap, against hand-computed numbers."""
import math

import pytest
import torch

from steprl.core.offpolicy import logprob_diff, tis_weight

L = math.log


def test_tis_weight_is_the_capped_ratio_and_one_outside_the_mask():
    # ratios pi_old / pi_engine: 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.1 = 9 (capped at 3), masked -> 1
    old = torch.tensor([[L(0.5), L(0.2), L(0.9), L(0.9)]])
    eng = torch.tensor([[L(0.25), L(0.4), L(0.1), L(0.1)]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = tis_weight(old, eng, cap=3.0, mask=mask)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 3.0, 1.0]]), atol=1e-6)
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap must be > 0"):
        tis_weight(old, eng, cap=0.0)


def test_tis_weight_has_no_gradient_even_from_grad_inputs():
    old = torch.tensor([[L(0.5)]], requires_grad=True)
    assert not tis_weight(old, torch.tensor([[L(0.25)]]), cap=10.0).requires_grad


def test_logprob_diff_is_the_masked_mean_absolute_gap():
    # |ln .5 - ln .25| = ln 2, |ln .2 - ln .4| = ln 2, third token masked out
    a = torch.tensor([[L(0.5), L(0.2), 0.0]])
    b = torch.tensor([[L(0.25), L(0.4), 5.0]])
    assert float(logprob_diff(a, b, torch.tensor([[1, 1, 0]]))) == pytest.approx(math.log(2), abs=1e-6)
    assert float(logprob_diff(a, b, torch.zeros(1, 3))) == 0.0
