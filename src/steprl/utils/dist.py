"""Small helpers for data-parallel RL: rank/world, global counts and metric reduction across ranks.

Every function is a no-op (or the identity) in a single process, so the engine calls them unconditionally.

Design (see docs/scale.md): all G samples of a prompt live on one rank. Each rank draws its own
distinct prompts (``batch.prompts_per_step`` is global and split evenly), rolls them out and scores them
locally, so group statistics (baselines, filters) never need a collective. What does need one: the loss
normaliser (global token / sequence counts of a minibatch), the decode loop under FSDP (every rank must run
the same number of forwards), the non-finite-gradient decision, and the logged metrics.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

# metrics that are counts over the whole global batch: summed across ranks (everything else is averaged)
SUM_METRICS = frozenset({
    "filter/groups", "filter/dropped", "filter/all_correct", "filter/all_wrong", "reward/errors",
    "reward/timeouts", "train/loss", "perf/tokens_per_s", "train/skipped_steps", "rollout/tokens",
})


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _comm_device(like: torch.device | None = None) -> torch.device:
    """Tensors for collectives live on CUDA under NCCL, on CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: torch.Tensor | list[float], op: str = "sum") -> torch.Tensor:
    """Sum / max / min of a float tensor over ranks (returned on the input's device; identity in one process)."""
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.float64)
    if not is_distributed():
        return t
    device = t.device
    buf = t.detach().to(_comm_device(), dtype=torch.float64).clone()
    dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return buf.to(device, dtype=t.dtype)


def global_counts(loss_mask: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Loss tokens (clamped to >= 1) and real sequences of a minibatch, summed over ranks."""
    n_tok = loss_mask.sum()
    n_seq = int(real.sum())
    if is_distributed():
        tot = all_reduce(torch.stack([n_tok.double().cpu(), torch.tensor(float(n_seq), dtype=torch.float64)]))
        n_tok, n_seq = tot[0].to(loss_mask.device, loss_mask.dtype), int(tot[1])
    return n_tok.clamp(min=1), max(n_seq, 1)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank."""
    return bool(all_reduce([float(flag)], "max")[0] > 0) if is_distributed() else bool(flag)


def all_ranks(flag: bool) -> bool:
    """True when ``flag`` is true on every rank."""
    return bool(all_reduce([float(flag)], "min")[0] > 0) if is_distributed() else bool(flag)


def all_gather_object(obj):
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_metrics(metrics: dict[str, float], sum_keys=SUM_METRICS) -> dict[str, float]:
    """Combine per-rank metric dicts: counts (``sum_keys``) are summed, everything else averaged over the
    ranks that report it (a key only some ranks have, e.g. after a skipped step, is still kept)."""
    if not is_distributed():
        return metrics
    parts = all_gather_object({k: float(v) for k, v in metrics.items()})
    out: dict[str, float] = {}
    for key in sorted({k for p in parts for k in p}):
        vals = [p[key] for p in parts if key in p]
        out[key] = sum(vals) if key in sum_keys else sum(vals) / len(vals)
    return out


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "full_tensor")


def average_gradients(params, bucket_numel: int = 1 << 25) -> None:
    """Average the gradients of a replicated model's parameters over ranks, in place (identity in one process).

    For models trained by an algorithm's own optimiser outside DDP (PRIME's implicit PRM, OREAL's token RM):
    DDP only syncs what goes through Lightning's backward. Parameters sharded by FSDP2 (DTensors) are skipped:
    FSDP2 already reduce-scattered (averaged) their gradients in backward. A parameter without a gradient on
    some ranks gets zeros there; one without a gradient on every rank keeps ``None`` (the optimiser skips it
    as in one process). Gradients are flattened into buckets of ``bucket_numel`` elements per dtype/device.
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad and not _is_dtensor(p)]
    if not params:
        return
    has = all_reduce(torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64), "max")
    params = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = dist.get_world_size()
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for i, g in enumerate(grads):
            bucket.append(g)
            size += g.numel()
            if size >= bucket_numel or i == len(grads) - 1:
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat)
                flat /= world
                offset = 0
                for b in bucket:
                    b.copy_(flat[offset:offset + b.numel()].view_as(b))
                    offset += b.numel()
                bucket, size = [], 0


def clip_grad_norm(params, max_norm: float | None) -> float:
    """``clip_grad_norm_`` over the parameters that have a gradient; returns the total norm as a float (0 when
    none has one). With FSDP2-sharded parameters the norm is of the full gradient (same on every rank)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"))
    if _is_dtensor(norm):
        norm = norm.full_tensor()
    return float(norm)
