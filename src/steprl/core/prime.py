"""PRIME (Cui et al., 2025): implicit process rewards, the PRM's losses, RLOO per reward source, PRM accuracy.

Notation (spec §1): ``q[i,t] = log π_φ(y_t|y_<t) - log π_ref(y_t|y_<t)`` on the valid response tokens of row
``i`` (``mask`` [N, T]); ``outcome`` [N] is the verifier score r_o in [0, 1]; ``group_ids`` [N] says which
prompt a row answers (groups need not be contiguous).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .advantages import _group_stats, discounted_returns, outcome_to_token_rewards, rloo_advantage
from .masks import masked_whiten

__all__ = [
    "PRIME_GRANULARITIES",
    "PRIME_FORMS",
    "implicit_process_rewards",
    "prime_batch_norm",
    "prm_ce_loss",
    "prm_dpo_loss",
    "prime_rloo_process",
    "prime_rloo_returns",
    "prime_grpo_returns",
    "prime_reinforce_returns",
    "prm_pairwise_acc",
    "prm_abs_acc",
]

PRIME_GRANULARITIES = ("token", "token_but_last", "whole")
PRIME_FORMS = ("code", "paper")


def _zero_outside(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), x, torch.zeros_like(x))


def implicit_process_rewards(q: Tensor, mask: Tensor, beta: float = 0.05, granularity: str = "token") -> Tensor:
    """Dense rewards ``r_t = β q_t`` from the log-ratio ``q`` [N, T].

    * ``token``: every valid token carries its own reward (PRIME repo).
    * ``token_but_last``: as ``token`` but the last valid token gets none, where the outcome reward sits
      (verl recipe).
    * ``whole``: the whole sequence reward ``β Σ_t q_t`` on the last valid token.
    """
    if granularity not in PRIME_GRANULARITIES:
        raise ValueError(f"granularity must be one of {PRIME_GRANULARITIES}, got {granularity!r}")
    r = _zero_outside(beta * q.float(), mask)
    if granularity == "token":
        return r
    last = outcome_to_token_rewards(torch.ones(r.shape[0], device=r.device), mask).bool()
    if granularity == "token_but_last":
        return torch.where(last, torch.zeros_like(r), r)
    return torch.where(last, r.sum(-1, keepdim=True).expand_as(r), torch.zeros_like(r))


def prime_batch_norm(scores: Tensor, mask: Tensor | None = None, eps: float = 1e-6, reduce=None) -> Tensor:
    """``prime_norm=batch_norm``: ``scores / (max_{i,t} |Σ_{s>=t} scores[i,s]| + eps)`` over the whole batch,
    so the largest absolute return-to-go becomes 1 (any common scale of ``scores``, e.g. β, cancels).
    ``reduce(t, op)`` (optional, e.g. ``steprl.utils.dist.all_reduce``): the max over every rank's batch."""
    s = scores if mask is None else _zero_outside(scores, mask)
    rtg = s.flip(-1).cumsum(-1).flip(-1)
    top = rtg.abs().max()
    if reduce is not None:
        top = reduce(top.reshape(1), "max")[0]
    return s / (top + eps)


def prm_ce_loss(q: Tensor, mask: Tensor, outcome: Tensor, beta: float = 0.05,
                num_seqs: float | None = None) -> Tensor:
    """The implicit PRM's cross-entropy loss ``mean_i BCE(σ(β Σ_t q[i,t]), r_o(y^i))`` (r_o may be a soft
    label). With ``num_seqs`` the sum over rows is divided by it (a micro-batch of a larger mini-batch)."""
    s = beta * _zero_outside(q, mask).sum(-1)
    per = torch.nn.functional.binary_cross_entropy_with_logits(s, outcome.to(s.dtype), reduction="none")
    return per.sum() / (num_seqs if num_seqs is not None else max(1, per.numel()))


