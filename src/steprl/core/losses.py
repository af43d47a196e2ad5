"""Per-token log-probs, entropy, KL estimators, the PPO clipped surrogate and loss aggregation.

Log-prob tensors are ``[N, T]``; logits are ``[N, T, V]``. Losses are returned per token and reduced by
:func:`aggregate_loss`, which is the only place that divides by a token or sequence count.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .masks import masked_mean, masked_sum

__all__ = [
    "logprobs_from_logits",
    "entropy_from_logits",
    "kl_penalty",
    "ppo_clip_loss",
    "value_clip_loss",
    "aggregate_loss",
    "KL_KINDS",
    "AGG_MODES",
]

KL_KINDS = ("k1", "k2", "k3", "abs", "k3+")
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3", "low_var_kl+": "k3+"}
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _chunked(fn, logits: Tensor, rows: int | None) -> Tensor:
    """``fn`` over the last dim of ``logits[..., T, V]``, at most ~``rows`` token rows at a time.

    Chunks are views along the T dimension (no copy of a non-contiguous ``logits[:, :-1]`` slice), so
    the temporaries ``fn`` makes are bounded by the chunk size; ``rows=None`` means one chunk.
    """
    if rows is None or logits.dim() < 2:
        return fn(logits)
    lead = max(1, logits[..., 0, 0].numel())  # rows per unit of T
    step = max(1, rows // lead)
    if step >= logits.shape[-2]:
        return fn(logits)
    return torch.cat([fn(c) for c in logits.split(step, dim=-2)], dim=-1)


def logprobs_from_logits(logits: Tensor, labels: Tensor, chunk_size: int | None = None) -> Tensor:
    """``log π(y_t) = z_{t, y_t} - logsumexp_v z_{t, v}`` for ``logits[N,T,V]``, ``labels[N,T]`` -> ``[N,T]``.

    Uses ``logsumexp`` + ``gather`` (no full ``log_softmax`` copy). Half-precision logits are upcast
    to float32 in chunks of about ``chunk_size`` token rows (default 1024); float32/64 logits are done in
    one go unless ``chunk_size`` is given. Output is float32 (float64 for float64 logits).
    """
    low = logits.dtype in _LOW_PRECISION
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    lse = _chunked(lambda c: torch.logsumexp(c.float() if low else c, dim=-1), logits,
                   chunk_size or (1024 if low else None))
    return (picked.float() if low else picked) - lse


def entropy_from_logits(logits: Tensor, chunk_size: int | None = 1024) -> Tensor:
    """Entropy of ``softmax(z)`` per position: ``H = logsumexp(z) - Σ_v softmax(z)_v z_v`` -> ``[N,T]``.

    Computed in float32 (or float64) in chunks of about ``chunk_size`` token rows (``None``: one chunk).
    """
    low = logits.dtype in _LOW_PRECISION

    def h(c: Tensor) -> Tensor:
        c = c.float() if low else c
        return torch.logsumexp(c, dim=-1) - (torch.softmax(c, dim=-1) * c).sum(-1)

    return _chunked(h, logits, chunk_size)


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3", clamp: bool = True) -> Tensor:
    """Per-token KL(π‖π_ref) estimate from sampled-token log-probs; ``δ = ref_logp - logp``.

    * ``k1``: ``-δ = logp - ref_logp``
    * ``k2``: ``½ δ²``
    * ``k3``: ``exp(δ) - δ - 1``; with ``clamp`` (verl's low_var_kl) δ is clamped to [-20, 20] and the result to
      [-10, 10], so a token far below the reference gets no pull-back; ``clamp=False`` is the plain estimator
      (OREAL's reference code)
    * ``abs``: ``|δ|``
    * ``k3+``: value of ``k3``, gradient of ``k2`` (straight-through)

    verl's names ``kl``, ``mse``, ``low_var_kl`` are accepted as aliases of k1, k2, k3.
    """
    kind = _KL_ALIASES.get(kind, kind)
    if kind not in KL_KINDS:
        raise ValueError(f"kl kind must be one of {KL_KINDS} (aliases {tuple(_KL_ALIASES)}), got {kind!r}")
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    k2 = 0.5 * diff**2
    if kind == "k2":
        return k2
    d = (-diff).clamp(-20.0, 20.0) if clamp else -diff
    k3 = torch.exp(d) - d - 1.0
    if clamp:
        k3 = k3.clamp(-10.0, 10.0)
    if kind == "k3":
        return k3
    return k2 + (k3 - k2).detach()


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate per token -> ``(loss[N,T], clipped[N,T] bool)``.

    ``ρ = exp(logp - old_logp)`` (log-ratio clamped to ±20), ``pg1 = -A ρ``,
    ``pg2 = -A clip(ρ, 1 - eps_low, 1 + eps_high)`` (``eps_high`` defaults to ``eps_low``),
    ``loss = max(pg1, pg2)``; ``clipped = pg2 > pg1``. Dual clip (``c = dual_clip > 1``, only where
    ``A < 0``): ``loss = min(loss, -A c)``, also counted as clipped where it bites (``-A c < max(pg1, pg2)``).
    """
    if eps_high is None:
        eps_high = eps_low
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip}")
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(pg1, pg2)
    clipped = pg2 > pg1
    if dual_clip is not None:
        pg3 = -advantages * dual_clip
        dual = (advantages < 0) & (pg3 < loss)
        loss = torch.where(dual, pg3, loss)
        clipped = clipped | dual
    return loss, clipped


def value_clip_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip_range: float | None = 0.5) -> Tensor:
    """Clipped value loss per token: ``½ max((V - R)², (V_old + clip(V - V_old, ±c) - R)²)``;
    plain ``½ (V - R)²`` when ``clip_range`` is None."""
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * torch.maximum(unclipped, (v_clip - returns) ** 2)


