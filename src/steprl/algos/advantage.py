"""Advantage estimators (the ``advantage=`` config group): thin callables over ``steprl.core``.

Each takes the per-sequence score ``scores`` [N], the dense per-token rewards ``token_rewards`` [N, T]
(process rewards; zeros when none), the loss mask, the group ids, for GAE the critic's values, and
``kl_rewards`` [N, T] (``-coef * kl`` per token when the KL is in the reward, else None), and returns
``(advantages [N, T], returns [N, T] | None)``.

KL in the reward follows verl: an outcome estimator's sequence reward is ``score + Σ_t kl_rewards_t`` (i.e.
``score - coef Σ_t kl_t``) *before* its group baseline; a token-level one (REINFORCE++, GAE) adds ``kl_rewards``
to its per-token rewards. An estimator that cannot take it sets ``takes_kl_reward = False`` and the run refuses
``algo.kl.in_reward`` at start-up.

Batch statistics (whitening, GRPO's batch std) are global under data parallelism: ``reduce`` is
``steprl.utils.dist.all_reduce`` when several ranks train (None in one process, which keeps the one-process
arithmetic bit for bit), and ``rows`` marks the real rows (padding rows added to even out ranks are left out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from steprl import core
from steprl.config import ConfigError


@dataclass
class AdvantageInputs:
    scores: torch.Tensor
    token_rewards: torch.Tensor
    mask: torch.Tensor
    group_ids: torch.Tensor
    values: torch.Tensor | None = None
    reduce: Callable | None = None
    rows: torch.Tensor | None = None
    kl_rewards: torch.Tensor | None = None

    def sequence_scores(self) -> torch.Tensor:
        """``scores`` plus each response's summed KL reward (verl: ``token_level_rewards.sum(-1)``)."""
        if self.kl_rewards is None:
            return self.scores
        return self.scores + (self.kl_rewards * self.mask).sum(-1).to(self.scores.dtype)

    def dense_rewards(self) -> torch.Tensor:
        """``token_rewards`` plus the per-token KL rewards."""
        return self.token_rewards if self.kl_rewards is None else self.token_rewards + self.kl_rewards * self.mask


