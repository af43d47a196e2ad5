"""PC-GRPO core math against the spec's hand-computed cases (§4.8 cases 2, 3, 4 and 6).

Case 2 by hand (K = 6, G = 8, gold A):
  {A,B,B,B,B,B,B,B}: d = 1/8; p̂ = (1/8, 7/8); H = 0.125·ln 8 + 0.875·ln(8/7) = 0.37677; dπ = H/ln 6 = 0.2103;
                     w = 4 · 0.125 · 0.875 · √0.2103 = 0.2006
  {A,B,B,C,C,D,E,F}: p̂ = (1,2,2,1,1,1)/8; H = 4·0.125·ln 8 + 2·0.25·ln 4 = 1.7329; dπ = 0.9671; w = 0.4303
Case 3 (Jigsaw, G = 8): rewards [1, .25, .5, .25, 1, 0, .25, .25]: d = 3.5/8 = 0.4375; 5 distinct answers:
  dπ = 4/7 = 0.5714; w = 4 · 0.4375 · 0.5625 · √(4/7) = 0.7441
Case 6 (CARE): acc [1,1,0,0], p̄ [0.9,0.5,0.8,0.1]: mean acc 0.5 -> accurate {0,1}; their mean p̄ 0.7, minus the
  0.01 margin = 0.69 -> only rollout 0 is confident: bonus 0.5·1 -> r = [1.5, 1, 0, 0]
"""
from __future__ import annotations

import math

import pytest
import torch

from steprl import core
from steprl.core.pc_grpo import (answer_confidence, care_bonus, choice_dispersion, curriculum_weight,
                                 distinct_dispersion, ema_update_, group_difficulty)

A, B, C, D, E, F = range(6)


def test_binary_dispersion_and_weights_case_2():
    keys = torch.tensor([A, B, B, B, B, B, B, B, A, B, B, C, C, D, E, F])
    gids = torch.tensor([0] * 8 + [1] * 8)
    rewards = (keys == A).float()
    d = group_difficulty(rewards, gids)
    dpi = choice_dispersion(keys, gids, 6)
    w = curriculum_weight(d, dpi, 4.0, 0.5)
    assert d[0] == pytest.approx(0.125) and d[8] == pytest.approx(0.125)
    assert dpi[0] == pytest.approx(0.2103, abs=1e-4) and dpi[8] == pytest.approx(0.9671, abs=1e-4)
    assert w[0] == pytest.approx(0.2006, abs=1e-4) and w[8] == pytest.approx(0.4303, abs=1e-4)
    assert torch.equal(w[:8], w[:1].expand(8))  # one weight per group, on every row


def test_jigsaw_dispersion_case_3():
    gt, p1234, p1324, p2134, p4321 = 0, 1, 2, 3, 4  # answer ids: equal answers, equal ids
    keys = torch.tensor([gt, p1234, p1324, p1234, gt, p2134, p1234, p4321])
    rewards = torch.tensor([1, .25, .5, .25, 1, 0, .25, .25])
    gids = torch.zeros(8, dtype=torch.long)
    d = group_difficulty(rewards, gids)
    dpi = distinct_dispersion(keys, gids)
    w = curriculum_weight(d, dpi)
    assert d[0] == pytest.approx(0.4375) and dpi[0] == pytest.approx(4 / 7)
    assert w[0] == pytest.approx(0.7441, abs=1e-4)


def test_weight_vanishes_without_variance_or_exploration_case_4():
    gids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    rewards = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])
    keys = torch.tensor([0, 0, 1, 2, 3, 1, 2, 0, 1, 1, 1, 1])  # group 2 all gave the same answer
    w = curriculum_weight(group_difficulty(rewards, gids), choice_dispersion(keys, gids, 4))
    assert torch.equal(w, torch.zeros(12))
    assert torch.equal(curriculum_weight(group_difficulty(rewards, gids), distinct_dispersion(keys, gids)),
                       torch.zeros(12))
    # gamma = 0: the difficulty-only curriculum 4d(1-d), 1 at d = 0.5 even when dπ = 0
    assert curriculum_weight(torch.tensor([0.5]), torch.tensor([0.0]), 4.0, 0.0).item() == 1.0
    assert curriculum_weight(torch.tensor([0.25]), torch.tensor([0.3]), 4.0, 0.0).item() == pytest.approx(0.75)


