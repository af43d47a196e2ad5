"""PRIME's implicit PRM as a token scorer: the ``dense_rewards`` stage asks it for the step's per-token rewards
``r_t = β q_t``, ``q_t = log π_φ(y_t|y_<t) - log π_ref(y_t|y_<t)`` (Cui et al., 2025, Eq. 3), and it trains
``π_φ`` online on the step's outcome labels with the CE loss ``BCE(σ(β Σ_t q_t), r_o)`` (Eq. 4) or verl's
detached DPO loss.

When it trains (``reward.token.train_order``):

- ``before_policy`` (default; the paper's Algorithm 1, which updates the PRM between scoring the filtered
  rollouts and the policy's update, as both reference codes do): in the ``dense_rewards`` stage. With
  ``reward.token.update=after`` ("single forward") each PRM mini-batch's rewards come from the forward that precedes
  its optimiser step, so the first mini-batch is scored by the PRM before this step's update and each later one by
  the PRM after the mini-batches before it; with ``update=before`` ("double forward", verl's recipe) the PRM
  first trains on the whole batch, then scores it.
- ``after_policy``: the rewards of step t come from one forward of the PRM before any step-t update (the PRM
  as step t-1 left it), and the PRM trains on step t's rollouts in the ``after_update`` stage, after the
  policy's update. Only with ``update=after`` (a PRM that trains after the policy cannot score this step
  after its update).

The models are the module's (``m.prm``, trained, and ``m.prm_ref``, the frozen π_ref, or None for
``ref_type=policy``: the policy's log-probs before its update), so they move, shard and checkpoint with it; the
PRM's optimiser is the module's aux optimiser ``prm_optimizer`` (:class:`steprl.algos.aux_model.AuxOptimizers`).
"""
from __future__ import annotations

import math

import torch

from steprl import core
from steprl.algos.step import Step
from steprl.config import ConfigError, token_defaults
from steprl.rollout.types import Rollouts
from steprl.utils import dist as D

CHOICES = {"loss": ("ce", "dpo"), "update": ("after", "before", "none"), "ref_type": ("freeze", "policy"),
           "granularity": core.PRIME_GRANULARITIES, "norm": ("batch_norm", "none"),
           "train_order": ("before_policy", "after_policy")}


