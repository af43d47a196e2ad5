"""OREAL (Lyu et al., 2025): ±1 outcome rewards with a group baseline, one positive + one negative per prompt,
behaviour cloning on positives, policy gradient on negatives, token-level importance weights from a
sequence-level reward model, k3 KL to a frozen reference (spec §2)."""
from __future__ import annotations

import torch
from torch import Tensor

from .advantages import grpo_advantage, rloo_advantage
from .losses import kl_penalty

__all__ = [
    "OREAL_SHAPINGS",
    "oreal_rewards",
    "oreal_shaped_advantage",
    "oreal_pair_select",
    "oreal_importance_weights",
    "oreal_rm_loss",
    "oreal_policy_loss",
]

OREAL_SHAPINGS = ("rloo", "grpo")


def oreal_rewards(correct: Tensor, truncated: Tensor | None = None, signed: bool = True) -> Tensor:
    """``R = +1`` correct, ``-1`` wrong (reference code; ``signed=False``: the paper's 1 / 0). A truncated
    response (no stop word) is wrong whatever it says."""
    ok = correct.float() >= 1.0 - 1e-6
    if truncated is not None:
        ok = ok & ~truncated.to(ok.device).bool()
    neg = -1.0 if signed else 0.0
    return torch.where(ok, torch.ones_like(correct, dtype=torch.float), torch.full_like(correct, neg, dtype=torch.float))


def oreal_shaped_advantage(rewards: Tensor, group_ids: Tensor, shaping: str = "rloo", eps: float = 1e-8) -> Tensor:
    """Reward shaping over the whole group (before pair filtering): ``rloo``
    ``A_i = R_i - (Σ_j R_j - R_i)/(n-1)`` or ``grpo`` ``(R_i - mean R)/(std_unbiased R + eps)``. With ±1 rewards
    and k correct of n: ``A_pos = 2(n-k)/(n-1)``, ``A_neg = -2k/(n-1)``."""
    if shaping not in OREAL_SHAPINGS:
        raise ValueError(f"shaping must be one of {OREAL_SHAPINGS}, got {shaping!r}")
    if shaping == "rloo":
        return rloo_advantage(rewards, group_ids)
    return grpo_advantage(rewards, group_ids, "group", eps)


def oreal_pair_select(rewards: Tensor, group_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Row indices (sorted) keeping, from each group with both outcomes, one random positive (``R > 0``) and
    one random negative; groups that are all right or all wrong vanish."""
    keep = []
    pos_all = rewards > 0
    for g in torch.unique(group_ids).tolist():
        rows = torch.nonzero(group_ids == g).flatten()
        pos, neg = rows[pos_all[rows]], rows[~pos_all[rows]]
        if len(pos) and len(neg):
            pick = lambda r: r[int(torch.randint(len(r), (1,), generator=generator))]  # noqa: E731
            keep += [int(pick(pos.cpu())), int(pick(neg.cpu()))]
    return torch.tensor(sorted(keep), dtype=torch.long)


def oreal_importance_weights(token_logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Token weights from the reward model's logits ``w`` [N, T] (code ``threshold_rescale``, paper Eq. 10):
    prefix mean ``c_t = mean_{s<=t} w_s`` over valid tokens, ``p_t = σ(c_t)``,
    ``w+_t = max(2p_t - 1, 0)``, ``w-_t = max(1 - 2p_t, 0)``. Detached; 0 on padding."""
    m = mask.bool()
    w = torch.where(m, token_logits.detach().float(), torch.zeros_like(token_logits, dtype=torch.float))
    c = w.cumsum(-1) / m.float().cumsum(-1).clamp_min(1)
    p = torch.sigmoid(c)
    w_pos = torch.where(m, (2 * p - 1).clamp(0, 1), torch.zeros_like(p))
    w_neg = torch.where(m, (1 - 2 * p).clamp(0, 1), torch.zeros_like(p))
    return w_pos, w_neg


def oreal_rm_loss(token_logits: Tensor, mask: Tensor, labels: Tensor, num_seqs: float | None = None) -> Tensor:
    """Sequence-level BCE of the token reward model: ``BCE_with_logits(mean_t w_t, label)`` per sequence,
    summed and divided by ``num_seqs`` (default: the rows given). Not a per-token BCE."""
    m = mask.float()
    mean = (token_logits.float() * m).sum(-1) / m.sum(-1).clamp_min(1)
    per = torch.nn.functional.binary_cross_entropy_with_logits(mean, labels.float(), reduction="none")
    return per.sum() / (num_seqs if num_seqs is not None else max(1, per.numel()))


def oreal_policy_loss(logp: Tensor, adv: Tensor, positive: Tensor, mask: Tensor, w_pos: Tensor, w_neg: Tensor,
                      n_pos: float, n_neg: float, n_all: float, ref_logp: Tensor | None = None,
                      eta: float = 0.5, pos_factor: float = 1.0, pos_mult_adv: bool = True,
                      kl_coef: float = 0.01, kl_kind: str = "k3", kl_clamp: bool = False
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """OREAL's objective on a (micro-)batch, with the *global* token counts of positive, negative and all
    trajectories (so micro-batch / rank splits sum to the same value and gradient):

    * positives (BC): ``Σ_t w+_t · (-log π_t) · A_i / N_pos · pos_factor`` (``pos_mult_adv=False``: the
      paper's plain BC without ``A_i``)
    * negatives (PG): ``-Σ_t ρ_t · A_i w-_t / N_neg · η`` with ``ρ_t = exp(logp_t - sg(logp_t))`` (1 in value)
    * KL: ``kl_coef · Σ_t k3_t / N_all`` over all trajectories (``k3 = exp(d) - d - 1``, ``d = ref - logp``)

    ``adv`` [N] or [N, T]; ``positive`` bool [N]. Returns ``(loss, parts)``.
    """
    m = mask.float()
    a = adv if adv.dim() == 2 else adv[:, None].expand_as(logp)
    pos = positive.to(m.device).bool()[:, None].float() * m
    neg = (1 - positive.to(m.device).bool()[:, None].float()) * m
    bc_w = a if pos_mult_adv else torch.ones_like(a)
    l_pos = (w_pos * (-logp) * bc_w * pos).sum() / max(n_pos, 1.0) * pos_factor
    ratio = torch.exp(logp - logp.detach())
    l_neg = -(ratio * a * w_neg * neg).sum() / max(n_neg, 1.0) * eta
    loss = l_pos + l_neg
    parts = {"pos": l_pos.detach(), "neg": l_neg.detach()}
    if ref_logp is not None and kl_coef > 0:
        kl = kl_penalty(logp, ref_logp, kl_kind, kl_clamp)
        l_kl = kl_coef * (kl * m).sum() / max(n_all, 1.0)
        loss = loss + l_kl
        parts["kl"] = l_kl.detach()
    return loss, parts
