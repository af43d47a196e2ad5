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
