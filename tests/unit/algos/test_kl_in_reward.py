"""KL in the reward (issue 15 item 2), as verl does it: each response's sequence reward is
``score - coef * sum_t kl_t`` before the group baseline, for every estimator; what cannot take it refuses at
start-up, naming the keys.

The hand-built batch: two groups of two responses, three tokens each, k1 KL (logp - ref_logp), coef 0.5.
    group 0: scores (1, 0), KL per token row 0 = (0.1, 0.2, 0.3) -> sum 0.6, row 1 = (0, 0.1, -0.1) -> sum 0
    group 1: scores (1, 0), no KL
    sequence rewards: group 0 (1 - 0.3, 0) = (0.7, 0); group 1 (1, 0)
"""
from __future__ import annotations

import math

import pytest
import torch

from steprl.algos.step import Step
from steprl.algos.advantage import GAE, AdvantageInputs, GroupAdvantage, ReinforcePP
from steprl.algos.base import Rewards
from steprl.config import ConfigError
from steprl.rollout.types import Rollouts
from steprl.train import build
from tests.helpers import compose_train

SCORES = torch.tensor([1.0, 0.0, 1.0, 0.0])
KL = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.1, -0.1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
COEF = 0.5
MASK = torch.ones(4, 3)
GIDS = torch.tensor([0, 0, 1, 1])


def _x():
    return AdvantageInputs(SCORES, torch.zeros(4, 3), MASK, GIDS, kl_rewards=-COEF * KL)


def test_grpo_drgrpo_rloo_take_the_kl_sum_before_the_baseline():
    # group 0: mean 0.35, centred ±0.35, unbiased std 0.7/sqrt(2); group 1: ±0.5, std 1/sqrt(2)
    grpo = GroupAdvantage("grpo", eps=1e-4)(_x())[0]
    assert grpo[:, 0].tolist() == pytest.approx([0.35 / (0.7 / math.sqrt(2) + 1e-4), -0.35 / (0.7 / math.sqrt(2) + 1e-4),
                                                 0.5 / (1 / math.sqrt(2) + 1e-4), -0.5 / (1 / math.sqrt(2) + 1e-4)], rel=1e-5)
    assert torch.equal(grpo[:, 0:1].expand(4, 3), grpo)  # one value per response, on every token
    dr = GroupAdvantage("drgrpo")(_x())[0]
    assert dr[:, 0].tolist() == pytest.approx([0.35, -0.35, 0.5, -0.5], abs=1e-6)
    rloo = GroupAdvantage("rloo")(_x())[0]  # r_i - r_other
    assert rloo[:, 0].tolist() == pytest.approx([0.7, -0.7, 1.0, -1.0], abs=1e-6)


def test_reinforce_pp_baseline_takes_the_kl_sum():
    """Centred (±0.35, ±0.5) on 3 tokens each, whitened over 12 tokens: mean 0, unbiased variance
    (6 * 0.35^2 + 6 * 0.5^2) / 11 = 2.235 / 11."""
    adv = ReinforcePP(baseline=True)(_x())[0]
    sd = math.sqrt(2.235 / 11 + 1e-8)
    assert adv[:, 0].tolist() == pytest.approx([0.35 / sd, -0.35 / sd, 0.5 / sd, -0.5 / sd], rel=1e-5)


def test_reinforce_pp_and_gae_take_kl_per_token():
    """REINFORCE++ (no baseline): token rewards -0.5 * KL, outcome on the last token, returns-to-go, whitened.
    Row 0 returns: (1 - 0.05 - 0.1 - 0.15, 1 - 0.1 - 0.15, 1 - 0.15) = (0.7, 0.75, 0.85)."""
    x = _x()
    returns = torch.tensor([[0.7, 0.75, 0.85], [0.0, -0.05 + 0.05, 0.05], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    mu, var = returns.mean(), returns.var(unbiased=True)
    want = (returns - mu) / torch.sqrt(var + 1e-8)
    assert torch.allclose(ReinforcePP()(x)[0], want, atol=1e-5)
    # GAE with zero values, gamma = lambda = 1, no whitening: the advantages are those returns
    adv, ret = GAE(1.0, 1.0, whiten=False)(AdvantageInputs(SCORES, torch.zeros(4, 3), MASK, GIDS, torch.zeros(4, 3),
                                                           kl_rewards=-COEF * KL))
    assert torch.allclose(adv, returns, atol=1e-6) and torch.allclose(ret, returns, atol=1e-6)


@pytest.fixture(scope="module")
def grpo_kl(tmp_path_factory):
    cfg = compose_train(["algo=grpo", "logger=none", "algo.kl.coef=0.5", "algo.kl.in_reward=true",
                         "algo.kl.estimator=k1", "task.num_val=8"], tmp_path_factory.mktemp("kl"))
    return build(cfg)[0]


def test_module_adds_the_kl_to_the_sequence_reward(grpo_kl):
    """RLModule.dense_rewards builds the KL from old_logp - ref_logp; the GRPO advantage is the hand value."""
    m = grpo_kl
    ids = torch.ones(4, 3, dtype=torch.long)
    ro = Rollouts(prompt_ids=ids, prompt_mask=ids, response_ids=ids, response_mask=ids, loss_mask=ids.clone(),
                  step_ids=torch.zeros_like(ids), group_ids=GIDS, sample_idx=GIDS, texts=[""] * 4,
                  finish_reason=["stop"] * 4, old_logp=KL - 1.0, ref_logp=torch.full((4, 3), -1.0))
    step = Step([], ro, Rewards(outcome=SCORES, correct=SCORES))
    m.dense_rewards(step)  # the KL reward, once
    adv, _ = m.advantages(step)
    s = 0.7 / math.sqrt(2) + 1e-4
    assert adv[:2, 0].tolist() == pytest.approx([0.35 / s, -0.35 / s], rel=1e-5)


@pytest.mark.parametrize("algo,extra", [("prime", []), ("drm", []), ("tp_grpo", []), ("pc_grpo", [])])
def test_what_cannot_take_it_refuses_at_start_up(algo, extra, tmp_path):
    cfg = compose_train([f"algo={algo}", "logger=none", "algo.kl.coef=0.01", "algo.kl.in_reward=true",
                         "task.num_val=8", *extra], tmp_path)
    with pytest.raises(ConfigError, match=r"algo\.kl\.in_reward.*algo\.kl\.coef"):
        build(cfg)