def prm_dpo_loss(q: Tensor, mask: Tensor, outcome: Tensor, group_q: Tensor, group_outcome: Tensor,
                 beta: float = 0.05, num_seqs: float | None = None) -> Tensor:
    """verl's detached DPO loss for the implicit PRM.

    ``Q_i = β Σ_t q[i,t]``. ``group_q`` / ``group_outcome`` [N, K] hold, for each row, the (detached,
    pre-update) summed ``q`` and the outcome of every member of its group. The "other" value is
    ``β mean{group_q[i,j] : outcome_j < outcome_i}`` if row i is correct (``outcome_i > 0``), else the mean
    over members with ``outcome_j > outcome_i``; 0 if there are none. Loss ``-log σ((Q_i - other_i) · sign_i)``,
    ``sign_i = +1`` if ``outcome_i > 0`` else ``-1``, averaged over rows (or summed and divided by ``num_seqs``).
    """
    cur = beta * _zero_outside(q, mask).sum(-1)
    o = outcome[:, None].to(group_outcome.dtype)
    pos = (outcome > 0)[:, None]
    chosen = torch.where(pos, group_outcome < o, group_outcome > o).to(cur.dtype)
    n = chosen.sum(-1)
    other = torch.where(n > 0, beta * (group_q.to(cur.dtype) * chosen).sum(-1) / n.clamp_min(1),
                        torch.zeros_like(cur))
    sign = (outcome > 0).to(cur.dtype) * 2 - 1
    per = -torch.nn.functional.logsigmoid((cur - other) * sign)
    return per.sum() / (num_seqs if num_seqs is not None else max(1, per.numel()))


def prime_rloo_process(rewards: Tensor, mask: Tensor, group_ids: Tensor, form: str = "code") -> Tensor:
    """Leave-one-out baseline for the dense process rewards (spec §1.5), per group of K rows.

    ``m_j`` = mean reward of row j over its valid tokens, ``S = Σ_j m_j``.
    * ``paper``: ``r[i,t] - (S - m_i)/(K-1)`` (Eq. 5, baseline = mean of the others' average rewards);
    * ``code``: ``r[i,t]·K/(K-1) - S/(K-1)`` (both reference codes; adds ``(r[i,t] - m_i)/(K-1)``, which sums
      to 0 over a response). Padding is 0; a singleton group gets 0.
    """
    if form not in PRIME_FORMS:
        raise ValueError(f"form must be one of {PRIME_FORMS}, got {form!r}")
    m = mask.bool()
    r = _zero_outside(rewards.float(), m)
    m_i = r.sum(-1) / m.sum(-1).clamp_min(1)
    k, mean, _ = _group_stats(m_i, group_ids)
    S = mean * k
    km1 = (k - 1).clamp_min(1)[:, None]
    if form == "paper":
        out = r - ((S - m_i)[:, None] / km1)
    else:
        out = r * k[:, None] / km1 - S[:, None] / km1
    return torch.where(m & (k[:, None] > 1), out, torch.zeros_like(out))


def prime_rloo_returns(process: Tensor, outcome: Tensor, mask: Tensor, group_ids: Tensor, form: str = "code",
                       gamma_process: float = 1.0, gamma_outcome: float = 1.0, process_coef: float = 1.0,
                       outcome_coef: float = 1.0, whiten: bool = True, reduce=None) -> tuple[Tensor, Tensor]:
    """PRIME's advantage: RLOO per reward source, discounted returns per source, summed; then (reference
    code, ``whiten=True``) whitened over all valid tokens of the batch. Returns ``(advantages, returns)``.

    Outcome source: ``r_o(y^i) - mean_{j≠i} r_o(y^j)`` on the last valid token; process source:
    :func:`prime_rloo_process` (``form`` paper | code). ``*_coef`` weight the sources (verl's
    ``reward_dpo_coef`` / ``reward_gt_coef``; with whitening only their ratio matters). ``reduce``: whiten
    over every data-parallel rank's tokens (see :func:`~steprl.core.masks.masked_whiten`).
    """
    proc = prime_rloo_process(process, mask, group_ids, form)
    out = outcome_to_token_rewards(rloo_advantage(outcome.float(), group_ids), mask)
    returns = (process_coef * discounted_returns(proc, mask, gamma_process)
               + outcome_coef * discounted_returns(out, mask, gamma_outcome))
    adv = masked_whiten(returns, mask, reduce=reduce) if whiten else returns
    return _zero_outside(adv, mask), returns


