"""Run a function on 2 CPU ranks (gloo) in forked processes and collect what each rank returns.

Fork, not spawn: the children inherit the imported modules (a spawn re-imports torch and steprl, ~20 s each),
and ``fn`` need not be picklable."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out_dir: str, fn: Callable[[int], Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.save(fn(rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def two_ranks(fn: Callable[[int], Any], out_dir: Path) -> dict[int, Any]:
    """``{rank: fn(rank)}`` with ``fn`` run on each of 2 gloo ranks (its result saved with torch.save)."""
    mp.start_processes(_rank_main, args=(free_port(), str(out_dir), fn), nprocs=2, join=True, start_method="fork")
    return {r: torch.load(Path(out_dir) / f"rank{r}.pt") for r in (0, 1)}


ROOT = Path(__file__).resolve().parents[2]


def run_steps(out: Path, *overrides: str, timeout: int = 420) -> Path:
    """Run ``tests/distributed/run_steps.py`` (a short ``src/train.py`` run; the overrides' hardware config sets
    the ranks) into ``out``; fail with its stderr. Returns the metrics file (``m.json``, and ``m.json.rank<r>``
    per rank)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tests" / "distributed" / "run_steps.py"), str(out / "m.json"), str(out),
           *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / "m.json"