def test_invalid_answers_are_their_own_class_and_dispersion_is_clamped():
    gids = torch.zeros(4, dtype=torch.long)
    # K = 2 options, answers {0, 1, invalid, invalid}: p = (1/4, 1/4, 1/2); H = 1.0397 > ln 2 -> clamped to 1
    assert choice_dispersion(torch.tensor([0, 1, -1, -1]), gids, 2)[0].item() == 1.0
    # all invalid: one class, no spread
    assert choice_dispersion(torch.tensor([-1, -1, -1, -1]), gids, 4)[0].item() == 0.0
    # K = 4, two answers split evenly: H = ln 2, dπ = ln 2 / ln 4 = 0.5
    assert choice_dispersion(torch.tensor([0, 0, 3, 3]), gids, 4)[0].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="keys"):
        choice_dispersion(torch.tensor([0, 4, 0, 0]), gids, 4)
    # per-row K (mixed puzzles): groups keep their own K
    keys, g2 = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    out = choice_dispersion(keys, g2, torch.tensor([2, 2, 4, 4]))
    assert out[0].item() == pytest.approx(1.0) and out[2].item() == pytest.approx(0.5)


def test_care_bonus_case_6():
    acc = torch.tensor([1., 1, 0, 0])
    conf = torch.tensor([0.9, 0.5, 0.8, 0.1])
    gids = torch.zeros(4, dtype=torch.long)
    bonus = care_bonus(acc, conf, gids, coef=0.5, conf_cap=0.95, margin=0.01)
    assert torch.allclose(acc + bonus, torch.tensor([1.5, 1.0, 0.0, 0.0]))
    # the cap: 0.99 and 0.96 both become 0.95; mean 0.95 -> both confident
    b2 = care_bonus(torch.tensor([1., 1, 0, 0]), torch.tensor([0.99, 0.96, 0.1, 0.1]), gids)
    assert torch.allclose(b2, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    # no accurate rollout in a group: no bonus; groups are independent
    b3 = care_bonus(torch.tensor([0., 0, 1, 0]), torch.tensor([0.9, 0.9, 0.2, 0.9]), torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(b3, torch.tensor([0.0, 0.0, 0.5, 0.0]))
    # graded accuracy: the bonus is coef * acc, and acc must reach the group mean and exceed 0.1
    b4 = care_bonus(torch.tensor([0.75, 0.5, 0.05, 0.0]), torch.tensor([0.5, 0.5, 0.9, 0.9]), gids)
    assert torch.allclose(b4, torch.tensor([0.375, 0.25, 0.0, 0.0]))


def test_answer_confidence_and_ema():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.3, 0.3, 0.3]]))
    mask = torch.tensor([[0, 1, 1], [0, 0, 0]])
    conf = answer_confidence(logp, mask)
    assert conf[0].item() == pytest.approx(math.sqrt(0.25 * 0.9), rel=1e-4)
    assert conf[1].item() == pytest.approx(1.0)  # no answer tokens: exp(0), as CARE's code
    e, p = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 0.0])]
    ema_update_(e, p, 0.995)
    assert torch.allclose(e[0], torch.tensor([1.01, 1.99]))


def test_mean_centred_advantage_is_the_paper_default():
    r, g = torch.tensor([1., 0, 0, 0]), torch.zeros(4, dtype=torch.long)
    assert torch.allclose(core.drgrpo_advantage(r, g), torch.tensor([0.75, -0.25, -0.25, -0.25]))
