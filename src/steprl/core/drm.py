"""DRM (dimension-level reward model): pure math of spec §3.3-§3.6.

    Conf_i  = mean_{t∈R} log p(t) + Σ_{t∈A} log p(t)             (reasoning mean + answer sum)
    R_DRM,i = w_Conf·ŝ_Conf,i + w_Rel·ŝ_Rel,i + w_Coh·ŝ_Coh,i       ŝ = each dimension normalised in its group
    A_i     = z_G(r_ans)_i + z_G(R_DRM)_i                           z_G: population std, ε = 1e-6

Rows that are not ``valid`` (no reasoning or no answer span: a format failure) take no part in the group
statistics and get the group's minimum R_DRM (``invalid="min"``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .masks import masked_mean, masked_sum

__all__ = ["drm_confidence", "group_normalize", "drm_combine", "drm_advantage", "drm_select_pairs", "NORMS"]

NORMS = ("zscore", "minmax", "none")


def drm_confidence(logp: Tensor, reason_mask: Tensor, answer_mask: Tensor) -> Tensor:
    """``[N]``: mean log-prob over the reasoning tokens + sum of log-probs over the answer tokens."""
    return masked_mean(logp, reason_mask, dim=-1) + masked_sum(logp, answer_mask, dim=-1)


def group_normalize(x: Tensor, group_ids: Tensor, mode: str = "zscore", eps: float = 1e-6,
                    valid: Tensor | None = None) -> Tensor:
    """Normalise ``x[N]`` within each group over its ``valid`` rows (all by default).

    ``zscore``: ``(x - mean_g) / (std_g + eps)`` with the *population* std; ``minmax``:
    ``(x - min_g) / (max_g - min_g + eps)``; ``none``: ``x``. Invalid rows are returned as 0.
    """
    if mode not in NORMS:
        raise ValueError(f"normalisation must be one of {NORMS}, got {mode!r}")
    x = x.double()
    v = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.bool()
    out = torch.zeros_like(x)
    for g in torch.unique(group_ids):
        rows = (group_ids == g) & v
        if not bool(rows.any()):
            continue
        xs = x[rows]
        if mode != "none" and bool(xs.min() == xs.max()):
            continue  # an all-equal group: exactly 0
        if mode == "zscore":
            out[rows] = (xs - xs.mean()) / (xs.std(unbiased=False) + eps)
        elif mode == "minmax":
            out[rows] = (xs - xs.min()) / (xs.max() - xs.min() + eps)
        else:
            out[rows] = xs
    return out.float()


def drm_combine(dims: Sequence[Tensor], weights: Sequence[float], group_ids: Tensor, norm: str = "zscore",
                eps: float = 1e-6, valid: Tensor | None = None, invalid: str = "min") -> Tensor:
    """``R_DRM[N] = Σ_d w_d · normalise_g(s_d)``. Invalid rows: ``"min"`` -> the group's minimum R_DRM over its
    valid rows (0 if it has none), ``"zero"`` -> 0."""
    if len(dims) != len(weights):
        raise ValueError(f"{len(dims)} dimensions but {len(weights)} weights")
    if invalid not in ("min", "zero"):
        raise ValueError(f"invalid must be 'min' or 'zero', got {invalid!r}")
    r = sum(w * group_normalize(d, group_ids, norm, eps, valid) for d, w in zip(dims, weights))
    if valid is None or bool(valid.all()):
        return r
    v = valid.bool()
    out = r.clone()
    for g in torch.unique(group_ids):
        rows = group_ids == g
        floor = r[rows & v].min() if invalid == "min" and bool((rows & v).any()) else torch.zeros(())
        out[rows & ~v] = floor
    return out


def drm_advantage(r_ans: Tensor, r_drm: Tensor, group_ids: Tensor, use_answer: bool = True,
                  eps: float = 1e-6) -> Tensor:
    """``A_i = z_G(r_ans)_i + z_G(R_DRM)_i`` (population std); ``use_answer=False`` is the DRM-only variant."""
    a = group_normalize(r_drm, group_ids, "zscore", eps)
    if use_answer:
        a = a + group_normalize(r_ans, group_ids, "zscore", eps)
    return a


def drm_select_pairs(r_drm: Tensor, group_ids: Tensor, min_gap: float = 0.0) -> list[tuple[int, int]]:
    """DPO pairs (off-policy use): per group, ``(argmax R_DRM, argmin R_DRM)`` row indices, when the gap
    exceeds ``min_gap`` and the group has two or more rows."""
    pairs = []
    for g in torch.unique(group_ids):
        rows = torch.nonzero(group_ids == g).flatten()
        if rows.numel() < 2:
            continue
        vals = r_drm[rows]
        hi, lo = rows[int(vals.argmax())], rows[int(vals.argmin())]
        if float(r_drm[hi] - r_drm[lo]) > min_gap:
            pairs.append((int(hi), int(lo)))
    return pairs
