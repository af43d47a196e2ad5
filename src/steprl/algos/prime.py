"""PRIME: Process Reinforcement through IMplicit rEwards (Cui et al., 2025; spec prime-oreal-egrpo.md §1).

    π_θ, π_φ (implicit PRM), π_ref <- the same starting checkpoint
    each step: K samples per prompt; r_o from the verifier
               keep groups with 0.2 <= mean r_o <= 0.8 and no truncated response (refill from fresh prompts)
               q_t = log π_φ(y_t|y_<t) - log π_ref(y_t|y_<t)       (π_ref frozen, or the policy's old log-probs)
               update π_φ on BCE(σ(β Σ_t q_t), r_o)                 (after: rewards from the same forward;
                                                                     before: update, then recompute; none)
               r_t = β q_t, normalised by the batch's largest |return-to-go| (batch_norm)
               A = RLOO(process) and RLOO(outcome), returns per source, summed (whitened: reference code)
               PPO clip update of π_θ, KL 0

The implicit PRM (``self.prm``, a full causal LM) has its own AdamW (``algo.prm.lr``, by default
``algo.prm.lr_ratio`` = 2 x the policy's lr, the paper's 1e-6 : 5e-7; constant LR, grad clip
``algo.prm.max_grad_norm``) and takes ``ceil(N / algo.prm.mini_batch_size)`` optimiser steps per RL step, or
``algo.prm.updates_per_step`` (4, the paper's 1024 rollouts in PRM mini-batches of 256) when it is null.
"""
from __future__ import annotations

import copy
import math

import torch

from steprl import core
from steprl.algos.aux_model import AuxOptimizers
from steprl.algos.base import RLModule
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.rollout.types import Rollouts
from steprl.utils import dist as D

PRM_CHOICES = {"loss": ("ce", "dpo"), "update": ("after", "before", "none"), "ref_type": ("freeze", "policy"),
               "granularity": core.PRIME_GRANULARITIES, "norm": ("batch_norm", "none")}


