"""Masked reductions over padded ``[N, T]`` tensors.

Conventions shared by every function here:

* ``mask`` may be bool or float (a float mask acts as per-element weights; 0 means "absent").
* Entries where the mask is 0 never influence the result, even if they hold NaN or inf.
* Empty selections never produce NaN: a mean over nothing is 0, a variance over fewer than two
  elements is 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_sum", "masked_mean", "masked_var", "masked_mean_var", "masked_whiten"]

_Dim = int | tuple[int, ...] | None


def _weights(x: Tensor, mask: Tensor) -> Tensor:
    """The mask as weights in ``x``'s dtype, broadcast to ``x``'s shape."""
    return torch.broadcast_to(mask, x.shape).to(x.dtype)


def _clean(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with masked-out entries replaced by 0 (keeps NaN/inf there out of values and gradients)."""
    return torch.where(_weights(x, mask) != 0, x, torch.zeros_like(x))


def _msum(x: Tensor, mask: Tensor, dim: _Dim, keepdim: bool = False) -> Tensor:
    xm = _clean(x, mask) * _weights(x, mask)
    return xm.sum() if dim is None else xm.sum(dim=dim, keepdim=keepdim)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(num.dtype).tiny), torch.zeros_like(num))


def masked_sum(x: Tensor, mask: Tensor, dim: _Dim = None) -> Tensor:
    """``Σ x·m`` over ``dim`` (all dims when ``None``); masked-out entries are ignored even if NaN."""
    return _msum(x, mask, dim)


def masked_mean(x: Tensor, mask: Tensor, dim: _Dim = None) -> Tensor:
    """``Σ x·m / Σ m`` over ``dim``; 0 where ``Σ m == 0`` (never NaN)."""
    return _safe_div(_msum(x, mask, dim), _msum(torch.ones_like(x), mask, dim))


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, dim: _Dim = None) -> Tensor:
    """Variance of the masked entries: ``Σ m (x - μ)² / (Σ m - 1)`` (unbiased) or ``/ Σ m``.

    ``μ = masked_mean(x, mask)``. Returns 0 when fewer than two entries (unbiased) or none (biased)
    are selected, instead of raising or returning NaN like ``torch.var``.
    """
    x = _clean(x, mask)
    count = _msum(torch.ones_like(x), mask, dim, keepdim=True)
    mean = _safe_div(_msum(x, mask, dim, keepdim=True), count)
    sq = _msum((x - mean) ** 2, mask, dim)
    count = _msum(torch.ones_like(x), mask, dim)
    return _safe_div(sq, count - 1 if unbiased else count)


def masked_mean_var(x: Tensor, mask: Tensor, unbiased: bool = True, reduce=None) -> tuple[Tensor, Tensor]:
    """Mean and variance of all masked entries (scalars), as :func:`masked_mean` / :func:`masked_var`.

    ``reduce(t, op)`` (optional) sums a 1-D float tensor over data-parallel ranks (e.g.
    ``steprl.utils.dist.all_reduce``): the statistics are then those of the masked entries of every rank's
    batch together, from two reductions, ``[Σ x·m, Σ m]`` and then ``Σ m (x - μ)²`` (the same two-pass
    formula as one process). Every rank must call it (a collective). ``None``: this batch only.
    """
    if reduce is None:
        return masked_mean(x, mask), masked_var(x, mask, unbiased=unbiased)
    x = _clean(x, mask)
    tot = reduce(torch.stack([_msum(x, mask, None), _msum(torch.ones_like(x), mask, None)]), "sum")
    mean, count = _safe_div(tot[0], tot[1]), tot[1]
    sq = reduce(_msum((x - mean) ** 2, mask, None).reshape(1), "sum")[0]
    return mean, _safe_div(sq, count - 1 if unbiased else count)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce=None) -> Tensor:
    """``(x - μ) / sqrt(σ² + eps)`` with μ, σ² (unbiased) over all masked entries of the batch.

    With ``shift_mean=False`` the mean is added back: ``(x - μ)/sqrt(σ² + eps) + μ`` (verl /
    OpenRLHF behaviour). Masked-out positions are returned as 0. ``reduce``: see :func:`masked_mean_var`
    (μ, σ² over the global batch of all data-parallel ranks).
    """
    x = _clean(x, mask)
    mean, var = masked_mean_var(x, mask, unbiased=True, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(_weights(x, mask) != 0, out, torch.zeros_like(out))
