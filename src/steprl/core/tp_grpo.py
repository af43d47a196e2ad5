"""TP-GRPO (thought-level process rewards, ability-adaptive scale): pure math of spec §2.4-§2.5.

Labels per step (``bad[N, S]``): in a *correct* solution a step is C (0) or I (1, an error later fixed); in an
*incorrect* solution U (0, unmatched / exploratory) or M (1, matched to the wrong answer). NaN marks steps a row
does not have. Contiguous steps with the same label are merged into *thoughts* (labels then alternate).

Rewards (reconstruction of the paper's Eq. 3 so that its Propositions 1-2 hold), on the last token of each
thought, with ``r̂`` the group-normalised outcome and ``r_c = α · acc_G``:

    correct,   non-final thought:  +r_c (C)   -r_c (I)
    incorrect, non-final thought:   r̂  (M)   -r̂  (U)
    final thought (the answer):     0, and the outcome r̂ on the last response token
    Â_{i,t} = Σ_{rewards at positions ≥ t}                                  (``tp_grpo_token_rewards`` + returns)

which telescopes to the per-thought table (``tp_grpo_direct_advantages``):

    correct:   C -> r̂        I -> r̂ - r_c        incorrect:   M -> r̂        U -> 0

``literal_final=True`` is the literal reading of the secondary note (the final thought rewarded like any other,
+r_c / r̂); the propositions then fail (tokens of correct thoughts get r̂ + r_c).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .advantages import grpo_advantage, group_mean_std, outcome_to_token_rewards
from .steps import place_on_step_ends

__all__ = [
    "merge_runs",
    "tp_grpo_outcome",
    "thought_ids_from_steps",
    "tp_grpo_thought_rewards",
    "tp_grpo_token_rewards",
    "tp_grpo_direct_advantages",
]


def merge_runs(labels: Sequence) -> list[tuple[object, int]]:
    """Run-length merge: ``['C','C','I','I','C'] -> [('C',2), ('I',2), ('C',1)]``."""
    out: list[list] = []
    for lab in labels:
        if out and out[-1][0] == lab:
            out[-1][1] += 1
        else:
            out.append([lab, 1])
    return [(a, b) for a, b in out]


def tp_grpo_outcome(correct: Tensor, group_ids: Tensor, alpha: float = 1.0, adaptive: bool = True,
                    eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """``(r̂[N], r_c[N])``: ``r^o = ±1`` normalised in its group, ``r̂ = (r^o - mean_g) / (std_g + eps)`` (unbiased
    std, TRL's ε = 1e-4); ``r_c = α · acc_G`` (``adaptive``) or the static ``α`` (the paper's ablation)."""
    c = correct.float()
    rhat = grpo_advantage(2.0 * c - 1.0, group_ids, "group", eps)
    acc = group_mean_std(c, group_ids)[0]
    r_c = alpha * acc if adaptive else torch.full_like(acc, float(alpha))
    return rhat, r_c


def thought_ids_from_steps(step_ids: Tensor, bad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merge contiguous same-label steps into thoughts.

    ``step_ids[N, T]`` (-1 outside steps), ``bad[N, S]`` (0/1, NaN for steps a row does not have; a NaN step
    inside a row takes the label of the step before it). Returns ``(thought_ids[N, T]`` (-1 where the step id is
    -1), ``thought_bad[N, K]`` (NaN padded), ``num_thoughts[N])``.
    """
    n, s = bad.shape
    valid = ~torch.isnan(bad)
    lab = torch.where(valid, bad, torch.zeros_like(bad))
    # forward-fill missing labels so a NaN hole does not open a thought of its own
    for j in range(1, s):
        lab[:, j] = torch.where(valid[:, j], lab[:, j], lab[:, j - 1])
    change = torch.zeros_like(lab, dtype=torch.long)
    if s > 1:
        change[:, 1:] = (lab[:, 1:] != lab[:, :-1]).long()
    tid_of_step = change.cumsum(-1)  # [N, S]
    last_valid = torch.where(valid, torch.arange(s).expand(n, s), torch.full((n, s), -1)).amax(-1)
    num = torch.where(last_valid >= 0, tid_of_step.gather(1, last_valid.clamp_min(0)[:, None])[:, 0] + 1,
                      torch.zeros_like(last_valid))
    k = int(num.max()) if n else 0
    thought_bad = torch.full((n, max(k, 0)), float("nan"), dtype=bad.dtype)
    for i in range(n):
        for j in range(int(last_valid[i]) + 1):
            thought_bad[i, tid_of_step[i, j]] = lab[i, j]
    inside = (step_ids >= 0) & (step_ids < s)
    tids = tid_of_step.gather(1, step_ids.clamp(0, max(s - 1, 0))) if s else torch.zeros_like(step_ids)
    return torch.where(inside, tids, torch.full_like(step_ids, -1)), thought_bad, num


def tp_grpo_thought_rewards(thought_bad: Tensor, num_thoughts: Tensor, correct: Tensor, rhat: Tensor,
                            r_c: Tensor, literal_final: bool = False) -> Tensor:
    """Per-thought process rewards ``[N, K]`` (NaN past a row's thoughts), the table in the module docstring."""
    n, k = thought_bad.shape
    c = correct.bool()[:, None]
    bad = thought_bad == 1
    r = torch.where(c, torch.where(bad, -r_c[:, None], r_c[:, None]),
                    torch.where(bad, rhat[:, None], -rhat[:, None])).to(thought_bad.dtype)
    pos = torch.arange(k).expand(n, k)
    final = pos == (num_thoughts[:, None] - 1)
    if not literal_final:
        r = torch.where(final, torch.zeros_like(r), r)
    return torch.where(pos < num_thoughts[:, None], r, torch.full_like(r, float("nan")))


def tp_grpo_token_rewards(thought_ids: Tensor, thought_rewards: Tensor, rhat: Tensor, mask: Tensor) -> Tensor:
    """Dense ``[N, T]`` rewards: each thought's reward on its last token, plus ``r̂`` on the last masked token.
    ``discounted_returns(·, mask)`` (γ = 1) of this is the token advantage of the paper's Eq. 3."""
    placed = place_on_step_ends(torch.nan_to_num(thought_rewards, nan=0.0), thought_ids)
    return placed * mask.to(placed.dtype) + outcome_to_token_rewards(rhat, mask)


def tp_grpo_direct_advantages(thought_ids: Tensor, thought_bad: Tensor, correct: Tensor, rhat: Tensor,
                              r_c: Tensor, mask: Tensor) -> Tensor:
    """The telescoped form (Props. 1-2): per-thought constants, ``C: r̂, I: r̂ - r_c, M: r̂, U: 0``.

    A token outside every thought (-1) takes the value of the next thought in its row, or ``r̂`` after the last
    one (what the cumulative form gives it). Masked-out positions are 0.
    """
    n, t = thought_ids.shape
    k = thought_bad.shape[1]
    c = correct.bool()[:, None]
    bad = thought_bad == 1
    val = torch.where(c, torch.where(bad, rhat[:, None] - r_c[:, None], rhat[:, None]),
                      torch.where(bad, rhat[:, None], torch.zeros_like(thought_bad)))
    val = torch.cat([val, rhat[:, None].to(val.dtype)], 1)  # column k: "after the last thought"
    big = torch.full_like(thought_ids, k)
    ids = torch.where(thought_ids >= 0, thought_ids, big)
    nxt = ids.flip(-1).cummin(-1).values.flip(-1)  # next thought id at or after each position
    out = val.gather(1, nxt.clamp(0, k))
    return torch.where(mask.bool(), out, torch.zeros_like(out))
