"""Learning-rate schedules as pure functions of the optimiser step (multipliers of the peak learning rate)."""
from __future__ import annotations

import math

__all__ = ["warmup_steps", "warmup_cosine"]


def warmup_steps(total: int, ratio: float) -> int:
    """Warm-up steps of a run of ``total`` optimiser steps: ``ceil(ratio * total)`` (the HF Trainer's rule)."""
    return math.ceil(ratio * total) if ratio > 0 else 0


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then cosine decay to 0 at ``total``:
    ``step / warmup`` for ``step < warmup``, else ``½ (1 + cos(π (step - warmup) / (total - warmup)))``
    (``get_cosine_schedule_with_warmup`` of transformers, the schedule of the fine-tuning library PROPA used)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
