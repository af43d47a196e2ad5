"""Pure math of E-GRPO (Entity-aware Group Relative Policy Optimization, for search agents): the partial credit
of a wrong answer by its entity match rate."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["egrpo_rewards"]


def egrpo_rewards(correct: Tensor, match_rate: Tensor, invalid: Tensor, group_ids: Tensor,
                  alpha: float = 0.3) -> Tensor:
    """E-GRPO rewards ``[N]``: ``1`` if correct; ``alpha * γ_i / γ_max`` if wrong (``γ_max`` = the largest
    entity match rate in the group, over all rollouts; 0 when ``γ_max = 0``); ``0`` on a format error or
    over-length (``invalid``), which overrides both."""
    g = match_rate.float()
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    gmax = torch.zeros(uniq.numel(), dtype=g.dtype, device=g.device).scatter_reduce(
        0, inv, g, reduce="amax", include_self=True)[inv]
    hat = torch.where(gmax > 0, g / gmax.clamp_min(1e-12), torch.zeros_like(g))
    r = torch.where(correct.bool(), torch.ones_like(g), alpha * hat)
    return torch.where(invalid.bool(), torch.zeros_like(r), r)
