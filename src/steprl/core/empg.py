"""EMPG: Entropy-Modulated Policy Gradients (Wang et al., ByteDance Seed, arXiv 2509.09265).

Sources: the project page's ``compute_empg_advantage`` pseudocode (Eqs. 7, 8, 10, 11, 12) and the ARLArena
restatement (ARLArena appendix A.3.2, Eqs. S20-S23); see docs/algorithms/empg.md. For step ``t`` of trajectory ``i``
with mean token entropy ``H_{i,t}`` (rollout policy, no grad) and trajectory advantage ``A_i``::

    H̃_{i,t}   = (H_{i,t} - min_B H) / (max_B H - min_B H + ε)            min / max over all steps of the batch
    g_{i,t}    = exp(-k H̃_{i,t}) / (mean_B exp(-k H̃) + ε)                 self-normalised: mean_B g = 1
    f_{i,t+1}  = exp(-k' H̃_{i,t+1})   (0 for the last step of a trajectory)
    A_mod      = g_{i,t} · A_i + ζ · f_{i,t+1}
    A_final    = A_mod - mean_B A_mod                                      mean over steps, not tokens

Every step is modulated by *its own* g (a known third-party bug multiplies the whole batch by each step's g
in turn), and the min / max run over step means (the same bug takes them over the token matrix).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["EMPGOut", "EMPG_FINAL_NORMS", "empg_step_advantages", "empg_advantages", "expected_logit_grad_sq_norm"]

EMPG_FINAL_NORMS = ("mean", "mean_std", "none")


class EMPGOut(NamedTuple):
    adv: Tensor      # A_final per step
    g: Tensor        # modulation g(H) per step (batch mean 1)
    bonus: Tensor    # ζ · f(H_{t+1}) added to the step (0 for last steps)
    h_norm: Tensor   # batch min-max normalised step entropy H̃


def _next_index(traj_ids: Tensor, step_idx: Tensor) -> Tensor:
    """For every step, the flat index of the step ``t + 1`` of the same trajectory, or -1 when there is none."""
    t = step_idx.long()
    _, traj = torch.unique(traj_ids, return_inverse=True)
    span = int(t.max()) + 2 if t.numel() else 1
    key = traj * span + t
    order = torch.argsort(key)
    sorted_key = key[order]
    want = key + 1
    pos = torch.searchsorted(sorted_key, want).clamp(max=max(key.numel() - 1, 0))
    hit = sorted_key[pos] == want if key.numel() else torch.zeros_like(want, dtype=torch.bool)
    return torch.where(hit, order[pos], torch.full_like(pos, -1))


def empg_step_advantages(step_entropy: Tensor, traj_adv: Tensor, traj_ids: Tensor, step_idx: Tensor,
                         k: float = 1.0, k_future: float = 1.0, zeta: float = 0.1, eps: float = 1e-8,
                         final_norm: str = "mean") -> EMPGOut:
    """EMPG step advantages over the ``M`` steps of a batch, given flat ``[M]`` tensors.

    ``step_entropy[m]``: mean token entropy ``H`` of step ``m``; ``traj_adv[m]``: the advantage ``A(τ)`` of the
    trajectory the step belongs to; ``traj_ids[m]``: that trajectory's id; ``step_idx[m]``: the step's 0-based
    turn index inside its trajectory (the "next step" is the one with index + 1 in the same trajectory). Works
    for one-sample-per-trajectory and one-sample-per-step layouts alike.

    ``final_norm``: ``mean`` (the paper: ``A_mod - mean_B A_mod``), ``mean_std`` (also divide by the unbiased std
    + ε; an ablation, not the paper) or ``none``.
    """
    if final_norm not in EMPG_FINAL_NORMS:
        raise ValueError(f"empg final_norm must be one of {EMPG_FINAL_NORMS}, got {final_norm!r}")
    H = step_entropy.double()
    A = traj_adv.to(H)
    if H.numel() == 0:
        z = H.new_zeros(0)
        return EMPGOut(z, z, z, z)
    h_norm = (H - H.min()) / (H.max() - H.min() + eps)                       # Eq. 12
    gu = torch.exp(-k * h_norm)
    g = gu / (gu.mean() + eps)                                              # Eq. 10
    f = torch.exp(-k_future * h_norm)                                       # Eq. 11
    nxt = _next_index(traj_ids, step_idx)
    bonus = torch.where(nxt >= 0, zeta * f[nxt.clamp_min(0)], torch.zeros_like(f))
    a_mod = g * A + bonus                                                   # Eq. 8
    if final_norm == "none":
        adv = a_mod
    else:
        adv = a_mod - a_mod.mean()                                          # Eq. 7
        if final_norm == "mean_std":
            adv = adv / ((a_mod.std() if a_mod.numel() > 1 else a_mod.new_zeros(())) + eps)
    dt = step_entropy.dtype if step_entropy.is_floating_point() else torch.float32
    return EMPGOut(adv.to(dt), g.to(dt), bonus.to(dt), h_norm.to(dt))


def empg_advantages(step_entropy: Tensor, traj_adv: Tensor, **kw) -> EMPGOut:
    """EMPG on dense per-row steps: ``step_entropy[N, S]`` (NaN where row ``n`` has no step ``s``), one trajectory
    per row with advantage ``traj_adv[N]``. Returns ``[N, S]`` tensors, NaN where there is no step. Keyword
    arguments as in :func:`empg_step_advantages`."""
    valid = ~torch.isnan(step_entropy)
    rows, cols = torch.nonzero(valid, as_tuple=True)
    out = empg_step_advantages(step_entropy[rows, cols], traj_adv[rows], rows, cols, **kw)

    def dense(v: Tensor) -> Tensor:
        full = torch.full_like(step_entropy, float("nan"))
        full[rows, cols] = v.to(full.dtype)
        return full
    return EMPGOut(*(dense(v) for v in out))


def expected_logit_grad_sq_norm(logits: Tensor) -> Tensor:
    """EMPG Proposition 1: ``E_{a~π}‖∇_z log π(a)‖² = 1 - Σ_a π_a² = 1 - exp(-H₂(π))`` for a softmax policy
    with logits ``z`` (last dim); ``H₂`` is the Rényi-2 entropy. Confident steps get small gradients."""
    p = torch.softmax(logits.double() if logits.dtype == torch.float64 else logits.float(), dim=-1)
    return 1.0 - (p * p).sum(-1)