def _div(num: Tensor, den: float | Tensor) -> Tensor:
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(num.dtype).tiny), torch.zeros_like(num))


def aggregate_loss(
    loss: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    norm_len: float | None = None,
) -> Tensor:
    """Reduce a per-token loss ``ℓ[N,T]`` to a scalar (``m`` = mask).

    * ``token-mean``: ``Σ_{i,t} ℓ m / num_tokens``
    * ``seq-mean-token-mean``: ``Σ_i (Σ_t ℓ m / |o_i|) / num_seqs`` (rows with ``|o_i| = 0`` add 0)
    * ``seq-mean-token-sum``: ``Σ_{i,t} ℓ m / num_seqs``
    * ``seq-mean-token-sum-norm`` (Dr.GRPO): ``Σ_{i,t} ℓ m / (num_seqs · norm_len)``, ``norm_len`` default T

    ``num_tokens`` / ``num_seqs`` are the *global* counts of the optimiser minibatch (all micro-batches
    and ranks); they default to the local ``Σ m`` / ``N``. With global counts, the sum over micro-batches
    equals the value on the whole minibatch. For ``seq-mean-token-sum-norm`` pass the same ``norm_len``
    (e.g. the max response length) to every micro-batch if their padded T differ. A zero count gives 0.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"loss aggregation mode must be one of {AGG_MODES}, got {mode!r}")
    if mode == "token-mean":
        return _div(masked_sum(loss, mask), mask.sum() if num_tokens is None else num_tokens)
    seqs = loss.shape[0] if num_seqs is None else num_seqs
    if mode == "seq-mean-token-mean":
        return _div(masked_mean(loss, mask, dim=-1).sum(), seqs)
    total = masked_sum(loss, mask)
    if mode == "seq-mean-token-sum":
        return _div(total, seqs)
    length = loss.shape[-1] if norm_len is None else norm_len
    return _div(total, torch.as_tensor(seqs, dtype=loss.dtype, device=loss.device) * length)
