"""E-GRPO: entity-aware GRPO for search agents (Zhao et al., 2025).

    γ_i   = share of the question's ground-truth entities found verbatim in rollout i's <think> texts
    R_i   = 1 if correct;  α · γ_i / max_j γ_j (over the whole group) if wrong;  0 on a format error or
            over-length (token or turn budget)
    A_i   = (R_i - mean_g R) / (std_g R + 1e-6)                     (GRPO, unbiased std)
    loss  = token-mean PPO clip with clip-higher (ε_low 0.2, ε_high 0.28), no KL;
            over-length rollouts count in the group statistics but are masked out of the loss

Entities come from ``sample.meta["entities"]`` (task=search_qa's knowledge base keeps every entity on a
question's relation chain; jsonl files may give an ``entities`` list). Format errors and over-length come from
the AgentLoop's episode facts (single-turn rollouts: a ``length`` finish is over-length).
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.config import ConfigError, node_defaults
from steprl.core.e_grpo import egrpo_rewards
from steprl.algos.base import RLModule, Rewards
from steprl.algos.step import Step
from steprl.rewards.entities import entity_match_rate, thoughts
from steprl.rollout.types import Rollouts, Sample


def over_length(ro: Rollouts) -> torch.Tensor:
    if ro.info is not None:
        return torch.tensor([bool(d["over_length"]) for d in ro.info])
    return torch.tensor([r == "length" for r in ro.finish_reason])


def format_error(ro: Rollouts) -> torch.Tensor:
    if ro.info is not None:
        return torch.tensor([d["format_errors"] > 0 for d in ro.info])
    return torch.zeros(len(ro), dtype=torch.bool)


class EGRPO(RLModule):
    """``e_grpo``: alpha (partial-reward weight, paper 0.3), case_sensitive (entity matching; the paper's is
    exact), mask_over_length (exclude over-length rollouts from the loss; the paper does)."""

    def __init__(self, *args, e_grpo: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eg = {**node_defaults("e_grpo", "e_grpo"), **(e_grpo or {})}
        if not 0 <= self.eg["alpha"] < 1:
            raise ConfigError(f"algo.e_grpo.alpha must be in [0, 1) so a correct rollout beats every wrong one, "
                             f"got {self.eg['alpha']}")

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        rw = super().score(ro, samples)
        picked = [samples[i] for i in ro.sample_idx.tolist()]
        gamma = torch.tensor([entity_match_rate(thoughts(t), s.meta.get("entities") or [], self.eg["case_sensitive"])
                              for t, s in zip(ro.texts, picked)], dtype=torch.float)
        over, fmt = over_length(ro), format_error(ro)
        groups = ro.group_ids.cpu()
        reward = egrpo_rewards(rw.correct.cpu(), gamma, over | fmt, groups, self.eg["alpha"])
        wrong = (rw.correct.cpu() == 0) & ~(over | fmt)
        acc = core.group_mean_std(rw.correct.cpu(), groups)[0]
        self.metrics.write({
            "e_grpo/match_rate": float(gamma.mean()),
            "e_grpo/match_rate_correct": float(gamma[rw.correct.cpu() > 0].mean()) if (rw.correct > 0).any() else 0.0,
            "e_grpo/partial_reward": float(reward[wrong].mean()) if wrong.any() else 0.0,
            "e_grpo/over_length": float(over.float().mean()),
            "e_grpo/format_errors": float(fmt.float().mean()),
            # all-wrong groups that still get a learning signal from the entity reward
            "e_grpo/all_wrong_with_signal": float(((acc == 0) & (core.group_mean_std(reward, groups)[1] > 0))
                                                  .float().mean()),
        })
        return Rewards(outcome=reward.to(rw.outcome.device), correct=rw.correct, step=rw.step)

    def prepare(self, step: Step) -> dict[str, torch.Tensor]:
        ro = step.ro
        if self.eg["mask_over_length"]:  # rewards (and group statistics) are fixed: drop their tokens from the loss
            keep = ~over_length(ro).to(ro.loss_mask.device)
            ro.loss_mask = ro.loss_mask * keep[:, None].to(ro.loss_mask.dtype)
        return super().prepare(step)
