"""PC-GRPO / PuzzleCraft (spec §4): the curriculum weight per prompt group and the GRPO-CARE consistency bonus.

All functions are per element: ``group_ids`` [N] says which group (prompt) each rollout answers, and a per-group
quantity comes back broadcast to the group's rows, like ``core.group_mean_std``.

Curriculum (spec §4.2, v2 "PuzzleCraft"):

    d(x)  = (1/G) Σ_i r_i                                  group mean reward (difficulty; 1 = easy)
    dπ(x) = −Σ_k p̂_k log p̂_k / log K                       choice puzzles (Rotation K=4, PatchFit K=D+1)
          = (M − 1) / (G − 1)                               Jigsaw, M = #distinct answers in the group
    w(x)  = λ · d(1 − d) · dπ^γ                              λ = 4, γ = 0.5; γ = 0 gives v1's 4d(1 − d)

An unusable answer is its own class (key −1 -> class K) [RECON]; with it the entropy can exceed log K, so dπ is
clamped to 1. Weights are not renormalised across the batch (the paper does not).

GRPO-CARE (spec §4.5, TencentARC/GRPO-CARE ``grpo_trainer_ref_ema.py``):

    p̄_i  = min(exp(mean_{answer tokens} log π_ref), cap)       π_ref an EMA of the policy
    accurate_i = acc_i > floor and acc_i ≥ mean_group(acc)
    confident_i = p̄_i ≥ mean_{j accurate}(p̄_j) − margin
    bonus_i = coef · acc_i · 1[accurate_i and confident_i]
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["group_difficulty", "choice_dispersion", "distinct_dispersion", "curriculum_weight", "care_bonus",
           "answer_confidence", "ema_update_"]


def _groups(group_ids: Tensor) -> tuple[Tensor, int]:
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, uniq.numel()


def group_difficulty(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """``d = (1/G) Σ_i r_i`` of each row's group, per row [N]."""
    r = rewards.float()
    inv, n = _groups(group_ids)
    total = torch.zeros(n, dtype=r.dtype, device=r.device).index_add_(0, inv, r)
    count = torch.zeros(n, dtype=r.dtype, device=r.device).index_add_(0, inv, torch.ones_like(r))
    return (total / count)[inv]


def choice_dispersion(keys: Tensor, group_ids: Tensor, num_options: Tensor | int) -> Tensor:
    """Normalised entropy of the options a group chose: ``−Σ_k p̂_k log p̂_k / log K`` per row [N], clamped to
    [0, 1]. ``keys`` [N] are option indices 0..K−1, −1 for an unusable answer (its own class K);
    ``num_options`` K per row (or one int). K ≤ 1 gives 0."""
    keys = keys.long()
    K = torch.as_tensor(num_options, device=keys.device).long().expand_as(keys)
    inv, n = _groups(group_ids)
    if (keys >= K).any() or (keys < -1).any():
        raise ValueError("choice_dispersion: keys must be in [0, K) or -1 (unusable answer)")
    cls = torch.where(keys < 0, K, keys)  # the invalid class
    width = int(K.max()) + 1 if keys.numel() else 1
    counts = torch.zeros(n, width, dtype=torch.float64, device=keys.device)
    counts.index_put_((inv, cls), torch.ones_like(cls, dtype=torch.float64), accumulate=True)
    p = counts / counts.sum(-1, keepdim=True)
    ent = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)
    k_group = torch.zeros(n, dtype=torch.long, device=keys.device).scatter_reduce_(0, inv, K, "amax",
                                                                                  include_self=False)
    log_k = torch.log(k_group.clamp(min=1).double())
    disp = torch.where(k_group > 1, ent / log_k.clamp(min=1e-12), torch.zeros_like(ent)).clamp(0.0, 1.0)
    return disp.float()[inv]


def distinct_dispersion(keys: Tensor, group_ids: Tensor) -> Tensor:
    """``(M − 1)/(G − 1)`` per row [N], M the number of distinct ``keys`` (answer ids) in the group of G rows
    (0 for G = 1)."""
    keys = keys.long()
    inv, n = _groups(group_ids)
    size = torch.zeros(n, dtype=torch.long, device=keys.device).index_add_(0, inv, torch.ones_like(keys))
    pairs = torch.unique(torch.stack([inv, keys], 1), dim=0)
    distinct = torch.zeros(n, dtype=torch.long, device=keys.device).index_add_(
        0, pairs[:, 0], torch.ones_like(pairs[:, 0]))
    disp = torch.where(size > 1, (distinct - 1).float() / (size - 1).clamp(min=1).float(),
                       torch.zeros(n, device=keys.device))
    return disp[inv]


def curriculum_weight(difficulty: Tensor, dispersion: Tensor, lam: float = 4.0, gamma: float = 0.5) -> Tensor:
    """``w = λ · d(1 − d) · dπ^γ`` (elementwise; ``dπ^0 = 1``, so γ = 0 is the difficulty-only 4d(1 − d))."""
    d = difficulty.float()
    return lam * d * (1 - d) * torch.pow(dispersion.float(), gamma)


def care_bonus(acc: Tensor, confidence: Tensor, group_ids: Tensor, coef: float = 0.5, conf_cap: float | None = 0.95,
               margin: float | None = 0.01, acc_floor: float = 0.1) -> Tensor:
    """GRPO-CARE's consistency bonus per row [N] (added to the reward): ``coef · acc_i`` for rollouts that are
    accurate (``acc > acc_floor`` and ``acc ≥`` the group mean) and whose reference confidence (capped at
    ``conf_cap``) is at least the mean confidence of the group's accurate rollouts minus ``margin``
    (``None``: no margin). A group without accurate rollouts gets no bonus."""
    acc = acc.float()
    conf = confidence.float()
    if conf_cap is not None:
        conf = conf.clamp(max=conf_cap)
    inv, n = _groups(group_ids)
    mean_acc = group_difficulty(acc, group_ids)
    accurate = (acc > acc_floor) & (acc >= mean_acc)
    a = accurate.float()
    n_acc = torch.zeros(n, device=acc.device).index_add_(0, inv, a)
    conf_sum = torch.zeros(n, device=acc.device).index_add_(0, inv, conf * a)
    mean_conf = (conf_sum / n_acc.clamp(min=1))[inv]
    confident = conf >= mean_conf - (margin or 0.0)
    return coef * acc * (accurate & confident & (n_acc[inv] > 0)).float()


def answer_confidence(logp: Tensor, answer_mask: Tensor) -> Tensor:
    """``exp(mean log π over the answer tokens)`` per row [N] (CARE's p̄; a row without answer tokens gets
    exp(0) = 1, as the reference code's ``sum / (count + 1e-6)`` does)."""
    m = answer_mask.float()
    return torch.exp((logp.float() * m).sum(-1) / (m.sum(-1) + 1e-6))


@torch.no_grad()
def ema_update_(ema: list[Tensor], params: list[Tensor], decay: float) -> None:
    """In place: ``ema ← decay · ema + (1 − decay) · params``."""
    for e, p in zip(ema, params):
        e.mul_(decay).add_(p.detach().to(e.dtype), alpha=1 - decay)
