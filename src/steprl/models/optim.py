"""Optimisers by name (``optimizer=`` config group, stored as ``optim.name``): AdamW and bitsandbytes' 8-bit ones."""
from __future__ import annotations

import torch

OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.Optimizer:
    """``adamw``: torch AdamW. ``adamw8bit``: bitsandbytes AdamW with 8-bit (block-wise quantised) moments
    (runs on CPU and GPU). ``paged_adamw8bit``: the same with its state in paged (unified) memory (CUDA only)."""
    kw = {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas), "eps": eps}
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name={name!r} is not one of {list(OPTIMIZERS)}")
    try:
        import bitsandbytes as bnb
    except ImportError as e:  # pragma: no cover - bitsandbytes is a dependency
        raise ImportError(f"optim.name={name} needs bitsandbytes: pip install bitsandbytes") from e
    if name == "paged_adamw8bit":
        if not torch.cuda.is_available():
            raise ValueError("optim.name=paged_adamw8bit pages optimiser state through CUDA unified memory and "
                             "needs a GPU; on CPU use optimizer=adamw8bit")
        return bnb.optim.PagedAdamW8bit(params, **kw)
    return bnb.optim.AdamW8bit(params, **kw)
