"""Advantage estimators: group baselines (GRPO, RLOO, Dr.GRPO), returns, REINFORCE++, GAE.

Shapes: ``rewards`` / ``outcome`` are float ``[N]``; ``group_ids`` is a long ``[N]`` tensor with arbitrary
ids (groups need not be contiguous or of equal size); token-level tensors are ``[N, T]`` with a
``mask`` ``[N, T]`` (bool or 0/1) marking the positions that take part.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .masks import masked_mean_var, masked_whiten

__all__ = [
    "group_mean_std",
    "grpo_advantage",
    "rloo_advantage",
    "drgrpo_advantage",
    "discounted_returns",
    "reinforce_pp_advantage",
    "reinforce_pp_baseline_advantage",
    "gae",
    "outcome_to_token_rewards",
    "last_token_index",
]

STD_SCALES = ("group", "batch", "none")


def _as_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.float()


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-element (group size K, group mean, group unbiased std; 0 for K = 1), in the rewards' dtype.

    The sums run in float64, and a group whose values are all equal gets exactly that value as its mean and 0 as
    its std, so ``r - mean`` is exactly 0 there (in float32 eight rewards of 0.3 sum to a mean of 0.30000001)."""
    r = _as_float(rewards)
    x = r.double()
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = uniq.numel()
    count = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, inv, torch.ones_like(x))
    mean = torch.zeros_like(count).index_add_(0, inv, x) / count
    lo = torch.full_like(count, float("inf")).scatter_reduce(0, inv, x, "amin")
    hi = torch.full_like(count, float("-inf")).scatter_reduce(0, inv, x, "amax")
    equal = lo == hi
    mean = torch.where(equal, lo, mean)
    sq = torch.zeros_like(count).index_add_(0, inv, (x - mean[inv]) ** 2)
    var = torch.where((count > 1) & ~equal, sq / (count - 1).clamp_min(1), torch.zeros_like(sq))
    return count[inv].to(r.dtype), mean[inv].to(r.dtype), var.sqrt()[inv].to(r.dtype)


