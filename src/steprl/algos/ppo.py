"""PPO with a learned critic (Ouyang et al., 2022 style, as in verl / OpenRLHF).

    values  V(s_t) from a critic (the policy's trunk, copied, with a scalar head)
    A, R    = GAE(outcome on the last token + dense rewards, V; gamma, lambda), A whitened
    loss    = PPO clip(A) + vf_coef * clipped value loss(V, V_old, R)

The critic has its own parameter group (learning rate ``critic_lr``) in the policy's optimiser; its loss
is aggregated with the same global token counts as the policy loss. The policy's and the critic's gradients are
clipped separately, each to its own max norm (``optim.max_grad_norm``, ``critic.grad_clip``), as verl and
OpenRLHF do: a large value loss does not shrink the policy's step.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.base import RLModule
from steprl.config import ConfigError, node_defaults
from steprl.models.heads import ScalarHead


class PPO(RLModule):
    def __init__(self, *args, critic_lr: float = 1e-4, vf_coef: float = 0.5, value_clip: float | None = 0.2,
                 critic: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic = ScalarHead(self.policy)  # the policy's trunk, copied, with a scalar head
        self.critic_lr, self.vf_coef, self.value_clip = critic_lr, vf_coef, value_clip
        self.critic_cfg = {**node_defaults("ppo", "critic"), **(critic or {})}
        unknown = set(self.critic_cfg) - {"grad_clip"}
        if unknown:
            raise ConfigError(f"algo.critic has unknown keys {sorted(unknown)}; valid: ['grad_clip']")

    def param_groups(self):
        return super().param_groups() + [{"params": list(self.critic.parameters()), "lr": self.critic_lr}]

    def grad_clip_groups(self, params):
        """The policy's gradients to ``optim.max_grad_norm``, the critic's to ``algo.critic.grad_clip``."""
        ids = {id(p) for p in self.critic.parameters()}
        return [("policy", [p for p in params if id(p) not in ids], self.optim_cfg.get("max_grad_norm")),
                ("critic", [p for p in params if id(p) in ids], self.critic_cfg["grad_clip"])]

    def values(self, mb) -> torch.Tensor:
        """V(s_t) for each response token t: the critic read at the position that predicts token t."""
        return self.critic.response_scores(mb)

    @torch.no_grad()
    def prepare(self, step):
        ro, mbs = step.ro, self.batch_cfg["micro_batch_size"]
        vals = [self.values(ro.select(torch.arange(i, min(i + mbs, len(ro))))) for i in range(0, len(ro), mbs)]
        return {"values": torch.cat(vals) * ro.loss_mask}

    def extra_loss(self, mb, logp, extras):
        v = self.values(mb)
        return self.vf_coef * core.value_clip_loss(v, extras["values"], extras["returns"], self.value_clip)