class PRIME(AuxOptimizers, RLModule):
    def __init__(self, *args, prm: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = node_defaults("prime", "prm")  # conf/algo/prime.yaml
        unknown = set(prm or {}) - set(defaults)
        if unknown:
            raise ConfigError(f"algo.prm has unknown keys {sorted(unknown)}; valid: {sorted(defaults)}")
        self.prm_cfg = {**defaults, **(prm or {})}
        for key, choices in PRM_CHOICES.items():
            if self.prm_cfg[key] not in choices:
                raise ConfigError(f"algo.prm.{key}={self.prm_cfg[key]!r} is not one of {list(choices)}")
        if self.batch_cfg["samples_per_prompt"] < 2:
            raise ConfigError("batch.samples_per_prompt must be >= 2 for PRIME's leave-one-out baselines")
        mbs, ups = self.prm_cfg["mini_batch_size"], self.prm_cfg["updates_per_step"]
        if mbs is not None and (not isinstance(mbs, int) or mbs < 1):
            raise ConfigError(f"algo.prm.mini_batch_size must be a positive integer or null, got {mbs!r}")
        if mbs is None and (not isinstance(ups, int) or ups < 1):
            raise ConfigError(f"algo.prm.updates_per_step must be a positive integer (used when algo.prm.mini_batch_size "
                              f"is null), got {ups!r}")
        if self.prm_cfg["lr"] is None and not float(self.prm_cfg["lr_ratio"]) > 0:
            raise ConfigError(f"algo.prm.lr_ratio must be > 0 when algo.prm.lr is null, got {self.prm_cfg['lr_ratio']!r}")
        self.prm = copy.deepcopy(self.policy).train()          # π_φ, from the policy's starting checkpoint
        self.prm_ref = None                                    # π_ref (frozen) unless ref_type=policy
        if self.prm_cfg["ref_type"] == "freeze":
            self.prm_ref = self.ref_policy if self.ref_policy is not None else \
                copy.deepcopy(self.policy).eval().requires_grad_(False)

    def aux_modules(self) -> list[str]:
        return ["prm"]

    @property
    def prm_lr(self) -> float:
        """``algo.prm.lr``, or ``algo.prm.lr_ratio`` x ``optim.lr`` when it is null (the paper: 1e-6 = 2 x 5e-7)."""
        c = self.prm_cfg
        return float(c["lr"]) if c["lr"] is not None else float(c["lr_ratio"]) * float(self.optim_cfg.get("lr", 1e-5))

    def prm_mini_batch(self, n: int) -> int:
        """Rows per PRM optimiser step on this rank: ``algo.prm.mini_batch_size`` (global), else the step's rows
        split into ``algo.prm.updates_per_step`` mini-batches (the paper: 4 PRM updates per RL step)."""
        c = self.prm_cfg
        if c["mini_batch_size"]:
            return max(1, c["mini_batch_size"] // D.world_size())
        return max(1, math.ceil(n / int(c["updates_per_step"])))

    def make_aux_optimizers(self):
        c = self.prm_cfg
        return {"prm_optimizer": torch.optim.AdamW(self.prm.parameters(), lr=self.prm_lr,
                                                   weight_decay=c["weight_decay"], betas=tuple(c["betas"]))}

    # ------------------------------------------------------------------------------------ the paper's step
    def dense_rewards(self, step: Step) -> None:
        """The implicit PRM as the step's token scorer: its rewards ``r_t = β q_t`` (trained on this batch)."""
        super().dense_rewards(step)
        ro, rewards = step.ro, step.rewards
        c, mask = self.prm_cfg, ro.loss_mask.bool()
        ref = self.logp_pass(self.prm_ref if self.prm_ref is not None else self.policy, ro, temperature=1.0)
        q, metrics = self.implicit_q(ro, ref, rewards.outcome, step.real)
        r = core.implicit_process_rewards(q, mask, c["beta"], c["granularity"])
        if c["norm"] == "batch_norm":
            r = core.prime_batch_norm(r, mask, reduce=self.batch_reduce())
        rewards.token = r
        metrics["prime/process_reward"] = float((r * mask).sum(-1).mean())
        self.metrics.write(metrics)

    # ------------------------------------------------------------------------------------ implicit PRM
    def implicit_q(self, ro: Rollouts, ref: torch.Tensor, outcome: torch.Tensor, real: torch.Tensor | None = None):
        """``q`` [N, T] for the rewards (from the PRM before (``after``) or after (``before``) its update),
        and the PRM's metrics, its accuracies measured before it trains on this batch."""
        c, mask = self.prm_cfg, ro.loss_mask.bool()
        needs_pre = c["update"] == "none" or c["loss"] == "dpo"
        q_pre = self.prm_q(ro, ref) if needs_pre else None
        metrics: dict[str, float] = {}
        if c["update"] == "none":
            q = q_seen = q_pre
        else:
            q_seen, metrics = self.update_prm(ro, ref, outcome, q_pre, real)
            if c["update"] == "before":   # double forward: rewards from the updated PRM
                q = self.prm_q(ro, ref)
            else:                         # single forward; with dpo, the pass before the update (verl "reverse")
                q = q_pre if q_pre is not None else q_seen
        scores = (q_seen * mask).sum(-1)
        metrics["prime/prm_acc"] = float(core.prm_pairwise_acc(scores, outcome, ro.group_ids))
        metrics["prime/prm_acc_abs"] = float(core.prm_abs_acc(scores, outcome))
        metrics["prime/raw_q"] = float(scores.mean())
        return q, metrics

    def prm_q(self, ro: Rollouts, ref: torch.Tensor) -> torch.Tensor:
        return (self.logp_pass(self.prm, ro, temperature=1.0) - ref) * ro.loss_mask

    def update_prm(self, ro: Rollouts, ref: torch.Tensor, outcome: torch.Tensor, q_pre: torch.Tensor | None,
                   real: torch.Tensor | None = None):
        """One epoch of the PRM loss over the rollouts in mini-batches of ``algo.prm.mini_batch_size`` rows
        (global: each of W ranks takes ``mini_batch_size / W`` of its rows; micro-batched, each loss divided
        by its mini-batch's global row count). Returns the detached ``q`` of the forward that preceded each
        mini-batch's optimiser step, and metrics."""
        c, micro = self.prm_cfg, self.batch_cfg["micro_batch_size"]
        opt, N = self.aux["prm_optimizer"], len(ro)
        mbs = self.prm_mini_batch(N)
        group_q = group_o = None
        if c["loss"] == "dpo":
            group_q, group_o = _group_members((q_pre * ro.loss_mask).sum(-1), outcome, ro.group_ids)
        q_seen = torch.zeros_like(ref)
        loss_sum, norms, steps = 0.0, 0.0, 0

        def micro_losses(idx: torch.Tensor, n_seq: int):
            for m0 in range(0, len(idx), micro):
                mid = idx[m0:m0 + micro]
                mb = ro.select(mid)
                logp, _ = self.forward_logp(self.prm, mb, temperature=1.0)
                mask = mb.loss_mask.bool()
                q = (logp - ref[mid]) * mask
                q_seen[mid] = q.detach()
                if c["loss"] == "ce":
                    yield core.prm_ce_loss(q, mask, outcome[mid], c["beta"], num_seqs=n_seq)
                else:
                    yield core.prm_dpo_loss(q, mask, outcome[mid], group_q[mid], group_o[mid], c["beta"],
                                            num_seqs=n_seq)

        self.prm.train()
        for start in range(0, N, mbs):
            idx = torch.arange(start, min(start + mbs, N), device=ref.device)
            loss, norm, ok = self.aux_update(opt, self.prm, micro_losses(idx, self.global_rows(idx, real)),
                                             c["max_grad_norm"])
            loss_sum, norms, steps = loss_sum + loss, norms + (norm if ok else 0.0), steps + 1
        if D.is_distributed():  # each rank's losses are its share of the global mini-batch losses
            loss_sum = float(D.all_reduce([loss_sum])[0])
        return q_seen, {"prime/prm_loss": loss_sum / steps, "prime/prm_grad_norm": norms / steps,
                        "prime/prm_updates": float(steps)}


def _group_members(values: torch.Tensor, outcome: torch.Tensor, group_ids: torch.Tensor):
    """``[N, K]`` views of each row's group: the members' ``values`` and outcomes (padded with NaN outcome,
    which no comparison selects, where groups differ in size)."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    K = int(torch.bincount(inv).max())
    vals = torch.zeros(len(uniq), K, dtype=values.dtype, device=values.device)
    outs = torch.full((len(uniq), K), float("nan"), dtype=outcome.dtype, device=outcome.device)
    fill = [0] * len(uniq)
    for i, g in enumerate(inv.tolist()):
        vals[g, fill[g]], outs[g, fill[g]] = values[i], outcome[i]
        fill[g] += 1
    return vals[inv], outs[inv]