def group_mean_std(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-element group statistics ``(mean_g[N], std_g[N])``.

    ``mean_g = (1/K) Σ_{j∈g} r_j``; ``std_g = sqrt(Σ_{j∈g} (r_j - mean_g)² / (K - 1))`` (unbiased, like
    ``torch.std``), defined as 0 for a singleton group.
    """
    _, mean, std = _group_stats(rewards, group_ids)
    return mean, std


def grpo_advantage(rewards: Tensor, group_ids: Tensor, std_scale: str = "group", eps: float = 1e-4,
                   reduce=None, rows: Tensor | None = None) -> Tensor:
    """GRPO: ``A_i = (r_i - mean_g) / (s + eps)``.

    ``s`` is the group std (``"group"``), the unbiased std of the whole batch (``"batch"``; the mean is
    still the group mean, as in TRL's ``scale_rewards="batch"``), or no division at all (``"none"``,
    Dr.GRPO: ``A_i = r_i - mean_g``). With ``reduce`` (see :func:`~steprl.core.masks.masked_mean_var`) the
    batch std is that of every data-parallel rank's rows together, over the rows marked by ``rows`` [N]
    (all when None; padding rows are left out this way).
    """
    if std_scale not in STD_SCALES:
        raise ValueError(f"std_scale must be one of {STD_SCALES}, got {std_scale!r}")
    r = _as_float(rewards)
    _, mean, std = _group_stats(r, group_ids)
    centred = r - mean
    if std_scale == "none":
        return centred
    if std_scale == "batch" and reduce is not None:
        w = torch.ones_like(r) if rows is None else rows.to(r.dtype)
        std = masked_mean_var(r, w, unbiased=True, reduce=reduce)[1].sqrt()
    elif std_scale == "batch":
        std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
    return centred / (std + eps)


def rloo_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO: ``A_i = r_i - (1/(K-1)) Σ_{j≠i, j∈g} r_j = K/(K-1) · (r_i - mean_g)``; 0 for singleton groups."""
    r = _as_float(rewards)
    k, mean, _ = _group_stats(r, group_ids)
    return torch.where(k > 1, (r - mean) * k / (k - 1).clamp_min(1), torch.zeros_like(r))


def drgrpo_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr.GRPO: ``A_i = r_i - mean_g`` (no std division)."""
    r = _as_float(rewards)
    _, mean, _ = _group_stats(r, group_ids)
    return r - mean


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last non-zero mask position of each row ``[N]`` (long); -1 for an empty row."""
    t = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask.bool(), t, torch.full_like(t, -1)).amax(dim=-1)


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Reward-to-go over masked positions: ``G_t = r_t + γ · G_{next(t)}``.

    ``next(t)`` is the next *masked* position after ``t`` (``G`` past the last one is 0). Masked-out
    positions are skipped: their reward is ignored, their output is 0, and the return flows through
    them undiscounted, so γ is applied once per masked token (a tool observation in the middle of a
    response does not count as elapsed time). With ``γ = 1`` this is a reversed cumulative sum of
    ``r · m``.
    """
    m = mask.bool()
    r = _as_float(token_rewards)
    r = torch.where(m, r, torch.zeros_like(r))
    if gamma == 1.0:
        g = r.flip(-1).cumsum(-1).flip(-1)
        return torch.where(m, g, torch.zeros_like(g))
    out = torch.zeros_like(r)
    carry = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        carry = torch.where(m[:, t], r[:, t] + gamma * carry, carry)
        out[:, t] = torch.where(m[:, t], carry, torch.zeros_like(carry))
    return out


def reinforce_pp_advantage(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0, reduce=None) -> Tensor:
    """REINFORCE++: ``A = whiten(G)`` with ``G = discounted_returns(r, m, γ)``, whitened over all
    masked tokens of the batch (of every data-parallel rank with ``reduce``, see
    :func:`~steprl.core.masks.masked_whiten`). KL-in-reward, if any, must already be part of ``token_rewards``.
    """
    return masked_whiten(discounted_returns(token_rewards, mask, gamma), mask, reduce=reduce)


def reinforce_pp_baseline_advantage(rewards: Tensor, group_ids: Tensor, mask: Tensor, reduce=None) -> Tensor:
    """REINFORCE++-baseline: ``A_{i,t} = whiten(r_i - mean_g)`` broadcast over the masked tokens of row
    ``i``, whitened over all masked tokens of the batch (so longer responses weigh more in the stats;
    the global batch of every rank with ``reduce``).
    """
    centred = drgrpo_advantage(rewards, group_ids)
    scores = centred[:, None].expand(mask.shape)
    return masked_whiten(scores, mask, reduce=reduce)


def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over masked positions.

    ``δ_t = r_t + γ V_{next(t)} - V_t``, ``A_t = δ_t + γλ A_{next(t)}``, ``R_t = A_t + V_t``, where
    ``next(t)`` is the next masked position (value and advantage past the last one are 0). Masked-out
    positions are skipped as in :func:`discounted_returns` (reward ignored, output 0 in both tensors).
    Advantages are *not* whitened. Both outputs are computed under ``no_grad`` (values are targets).
    """
    m = mask.bool()
    r = _as_float(token_rewards)
    with torch.no_grad():
        v = values.to(r.dtype)
        adv = torch.zeros_like(r)
        next_v = torch.zeros_like(r[:, 0])
        next_a = torch.zeros_like(r[:, 0])
        for t in range(r.shape[1] - 1, -1, -1):
            mt = m[:, t]
            a_t = r[:, t] + gamma * next_v - v[:, t] + gamma * lam * next_a
            adv[:, t] = torch.where(mt, a_t, torch.zeros_like(a_t))
            next_a = torch.where(mt, a_t, next_a)
            next_v = torch.where(mt, v[:, t], next_v)
        returns = torch.where(m, adv + v, torch.zeros_like(adv))
    return adv, returns


def outcome_to_token_rewards(outcome: Tensor, mask: Tensor) -> Tensor:
    """Dense ``[N, T]`` rewards holding ``outcome[i]`` on the last masked token of row ``i``, 0 elsewhere
    (a row with no masked token gets no reward)."""
    o = _as_float(outcome)
    last = last_token_index(mask)
    t = torch.arange(mask.shape[-1], device=mask.device)
    hit = (t[None, :] == last[:, None]) & (last[:, None] >= 0)
    return torch.where(hit, o[:, None].expand(hit.shape), torch.zeros(hit.shape, dtype=o.dtype, device=o.device))
