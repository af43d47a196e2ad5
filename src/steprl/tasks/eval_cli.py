"""What the per-slice evaluation commands (``python -m steprl.tasks.arith_eval``, ``... search_eval``) share: the
model options, loading, the standard error of an accuracy, and printing / saving the per-slice results."""
from __future__ import annotations

import argparse
import json
import math

import torch


def parser(doc: str, batch_size: int) -> argparse.ArgumentParser:
    """``--model`` | ``--ckpt`` (one of them), ``--seed``, ``--batch-size``, ``--threads``, ``--out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model directory, hub id or steprl:<name>")
    src.add_argument("--ckpt", help="a steprl training checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the per-slice results as JSON here")
    return p


def load(a: argparse.Namespace):
    """``(model, tokenizer)`` from ``--model`` or ``--ckpt``, with ``--threads`` torch threads."""
    from steprl.export import load_model_or_checkpoint

    torch.set_num_threads(a.threads)
    return load_model_or_checkpoint(a.model, a.ckpt)


def se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` problems: sqrt(p (1 - p) / n)."""
    return math.sqrt(p * (1 - p) / n)


def report(res: dict, table: str, out: str | None) -> dict:
    """Print the markdown table; write ``res`` (keys as strings) as JSON to ``out`` when given."""
    print(table)
    if out:
        with open(out, "w") as f:
            json.dump({str(k): v for k, v in res.items()}, f, indent=1)
    return res
