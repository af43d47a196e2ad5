"""PRIME: Process Reinforcement through IMplicit rEwards (Cui et al., 2025).

    π_θ, π_φ (implicit PRM), π_ref <- the same starting checkpoint
    each step: K samples per prompt; r_o from the verifier
               keep groups with 0.2 <= mean r_o <= 0.8 and no truncated response (refill from fresh prompts)
               dense rewards (the token scorer ``reward.token``, :class:`~steprl.algos.implicit_prm.ImplicitPRM`):
                   q_t = log π_φ(y_t|y_<t) - log π_ref(y_t|y_<t)   (π_ref frozen, or the policy's old log-probs)
                   update π_φ on BCE(σ(β Σ_t q_t), r_o)             (train_order=before_policy, the paper's
                                                                     place; update=after: rewards from the same
                                                                     forward, before: update, then recompute)
                   r_t = β q_t, normalised by the batch's largest |return-to-go| (batch_norm)
               A = RLOO(process) and RLOO(outcome), returns per source, summed (whitened: reference code)
               PPO clip update of π_θ, KL 0
               after update: update π_φ here instead with train_order=after_policy

The token scorer is handed to the module by the ``reward=`` group (``reward/token=implicit_prm``, which
``algo=prime`` picks); the module holds its models. The implicit PRM (``self.prm``, a full causal LM) has its own
AdamW (``reward.token.lr``, by default ``reward.token.lr_ratio`` = 2 x the policy's lr, the paper's 1e-6 : 5e-7;
constant LR, grad clip ``reward.token.max_grad_norm``) and takes ``ceil(N / reward.token.mini_batch_size)``
optimiser steps per RL step, or ``reward.token.updates_per_step`` (4, the paper's 1024 rollouts in PRM
mini-batches of 256) when it is null.
"""
from __future__ import annotations

import copy

from steprl.algos.aux_model import AuxOptimizers
from steprl.algos.base import RLModule
from steprl.algos.implicit_prm import ImplicitPRM
from steprl.algos.step import Step
from steprl.config import ConfigError


class PRIME(AuxOptimizers, RLModule):
    takes_token_scorer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = self.reward_parts.token                  # reward.token: the implicit PRM, validated
        if not isinstance(self.scorer, ImplicitPRM):
            raise ConfigError(f"algo=prime needs the implicit PRM as its token scorer (reward/token=implicit_prm), "
                              f"got reward.token={type(self.scorer).__name__ if self.scorer is not None else None}")
        if self.batch_cfg["samples_per_prompt"] < 2:
            raise ConfigError("batch.samples_per_prompt must be >= 2 for PRIME's leave-one-out baselines")
        self.prm = copy.deepcopy(self.policy).train()          # π_φ, from the policy's starting checkpoint
        self.prm_ref = None                                    # π_ref (frozen) unless ref_type=policy
        if self.scorer.cfg["ref_type"] == "freeze":
            self.prm_ref = self.ref_policy if self.ref_policy is not None else \
                copy.deepcopy(self.policy).eval().requires_grad_(False)

    def aux_modules(self) -> list[str]:
        return ["prm"]

    def make_aux_optimizers(self):
        return {"prm_optimizer": self.scorer.optimizer(self.prm, self.optim_cfg.get("lr", 1e-5))}

    # ------------------------------------------------------------------------------------ the paper's step
    def dense_rewards(self, step: Step) -> None:
        """The implicit PRM as the step's token scorer: ``r_t = β q_t`` (trained on this batch first, unless
        ``reward.token.train_order=after_policy``)."""
        super().dense_rewards(step)
        self.scorer.score(self, step)

    def after_update(self, step: Step) -> None:
        """``reward.token.train_order=after_policy``: the PRM trains on the step's rollouts after the policy."""
        self.scorer.after_update(self, step)
