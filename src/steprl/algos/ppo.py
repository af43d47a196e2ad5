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

import copy

import torch

from steprl import core
from steprl.algos.base import RLModule
from steprl.config import ConfigError, node_defaults


class Critic(torch.nn.Module):
    def __init__(self, policy):
        super().__init__()
        self.trunk = copy.deepcopy(policy.get_decoder() if hasattr(policy, "get_decoder") else policy.model)
        self.head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1).float()  # a bf16 trunk feeds the fp32 head


class PPO(RLModule):
    def __init__(self, *args, critic_lr: float = 1e-4, vf_coef: float = 0.5, value_clip: float | None = 0.2,
                 critic: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic = Critic(self.policy)
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
        ids, att = mb.input_ids, mb.attention_mask
        pos = (att.long().cumsum(-1) - 1).clamp(min=0)
        v = self.critic(ids, att, pos)
        T = mb.response_ids.shape[1]
        return v[:, -T - 1:-1]

    @torch.no_grad()
    def prepare(self, step):
        ro, mbs = step.ro, self.batch_cfg["micro_batch_size"]
        vals = [self.values(ro.select(torch.arange(i, min(i + mbs, len(ro))))) for i in range(0, len(ro), mbs)]
        return {"values": torch.cat(vals) * ro.loss_mask}

    def extra_loss(self, mb, logp, extras):
        v = self.values(mb)
        return self.vf_coef * core.value_clip_loss(v, extras["values"], extras["returns"], self.value_clip)