def prime_grpo_returns(process: Tensor, outcome: Tensor, mask: Tensor, group_ids: Tensor, gamma: float = 1.0,
                       eps: float = 1e-6, whiten: bool = False, reduce=None) -> tuple[Tensor, Tensor]:
    """GRPO with PRIME (paper Eq. 7): with ``a_j = Σ_t r[j,t] / |y^j|`` (average implicit reward of row j),
    ``A[i,t] = Σ_{s>=t} γ^{s-t} (r[i,s] - mean_g a) / (std_g a + eps) + (r_o^i - mean_g r_o)/(std_g r_o + eps)``
    (unbiased group std)."""
    m = mask.bool()
    r = _zero_outside(process.float(), m)
    a = r.sum(-1) / m.sum(-1).clamp_min(1)
    _, mean_a, std_a = _group_stats(a, group_ids)
    proc = _zero_outside((r - mean_a[:, None]) / (std_a[:, None] + eps), m)
    _, mean_o, std_o = _group_stats(outcome.float(), group_ids)
    out = (outcome.float() - mean_o) / (std_o + eps)
    returns = discounted_returns(proc, m, gamma) + _zero_outside(out[:, None].expand_as(r), m)
    return (_zero_outside(masked_whiten(returns, m, reduce=reduce), m) if whiten else returns), returns


def prime_reinforce_returns(process: Tensor, outcome: Tensor, mask: Tensor, gamma: float = 1.0,
                            whiten: bool = False, reduce=None) -> tuple[Tensor, Tensor]:
    """REINFORCE with PRIME (paper Eq. 8): ``A[i,t] = r_o^i + Σ_{s>=t} γ^{s-t} r[i,s]``."""
    m = mask.bool()
    returns = discounted_returns(process, m, gamma) + _zero_outside(outcome.float()[:, None].expand(m.shape), m)
    return (_zero_outside(masked_whiten(returns, m, reduce=reduce), m) if whiten else returns), returns


def prm_pairwise_acc(scores: Tensor, outcome: Tensor, group_ids: Tensor) -> Tensor:
    """``prime/prm_acc`` (verl ``compute_dpo_accuracy``): per group, over the pairs whose outcomes differ,
    the |Δoutcome|-weighted fraction ordered by the summed PRM score ``scores`` [N] like the outcome (0.5
    for a group without such a pair); mean over groups. A tied pair counts one half (the rank statistic's
    usual rule): verl counts a tie as ordered when the row listed first is the worse one, so a fresh PRM (every
    score 0) would score the fraction of its pairs that happen to be listed worse-first instead of chance."""
    accs = []
    for g in torch.unique(group_ids):
        rows = group_ids == g
        s, o = scores[rows].float(), outcome[rows].float()
        ds, do = s[:, None] - s[None, :], o[:, None] - o[None, :]
        upper = torch.triu(torch.ones_like(ds, dtype=torch.bool), diagonal=1)
        ds, do = ds[upper], do[upper]
        w = do.abs()
        right = torch.where(ds == 0, torch.full_like(ds, 0.5), ((ds > 0) == (do > 0)).float())
        accs.append(right.mul(w).sum() / w.sum() if w.sum() > 0
                    else torch.tensor(0.5, device=scores.device))
    return torch.stack(accs).mean() if accs else torch.tensor(0.5)


def prm_abs_acc(scores: Tensor, outcome: Tensor) -> Tensor:
    """``prime/prm_acc_abs`` (verl ``compute_dpo_abs_accuracy``): fraction of rows with
    ``sign(Σ_t q) == sign(2 r_o - 1)``."""
    return (torch.sign(scores.float()) == torch.sign(2 * outcome.float() - 1)).float().mean()