class ImplicitPRM:
    """The token scorer ``reward/token=implicit_prm`` (keys and defaults: ``conf/reward/token/implicit_prm.yaml``,
    built by ``_target_`` from ``reward.token``), validated here."""

    def __init__(self, **cfg):
        defaults = token_defaults("implicit_prm")
        unknown = set(cfg) - set(defaults)
        if unknown:
            raise ConfigError(f"reward.token has unknown keys {sorted(unknown)}; valid: {sorted(defaults)}")
        c = self.cfg = {**defaults, **cfg}
        for key, choices in CHOICES.items():
            if c[key] not in choices:
                raise ConfigError(f"reward.token.{key}={c[key]!r} is not one of {list(choices)}")
        if c["train_order"] == "after_policy" and c["update"] == "before":
            raise ConfigError("reward.token.train_order=after_policy trains the PRM after the policy's update, so it "
                              "cannot rescore the step after its update: use reward.token.update=after (or none), or "
                              "reward.token.train_order=before_policy")
        mbs, ups = c["mini_batch_size"], c["updates_per_step"]
        if mbs is not None and (not isinstance(mbs, int) or mbs < 1):
            raise ConfigError(f"reward.token.mini_batch_size must be a positive integer or null, got {mbs!r}")
        if mbs is None and (not isinstance(ups, int) or ups < 1):
            raise ConfigError(f"reward.token.updates_per_step must be a positive integer (used when "
                              f"reward.token.mini_batch_size "
                              f"is null), got {ups!r}")
        if c["lr"] is None and not float(c["lr_ratio"]) > 0:
            raise ConfigError(f"reward.token.lr_ratio must be > 0 when reward.token.lr is null, got {c['lr_ratio']!r}")

    @property
    def trains_after_policy(self) -> bool:
        return self.cfg["train_order"] == "after_policy" and self.cfg["update"] != "none"

    def lr(self, policy_lr: float) -> float:
        """``reward.token.lr``, or ``reward.token.lr_ratio`` x the policy's lr when it is null (paper: 1e-6 =
        2 x 5e-7)."""
        c = self.cfg
        return float(c["lr"]) if c["lr"] is not None else float(c["lr_ratio"]) * float(policy_lr)

    def optimizer(self, prm: torch.nn.Module, policy_lr: float) -> torch.optim.Optimizer:
        """The PRM's AdamW (constant lr)."""
        c = self.cfg
        return torch.optim.AdamW(prm.parameters(), lr=self.lr(policy_lr), weight_decay=c["weight_decay"],
                                 betas=tuple(c["betas"]))

    def mini_batch(self, n: int) -> int:
        """Rows per PRM optimiser step on this rank: ``reward.token.mini_batch_size`` (global), else the step's rows
        split into ``reward.token.updates_per_step`` mini-batches (the paper: 4 PRM updates per RL step)."""
        c = self.cfg
        if c["mini_batch_size"]:
            return max(1, c["mini_batch_size"] // D.world_size())
        return max(1, math.ceil(n / int(c["updates_per_step"])))

    # ------------------------------------------------------------------------------------ the stages
    def score(self, m, step: Step) -> None:
        """``dense_rewards``: set ``step.rewards.token`` to the PRM's rewards (training it first with
        ``before_policy``); with ``after_policy`` keep its inputs in ``step.extras`` for :meth:`after_update`."""
        ro, rewards = step.ro, step.rewards
        c, mask = self.cfg, ro.loss_mask.bool()
        ref = m.logp_pass(m.prm_ref if m.prm_ref is not None else m.policy, ro, temperature=1.0)
        if self.trains_after_policy:
            q, metrics = self.q(m, ro, ref), {}
            step.extras["prm_ref"], step.extras["prm_q"] = ref, q
        else:
            q, metrics = self.implicit_q(m, ro, ref, rewards.outcome, step.real)
        r = core.implicit_process_rewards(q, mask, c["beta"], c["granularity"])
        if c["norm"] == "batch_norm":
            r = core.prime_batch_norm(r, mask, reduce=m.batch_reduce())
        rewards.token = r
        metrics["prime/process_reward"] = float((r * mask).sum(-1).mean())
        m.metrics.write(metrics)

    def after_update(self, m, step: Step) -> None:
        """``after_update`` with ``after_policy``: train the PRM on the step's rollouts, scored before."""
        if not self.trains_after_policy or "prm_q" not in step.extras:  # before_policy, or a skipped step
            return
        ro, q_pre = step.ro, step.extras["prm_q"]
        q_seen, metrics = self.train(m, ro, step.extras["prm_ref"], step.rewards.outcome, q_pre, step.real)
        m.metrics.write({**metrics, **self.accuracies(ro, q_seen, step.rewards.outcome)})

    # ------------------------------------------------------------------------------------ the implicit PRM
    def implicit_q(self, m, ro: Rollouts, ref: torch.Tensor, outcome: torch.Tensor, real: torch.Tensor | None = None):
        """``before_policy``: ``q`` [N, T] for the rewards (single forward: the forwards of the PRM's update;
        double forward: the PRM after its update; none: the frozen PRM) and the PRM's metrics."""
        c = self.cfg
        needs_pre = c["update"] == "none" or c["loss"] == "dpo"
        q_pre = self.q(m, ro, ref) if needs_pre else None
        metrics: dict[str, float] = {}
        if c["update"] == "none":
            q = q_seen = q_pre
        else:
            q_seen, metrics = self.train(m, ro, ref, outcome, q_pre, real)
            if c["update"] == "before":   # double forward: rewards from the updated PRM
                q = self.q(m, ro, ref)
            else:                         # single forward; with dpo, the pass before the update (verl "reverse")
                q = q_pre if q_pre is not None else q_seen
        return q, {**metrics, **self.accuracies(ro, q_seen, outcome)}

    def accuracies(self, ro: Rollouts, q_seen: torch.Tensor, outcome: torch.Tensor) -> dict[str, float]:
        """The PRM's pairwise and absolute accuracies (verl's) and mean Σ_t q of the scores ``q_seen``."""
        scores = (q_seen * ro.loss_mask.bool()).sum(-1)
        return {"prime/prm_acc": float(core.prm_pairwise_acc(scores, outcome, ro.group_ids)),
                "prime/prm_acc_abs": float(core.prm_abs_acc(scores, outcome)), "prime/raw_q": float(scores.mean())}

    def q(self, m, ro: Rollouts, ref: torch.Tensor) -> torch.Tensor:
        """``q`` [N, T] of the PRM as it is (no gradient)."""
        return (m.logp_pass(m.prm, ro, temperature=1.0) - ref) * ro.loss_mask

    def train(self, m, ro: Rollouts, ref: torch.Tensor, outcome: torch.Tensor, q_pre: torch.Tensor | None,
              real: torch.Tensor | None = None):
        """One epoch of the PRM loss over the rollouts in mini-batches of ``reward.token.mini_batch_size`` rows
        (global: each of W ranks takes ``mini_batch_size / W`` of its rows; micro-batched, each loss divided
        by its mini-batch's global row count). Returns the detached ``q`` of the forward that preceded each
        mini-batch's optimiser step, and metrics."""
        c, micro = self.cfg, m.batch_cfg["micro_batch_size"]
        opt, N = m.aux["prm_optimizer"], len(ro)
        mbs = self.mini_batch(N)
        group_q = group_o = None
        if c["loss"] == "dpo":
            group_q, group_o = _group_members((q_pre * ro.loss_mask).sum(-1), outcome, ro.group_ids)
        q_seen = torch.zeros_like(ref)
        loss_sum, norms, steps = 0.0, 0.0, 0

        def micro_losses(idx: torch.Tensor, n_seq: int):
            for m0 in range(0, len(idx), micro):
                mid = idx[m0:m0 + micro]
                mb = ro.select(mid)
                logp, _ = m.forward_logp(m.prm, mb, temperature=1.0)
                mask = mb.loss_mask.bool()
                q = (logp - ref[mid]) * mask
                q_seen[mid] = q.detach()
                if c["loss"] == "ce":
                    yield core.prm_ce_loss(q, mask, outcome[mid], c["beta"], num_seqs=n_seq)
                else:
                    yield core.prm_dpo_loss(q, mask, outcome[mid], group_q[mid], group_o[mid], c["beta"],
                                            num_seqs=n_seq)

        m.prm.train()
        for start in range(0, N, mbs):
            idx = torch.arange(start, min(start + mbs, N), device=ref.device)
            loss, norm, ok = m.aux_update(opt, m.prm, micro_losses(idx, m.global_rows(idx, real)),
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
