"""Where models come from and what dtypes they load in: the lowest layer of ``steprl.models`` (build, LoRA
and vision import it; it imports none of them)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

SHIPPED_PREFIX = "steprl:"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def shipped_model_dir(name: str) -> Path:
    """Directory of a checkpoint shipped inside the package (``steprl:<name>``)."""
    path = Path(str(resources.files("steprl") / "assets" / name))
    if not (path / "config.json").exists():
        shipped = sorted(p.name for p in path.parent.iterdir() if (p / "config.json").exists()) \
            if path.parent.exists() else []
        raise FileNotFoundError(f"no shipped model {name!r} in {path.parent}; shipped: {shipped}")
    return path


def resolve_path(path: str) -> str:
    return str(shipped_model_dir(path[len(SHIPPED_PREFIX):])) if path.startswith(SHIPPED_PREFIX) else path
