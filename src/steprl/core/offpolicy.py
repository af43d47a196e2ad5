"""Rollout-engine / trainer mismatch: truncated importance sampling (TIS) and the log-prob gap metric.

A fast inference engine (vLLM) samples with slightly different numerics than the trainer, so its behaviour
policy ``π_engine`` is not exactly the trainer's ``π_old``. Truncated importance sampling (Yao et al., 2025,
"Your efficient RL framework secretly brings you off-policy RL training") re-weights each token's policy
gradient by ``w_t = min(π_old(y_t) / π_engine(y_t), C)``, computed from log-probs, without gradient.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tis_weight", "logprob_diff"]


def tis_weight(old_logp: Tensor, engine_logp: Tensor, cap: float, mask: Tensor | None = None) -> Tensor:
    """``w_t = min(exp(old_logp_t - engine_logp_t), cap)`` per token ``[N, T]`` (no gradient).

    Positions outside ``mask`` get weight 1 (they carry no loss anyway). ``cap`` must be > 0.
    """
    if cap <= 0:
        raise ValueError(f"TIS cap must be > 0, got {cap}")
    with torch.no_grad():
        ratio = torch.exp((old_logp.float() - engine_logp.float()).clamp(max=80.0))
        w = ratio.clamp(max=cap)
        if mask is not None:
            w = torch.where(mask.bool(), w, torch.ones_like(w))
    return w


def logprob_diff(trainer_logp: Tensor, engine_logp: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute gap ``Σ_t m_t |logp_trainer - logp_engine| / Σ_t m_t`` over the masked tokens (0 if none)."""
    m = mask.float()
    return ((trainer_logp.float() - engine_logp.float()).abs() * m).sum() / m.sum().clamp(min=1.0)
