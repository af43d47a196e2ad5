"""Issue 15 item 4: a group whose rewards are all equal carries no learning signal, so every group-relative
estimator must give it an advantage of exactly 0, also for values no float can hold exactly (0.3, 0.1). In float32
a group of eight 0.3s has mean 0.30000001 (the sum rounds), and the old code gave +0.029 on every token for
GRPO with eps 1e-6 (E-GRPO's partial credit) and up to 0.056 for DRM's z-scores."""
from __future__ import annotations

import pytest
import torch

from steprl import core
from steprl.core.e_grpo import egrpo_rewards
from steprl.core.ppr import process_group_advantage
from steprl.core.drm import drm_advantage, drm_combine, group_normalize

# group 0: eight 0.3 (float32), group 1: seven 0.1, group 2: a normal group (1, 0) as a control
R32 = torch.tensor([0.3] * 8 + [0.1] * 7 + [1.0, 0.0], dtype=torch.float32)
G = torch.tensor([0] * 8 + [1] * 7 + [2, 2])
# float64: ten 0.1 (sum 0.9999999999999999 in float64) and seven 0.7
R64 = torch.tensor([0.1] * 10 + [0.7] * 7, dtype=torch.float64)
G64 = torch.tensor([0] * 10 + [1] * 7)


def _zero(x, n):
    assert torch.equal(x[:n], torch.zeros_like(x[:n])), x[:n]


@pytest.mark.parametrize("r,g,n", [(R32, G, 15), (R64, G64, 17)])
def test_group_estimators_give_exact_zero(r, g, n):
    _zero(core.grpo_advantage(r, g, "group", 1e-6), n)
    _zero(core.grpo_advantage(r, g, "group", 1e-4), n)
    _zero(core.rloo_advantage(r, g), n)
    _zero(core.drgrpo_advantage(r, g), n)
    mean, std = core.group_mean_std(r, g)
    assert torch.equal(mean[:n], r[:n]) and torch.equal(std[:n], torch.zeros_like(std[:n]))


def test_control_group_unchanged():
    """The (1, 0) group: mean 0.5, unbiased std sqrt(0.5); GRPO (eps 1e-6) = ±0.5 / (0.70710678 + 1e-6)."""
    a = core.grpo_advantage(R32, G, "group", 1e-6)
    assert a[15].item() == pytest.approx(0.5 / (0.5 ** 0.5 + 1e-6), rel=1e-6)
    assert a[16].item() == pytest.approx(-0.5 / (0.5 ** 0.5 + 1e-6), rel=1e-6)
    assert core.rloo_advantage(R32, G)[15].item() == pytest.approx(1.0)  # 1 - 0 (leave-one-out)


def test_reinforce_pp_baseline_and_prime_zero():
    mask = torch.ones(17, 3)
    adv = core.reinforce_pp_baseline_advantage(R32, G, mask)
    _zero(adv, 15)
    ret, _ = core.prime_rloo_returns(torch.zeros(17, 3), R32, mask, G, "code", 1.0, 1.0, 1.0, 1.0, False)
    _zero(ret, 15)


def test_e_grpo_all_wrong_same_entities_is_zero():
    """Eight wrong rollouts that all found the same entities: R = 0.3 * 1/1 each, advantage exactly 0."""
    r = egrpo_rewards(torch.zeros(8), torch.full((8,), 0.5), torch.zeros(8, dtype=torch.bool), torch.zeros(8), 0.3)
    assert torch.equal(r, torch.full((8,), 0.3))
    _zero(core.grpo_advantage(r, torch.zeros(8, dtype=torch.long), "group", 1e-6), 8)


def test_drm_identical_responses_are_zero():
    """Eight identical responses: equal confidence, relevance and coherence, equal answer reward."""
    g = torch.zeros(8, dtype=torch.long)
    _zero(group_normalize(torch.full((8,), 0.3), g, "zscore"), 8)
    _zero(group_normalize(torch.full((8,), 0.3), g, "minmax"), 8)
    dims = [torch.full((8,), -1.7), torch.full((8,), 0.3), torch.full((8,), 0.1)]
    r_drm = drm_combine(dims, [1 / 3, 1 / 3, 1 / 3], g)
    _zero(drm_advantage(torch.full((8,), 0.3), r_drm, g), 8)


def test_process_group_advantage_zero():
    """PPR-GRPO's process supervision: all step rewards of a group equal -> every token 0."""
    steps = torch.full((7, 1), 0.3)
    pos = torch.tensor([[2]] * 7)
    _zero(process_group_advantage(steps, pos, torch.zeros(7, dtype=torch.long), torch.ones(7, 3)), 7)