def _broadcast(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return adv[:, None] * mask.to(adv.dtype)


@dataclass
class GroupAdvantage:
    """Outcome advantages against the group: ``grpo`` ((r - mean_g) / (std + eps), std from ``std_scale``),
    ``rloo`` (leave-one-out mean), ``drgrpo`` (r - mean_g), of the sequence reward (score minus the summed KL
    when the KL is in the reward). Dense process rewards are added as returns-to-go when
    ``use_token_rewards``."""

    takes_kl_reward = True
    kind: str = "grpo"
    std_scale: str = "group"
    eps: float = 1e-4
    use_token_rewards: bool = False

    def __post_init__(self):
        kinds = ("grpo", "rloo", "drgrpo")
        if self.kind not in kinds:
            raise ConfigError(f"advantage.kind={self.kind!r} is not one of {list(kinds)}")

    def __call__(self, x: AdvantageInputs):
        scores = x.sequence_scores()
        if self.kind == "grpo":
            adv = core.grpo_advantage(scores, x.group_ids, self.std_scale, self.eps, x.reduce, x.rows)
        elif self.kind == "rloo":
            adv = core.rloo_advantage(scores, x.group_ids)
        else:
            adv = core.drgrpo_advantage(scores, x.group_ids)
        out = _broadcast(adv, x.mask)
        if self.use_token_rewards:
            out = out + core.discounted_returns(x.token_rewards, x.mask)
        return out, None


@dataclass
class ReinforcePP:
    """REINFORCE++: outcome on the last token plus dense rewards, returns-to-go, whitened over the batch;
    ``baseline=True`` is REINFORCE++-baseline (group-mean baseline, then batch whitening)."""

    takes_kl_reward = True
    gamma: float = 1.0
    baseline: bool = False

    def __call__(self, x: AdvantageInputs):
        if self.baseline:
            return core.reinforce_pp_baseline_advantage(x.sequence_scores(), x.group_ids, x.mask, x.reduce), None
        rewards = core.outcome_to_token_rewards(x.scores, x.mask) + x.dense_rewards()
        return core.reinforce_pp_advantage(rewards, x.mask, self.gamma, x.reduce), None


PRIME_ESTIMATORS = ("rloo", "grpo", "reinforce")


@dataclass
class PrimeAdvantage:
    """``advantage=prime``: outcome scores plus the implicit PRM's dense rewards (``token_rewards``).

    ``estimator``: ``rloo`` (PRIME, Eq. 5), ``grpo`` (GRPO with PRIME, Eq. 7), ``reinforce`` (REINFORCE
    with PRIME, Eq. 8). ``form`` (rloo): ``code`` (both reference codes: r·K/(K-1) - S/(K-1)) or ``paper``
    (r - mean of the others' average rewards). ``whiten``: the reference code whitens the summed returns
    over the batch (not in the paper). PRIME sets the KL to 0 and its reference code has no KL reward: a KL in
    the reward is refused at start-up (``takes_kl_reward``)."""

    takes_kl_reward = False
    estimator: str = "rloo"
    form: str = "code"
    whiten: bool = True
    gamma_process: float = 1.0
    gamma_outcome: float = 1.0
    process_coef: float = 1.0
    outcome_coef: float = 1.0
    eps: float = 1e-6

    def __post_init__(self):
        if self.estimator not in PRIME_ESTIMATORS:
            raise ConfigError(f"advantage.estimator={self.estimator!r} is not one of {list(PRIME_ESTIMATORS)}")
        if self.form not in core.PRIME_FORMS:
            raise ConfigError(f"advantage.form={self.form!r} is not one of {list(core.PRIME_FORMS)}")

    def __call__(self, x: AdvantageInputs):
        if self.estimator == "rloo":
            return core.prime_rloo_returns(x.token_rewards, x.scores, x.mask, x.group_ids, self.form,
                                           self.gamma_process, self.gamma_outcome, self.process_coef,
                                           self.outcome_coef, self.whiten, x.reduce)
        if self.estimator == "grpo":
            return core.prime_grpo_returns(x.token_rewards, x.scores, x.mask, x.group_ids, self.gamma_process,
                                           self.eps, self.whiten, x.reduce)
        return core.prime_reinforce_returns(x.token_rewards, x.scores, x.mask, self.gamma_process, self.whiten,
                                            x.reduce)


@dataclass
class GAE:
    """PPO's generalised advantage estimation with a critic; advantages whitened over the batch."""

    takes_kl_reward = True
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True

    def __call__(self, x: AdvantageInputs):
        if x.values is None:
            raise ConfigError("advantage=gae needs a critic: use algo=ppo (or an algorithm with a value model)")
        rewards = core.outcome_to_token_rewards(x.scores, x.mask) + x.dense_rewards()
        adv, ret = core.gae(rewards, x.values, x.mask, self.gamma, self.lam)
        return (core.masked_whiten(adv, x.mask, reduce=x.reduce) if self.whiten else adv), ret


def check_kl_in_reward(kl: dict, estimator, algo: str, supported: bool) -> None:
    """Refuse ``algo.kl.in_reward`` (with ``algo.kl.coef > 0``) where the algorithm (``supported``: its
    advantages go through the ``advantage=`` estimator, or it handles the KL reward itself) or the estimator
    (``takes_kl_reward``) would drop it."""
    if not (kl["in_reward"] and kl["coef"] > 0):
        return
    if not supported:
        why = f"{algo} computes its own advantages and has no KL reward"
    elif not getattr(estimator, "takes_kl_reward", False):
        why = f"the advantage estimator {type(estimator).__name__} cannot take a KL reward"
    else:
        return
    raise ConfigError(f"algo.kl.in_reward=true with algo.kl.coef={kl['coef']}: {why}; set algo.kl.in_reward=false "
                      f"(the KL as a loss term) or algo.kl.coef=0")
