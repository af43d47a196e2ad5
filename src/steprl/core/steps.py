"""Steps (reasoning steps, agent turns) as token groups: scatter step values to tokens and back.

``step_ids[N, T]`` (long) holds, for each token, the index of the step it belongs to, or -1 for tokens
in no step (prompt, padding, tool observations, ...). Step values are ``[N, S]`` with NaN meaning
"no score for this step". Step ids ``>= S`` are treated like -1.
"""
from __future__ import annotations

from bisect import bisect_right

import torch
from torch import Tensor

__all__ = [
    "scatter_step_values",
    "step_last_token_mask",
    "place_on_step_ends",
    "gather_step_values",
    "char_spans_to_step_ids",
    "fill_step_ids",
    "STEP_REDUCTIONS",
]

STEP_REDUCTIONS = ("sum", "mean", "last")


def scatter_step_values(step_values: Tensor, step_ids: Tensor, fill: float = 0.0) -> Tensor:
    """Token-level copy of step values: ``out[n, t] = step_values[n, step_ids[n, t]]``.

    Tokens with ``step_id < 0`` (or ``>= S``), or whose step value is NaN, get ``fill``.
    """
    s = step_values.shape[-1]
    valid = (step_ids >= 0) & (step_ids < s)
    if s == 0:
        return torch.full(step_ids.shape, fill, dtype=step_values.dtype, device=step_values.device)
    vals = step_values.gather(-1, step_ids.clamp(0, s - 1))
    valid = valid & ~torch.isnan(vals)
    return torch.where(valid, vals, torch.full_like(vals, fill))


def _last_positions(step_ids: Tensor, num_steps: int) -> Tensor:
    """``[N, S]`` position of the last token of each step (-1 for a step with no token)."""
    n, t = step_ids.shape
    valid = (step_ids >= 0) & (step_ids < num_steps)
    col = torch.where(valid, step_ids, torch.full_like(step_ids, num_steps))  # dummy column for no-step tokens
    pos = torch.arange(t, device=step_ids.device).expand(n, t)
    last = torch.full((n, num_steps + 1), -1, dtype=torch.long, device=step_ids.device)
    last = last.scatter_reduce(1, col, pos, reduce="amax", include_self=True)
    return last[:, :num_steps]


def step_last_token_mask(step_ids: Tensor) -> Tensor:
    """Bool ``[N, T]``: True on the last token of each step (its last occurrence in the row, so a step
    interrupted by ``-1`` tokens is closed by its final token)."""
    num_steps = int(step_ids.max().item()) + 1 if step_ids.numel() else 0
    if num_steps <= 0:
        return torch.zeros(step_ids.shape, dtype=torch.bool, device=step_ids.device)
    last = _last_positions(step_ids, num_steps)
    pos = torch.arange(step_ids.shape[-1], device=step_ids.device)
    own_last = last.gather(1, step_ids.clamp_min(0))
    return (step_ids >= 0) & (own_last == pos)


def place_on_step_ends(step_values: Tensor, step_ids: Tensor) -> Tensor:
    """``[N, T]`` with each step's value on that step's last token and 0 elsewhere (NaN steps give 0)."""
    vals = scatter_step_values(step_values, step_ids, fill=0.0)
    return torch.where(step_last_token_mask(step_ids), vals, torch.zeros_like(vals))


