"""DRM math against the hand-computed cases of spec §3.9."""
from __future__ import annotations

import pytest
import torch

from steprl.core.drm import drm_advantage, drm_combine, drm_confidence, drm_select_pairs, group_normalize

G4 = torch.zeros(4, dtype=torch.long)
CONF = torch.tensor([-2.3, -4.5, -1.2, -6.9])
REL = torch.tensor([2.1, 0.5, 1.7, -0.3])
COH = torch.tensor([3.0, 1.0, 2.5, -1.0])
THIRD = (1 / 3, 1 / 3, 1 / 3)


def test_confidence_mean_reasoning_plus_sum_answer():  # case 1
    logp = torch.tensor([[-0.1, -0.5, -0.3, -1.0, -1.0, -9.0]])
    r = torch.tensor([[1, 1, 1, 0, 0, 0]])
    a = torch.tensor([[0, 0, 0, 1, 1, 0]])
    assert drm_confidence(logp, r, a).item() == pytest.approx(-0.3 + -2.0)


def test_aggregation_population_zscore_equal_weights():  # case 3
    r = drm_combine([CONF, REL, COH], THIRD, G4)
    assert torch.allclose(r, torch.tensor([0.9499, -0.3733, 0.8709, -1.4474]), atol=1e-4)


def test_advantage_sum():  # case 4
    r = drm_combine([CONF, REL, COH], THIRD, G4)
    a = drm_advantage(torch.tensor([1.0, 1, 0, 0]), r, G4)
    assert torch.allclose(a, torch.tensor([1.9626, 0.6217, -0.1175, -2.4668]), atol=1e-4)
    only = drm_advantage(torch.tensor([1.0, 1, 0, 0]), r, G4, use_answer=False)
    assert torch.allclose(only, torch.tensor([0.9626, -0.3783, 0.8825, -1.4668]), atol=1e-4)


def test_pair_selection():  # case 5
    r = drm_combine([CONF, REL, COH], THIRD, G4)
    assert drm_select_pairs(r, G4) == [(0, 3)]
    assert drm_select_pairs(torch.ones(4), G4) == []   # no gap, no pair


def test_groups_are_normalised_separately_and_invalid_rows_get_the_minimum():
    g = torch.tensor([0, 0, 1, 1, 1])
    x = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0])
    z = group_normalize(x, g)
    assert torch.allclose(z, torch.tensor([-1.0, 1.0, -1.2247, 0.0, 1.2247]), atol=1e-4)
    mm = group_normalize(x, g, "minmax")
    assert torch.allclose(mm, torch.tensor([0.0, 1.0, 0.0, 0.5, 1.0]), atol=1e-5)
    valid = torch.tensor([True, True, True, True, False])
    r = drm_combine([x], [1.0], g, valid=valid)
    # group 1 over its valid rows {10, 20}: z = [-1, 1]; the invalid row takes the group minimum -1
    assert torch.allclose(r, torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0]), atol=1e-4)
    assert drm_combine([x], [1.0], g, valid=valid, invalid="zero")[4].item() == 0.0
    with pytest.raises(ValueError, match="normalisation"):
        group_normalize(x, g, "rank")
