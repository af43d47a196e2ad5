"""EMPG (``algo=empg``): Entropy-Modulated Policy Gradients, a plug-in on the advantage of GRPO / DAPO.

    A(τ_i)       = the base group advantage (``advantage=`` group: GRPO by default)
    H_{i,t}      = mean token entropy of step t under the rollout policy (no grad)
    A_final(i,t) = g(H_{i,t}) A(τ_i) + ζ f(H_{i,t+1}) - batch mean          (steprl.core.empg, spec §1.3)
    Â_{i,t,j}    = A_final(i,t) on every token j of step t                    (loss unchanged)

A step is whatever ``Rollouts.step_ids`` says: a line of an ``arith`` solution (the task's splitter), or an
agent turn (the AgentLoop marks each assistant turn; observation tokens have ``loss_mask`` 0 and get nothing).
Tokens that receive gradient but belong to no step (EOS, whitespace between steps) join the step before them.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.base import RLModule
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.rollout.types import Rollouts


class EMPG(RLModule):
    """``empg``: k (modulation sharpness), k_future (k' of the future-clarity bonus), zeta (ζ), eps and
    final_norm (mean | mean_std | none)."""

    def __init__(self, *args, empg: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.empg_cfg = {**node_defaults("empg", "empg"), **(empg or {})}
        if self.empg_cfg["final_norm"] not in core.EMPG_FINAL_NORMS:
            raise ConfigError(f"algo.empg.final_norm={self.empg_cfg['final_norm']!r} is not one of "
                             f"{list(core.EMPG_FINAL_NORMS)}")

    @torch.no_grad()
    def prepare(self, step: Step) -> dict[str, torch.Tensor]:
        """Token entropies of the rollout (old) policy, before any update of this step."""
        ro = step.ro
        mbs, was = self.batch_cfg["micro_batch_size"], self.policy.training
        self.policy.eval()
        ent = [self.forward_logp(self.policy, ro.select(torch.arange(i, min(i + mbs, len(ro)))), entropy=True)[1]
               for i in range(0, len(ro), mbs)]
        self.policy.train(was)
        return {"old_entropy": torch.cat(ent)}

    def advantages(self, step: Step):
        ro = step.ro
        base, returns = super().advantages(step)
        mask = ro.loss_mask.float()
        traj_adv = core.masked_mean(base, mask, dim=-1)          # A(τ_i): the broadcast trajectory advantage
        steps = core.fill_step_ids(ro.step_ids, ro.loss_mask)
        n_steps = int(steps.max()) + 1 if steps.numel() else 0
        if n_steps == 0:
            return base, returns
        H = core.gather_step_values(step.extras["old_entropy"], steps, n_steps, "mean")
        c = self.empg_cfg
        out = core.empg_advantages(H, traj_adv, k=c["k"], k_future=c["k_future"], zeta=c["zeta"], eps=c["eps"],
                                   final_norm=c["final_norm"])
        adv = core.scatter_step_values(out.adv, steps) * mask
        ok = ~torch.isnan(H)
        self.metrics.write({"empg/g_mean": float(out.g[ok].mean()), "empg/g_min": float(out.g[ok].min()),
                         "empg/g_max": float(out.g[ok].max()), "empg/step_entropy": float(H[ok].mean()),
                         "empg/bonus": float(out.bonus[ok].mean()), "empg/steps_per_traj": float(ok.sum(-1).float().mean()),
                         "empg/adv_abs": float(out.adv[ok].abs().mean())})
        return adv, returns