def gather_step_values(token_values: Tensor, step_ids: Tensor, num_steps: int, reduce: str = "sum") -> Tensor:
    """Reduce token values per step -> ``[N, S]`` with ``S = num_steps``.

    ``sum``: ``Σ_{t∈s} x_t``; ``mean``: ``Σ_{t∈s} x_t / |s|``; ``last``: ``x`` at the step's last token.
    Steps with no token are NaN. Tokens with step id -1 or ``>= num_steps`` are ignored.
    """
    if reduce not in STEP_REDUCTIONS:
        raise ValueError(f"reduce must be one of {STEP_REDUCTIONS}, got {reduce!r}")
    n = token_values.shape[0]
    x = token_values if token_values.is_floating_point() else token_values.float()
    valid = (step_ids >= 0) & (step_ids < num_steps)
    col = torch.where(valid, step_ids, torch.full_like(step_ids, num_steps))
    counts = torch.zeros(n, num_steps + 1, dtype=x.dtype, device=x.device).scatter_add(
        1, col, torch.ones_like(x))[:, :num_steps]
    nan = torch.full_like(counts, float("nan"))
    if reduce == "last":
        last = _last_positions(step_ids, num_steps)
        vals = x.gather(1, last.clamp_min(0))
        return torch.where(last >= 0, vals, nan)
    x = torch.where(valid, x, torch.zeros_like(x))
    sums = torch.zeros(n, num_steps + 1, dtype=x.dtype, device=x.device).scatter_add(1, col, x)[:, :num_steps]
    if reduce == "mean":
        sums = sums / counts.clamp_min(1)
    return torch.where(counts > 0, sums, nan)


def char_spans_to_step_ids(
    token_offsets: list[tuple[int, int]], step_spans: list[tuple[int, int]], length: int
) -> Tensor:
    """Step index of each token from character offsets -> ``LongTensor[length]``.

    ``token_offsets[i] = (start, end)`` are the token's char offsets in the response text and
    ``step_spans[k] = (a, b)`` the half-open char span of step ``k`` (spans should not overlap).
    Rules, in order:

    1. a token with no characters (``end <= start``, e.g. special tokens such as EOS) gets -1;
    2. a token belongs to the step whose span contains its start char (``a <= start < b``);
    3. otherwise, to the first step (by start) whose span overlaps ``[start, end)``: a BPE token such as
       ``"\\n\\nThe"`` whose leading whitespace sits between two steps goes to the *following* step;
    4. otherwise -1: a token of pure whitespace between steps belongs to no step.

    Tokens past ``len(token_offsets)`` get -1; offsets past ``length`` are ignored.
    """
    order = sorted(range(len(step_spans)), key=lambda k: step_spans[k][0])
    starts = [step_spans[k][0] for k in order]
    out = [-1] * length
    for i, (start, end) in enumerate(token_offsets[:length]):
        if end <= start:
            continue
        j = bisect_right(starts, start) - 1  # last step starting at or before the token
        if j >= 0 and start < step_spans[order[j]][1]:
            out[i] = order[j]
            continue
        for k in order[j + 1:]:
            a, b = step_spans[k]
            if a >= end:
                break
            if b > a:
                out[i] = k
                break
    return torch.tensor(out, dtype=torch.long)


def fill_step_ids(step_ids: Tensor, mask: Tensor) -> Tensor:
    """Give every ``mask``-ed token a step: a masked token with ``step_id < 0`` (an EOS token, whitespace between
    steps) joins the nearest step before it in its row, or, before the first step, the first step; a masked row
    with no step at all becomes step 0. Unmasked tokens get -1. Used by step-level advantages so that every
    token that receives gradient receives its step's value."""
    m = mask.bool()
    n, t = step_ids.shape
    has = (step_ids >= 0) & m
    pos = torch.arange(t, device=step_ids.device).expand(n, t)
    prev = torch.where(has, pos, torch.full_like(pos, -1)).cummax(-1).values
    nxt = torch.where(has, pos, torch.full_like(pos, t)).flip(-1).cummin(-1).values.flip(-1)
    src = torch.where(prev >= 0, prev, nxt).clamp(0, max(t - 1, 0))
    filled = step_ids.gather(-1, src) if t else step_ids
    filled = torch.where(has.any(-1, keepdim=True), filled, torch.zeros_like(filled))
    return torch.where(m, torch.where(has, step_ids, filled), torch.full_like(step_ids, -1))
