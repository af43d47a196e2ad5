"""Pure math of PPR (Principle Process Reward, with Reward Normalization): turn boundaries, ReNorm of the
judge's step rewards, and the GRPO-with-process-supervision baseline (Shao et al., 2024, §4.1.3) it is compared with.

Conventions: ``step_ids[N, T]`` gives each response token's turn / step (-1 for observation tokens, padding,
and tokens in no step); step values are ``[N, S]`` with NaN for "no value".
"""
from __future__ import annotations

import torch
from torch import Tensor

from .advantages import _group_stats, discounted_returns

__all__ = ["turn_end_positions", "renorm_step_rewards", "place_at_positions", "process_group_advantage"]


def turn_end_positions(step_ids: Tensor, response_mask: Tensor) -> Tensor:
    """``[N, S]`` position of the last token of each turn *together with what follows it* up to the next turn
    (its tool observation): ``end_k = start_{k+1} - 1`` and, for the last turn of a row, its last response token
    (PPR's ``turn_mask`` positions). -1 for a step id absent from the row. ``S = max step id + 1``.
    """
    n, T = step_ids.shape
    S = int(step_ids.max().item()) + 1 if step_ids.numel() else 0
    if S <= 0:
        return torch.full((n, 0), -1, dtype=torch.long, device=step_ids.device)
    valid = (step_ids >= 0) & response_mask.bool()
    pos = torch.arange(T, device=step_ids.device).expand(n, T)
    col = torch.where(valid, step_ids, torch.full_like(step_ids, S))
    starts = torch.full((n, S + 1), T, dtype=torch.long, device=step_ids.device)
    starts = starts.scatter_reduce(1, col, pos, reduce="amin", include_self=True)[:, :S]
    present = starts < T
    # the first start of any later step: reverse cumulative minimum, shifted by one
    later = torch.cat([starts[:, 1:], torch.full((n, 1), T, dtype=torch.long, device=step_ids.device)], 1)
    nxt = later.flip(-1).cummin(-1).values.flip(-1)
    last = torch.where(response_mask.bool(), pos, torch.full_like(pos, -1)).amax(-1, keepdim=True).expand(n, S)
    ends = torch.where(nxt < T, nxt - 1, last)
    return torch.where(present, ends, torch.full_like(ends, -1))


def renorm_step_rewards(process: Tensor, outcome: Tensor, num_steps: Tensor, beta: float = 1.0,
                        center_final: bool = False) -> Tensor:
    """PPR's ReNorm on step rewards ``[N, S]``.

    For a row with ``K = num_steps`` turns: ``r_k = r_p,k + r_o - β`` for ``k < K-1`` (``r_p,k = process[k]``,
    NaN = an invalid or missing judgement = 0), and ``r_{K-1} = r_o`` (``r_o - β/2`` with ``center_final``).
    Steps ``>= K`` are NaN. With ``r_p ∈ [0,1]``, ``r_o ∈ {0,1}`` and ``β = 1`` every process reward is >= 0 for a
    correct trajectory and <= 0 for a wrong one (sign consistency).
    """
    n, S = process.shape
    k = torch.arange(S, device=process.device).expand(n, S)
    K = num_steps.to(process.device).long()[:, None]
    r_o = outcome.to(process.dtype)[:, None].expand(n, S)
    rp = torch.nan_to_num(process, nan=0.0)
    final = r_o - (beta / 2 if center_final else 0.0)
    out = torch.where(k < K - 1, rp + r_o - beta, final)
    return torch.where(k < K, out, torch.full_like(out, float("nan")))


def place_at_positions(values: Tensor, positions: Tensor, length: int) -> Tensor:
    """``[N, T]`` holding ``values[n, k]`` at ``positions[n, k]`` (summed where positions repeat), 0 elsewhere;
    entries with position -1 or a NaN value are skipped."""
    n = values.shape[0]
    ok = (positions >= 0) & ~torch.isnan(values)
    out = torch.zeros(n, length + 1, dtype=values.dtype, device=values.device)
    idx = torch.where(ok, positions, torch.full_like(positions, length))
    out.scatter_add_(1, idx, torch.where(ok, values, torch.zeros_like(values)))
    return out[:, :length]


def process_group_advantage(step_rewards: Tensor, positions: Tensor, group_ids: Tensor, mask: Tensor,
                            eps: float = 1e-6) -> Tensor:
    """GRPO with process supervision (Shao et al., 2024, §4.1.3) on step rewards ``[N, S]`` (NaN = none) that
    sit at token ``positions`` ``[N, S]``: each reward is normalised by the mean and (unbiased) std of *all*
    step rewards of its group, ``r̃ = (r - mean_g) / (std_g + eps)``, and a token's advantage is the sum of the
    normalised rewards at or after it, over ``mask`` ``[N, T]``."""
    n, S = step_rewards.shape
    ok = ~torch.isnan(step_rewards) & (positions >= 0)
    flat_g = group_ids[:, None].expand(n, S)[ok]
    flat_r = step_rewards[ok]
    _, mean, std = _group_stats(flat_r, flat_g)
    norm = torch.full_like(step_rewards, float("nan"))
    norm[ok] = (flat_r - mean) / (std + eps)
    return discounted_returns(place_at_positions(norm, positions, mask.shape[1]), mask)
