"""Group filters: which groups of G samples carry a learning signal (DAPO dynamic sampling, PRIME's band)."""
from __future__ import annotations

import torch
from torch import Tensor

from .advantages import group_mean_std


def group_filter(outcome: Tensor, correct: Tensor, group_ids: Tensor, zero_variance: bool = False,
                 acc_band: tuple[float, float] | None = None, tol: float = 1e-9,
                 truncated: Tensor | None = None) -> Tensor:
    """Bool ``[N]``: True for the rows of groups that pass every filter that is on.

    * ``zero_variance``: drop a group whose outcome scores are all equal (its group std is 0, so every
      group-relative advantage is 0).
    * ``acc_band = (lo, hi)``: keep a group whose mean outcome ``mean(outcome)`` lies in ``[lo, hi]`` (PRIME:
      ``[0.2, 0.8]``; the reference filters on the group's mean score, which for 0/1 rewards is its accuracy and
      keeps, e.g., a code group scoring 0.5 on every sample). ``correct`` is not used by the band.
    * ``truncated`` (bool ``[N]``, rows that hit the length limit): drop every group with a truncated row
      (PRIME's truncation filter).
    """
    keep = torch.ones_like(group_ids, dtype=torch.bool)
    if zero_variance:
        keep &= group_mean_std(outcome, group_ids)[1] > tol
    if acc_band is not None:
        lo, hi = acc_band
        mean = group_mean_std(outcome, group_ids)[0]
        keep &= (mean >= lo - tol) & (mean <= hi + tol)
    if truncated is not None:
        bad = group_ids[truncated.to(group_ids.device).bool()]
        keep &= ~torch.isin(group_ids, bad)
    return keep
