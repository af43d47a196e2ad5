"""The step's metrics channel (steprl.algos.metrics.StepMetrics) over 2 CPU ranks (gloo): means are weighted
over every write of every rank, counts are summed over ranks, and a key only one rank wrote is that rank's
value (the other joins with weight 0), the same dict on both ranks."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steprl.algos.metrics import StepMetrics

pytestmark = pytest.mark.distributed


def _writes(m: StepMetrics, rank: int) -> None:
    if rank == 0:
        m.write({"train/acc": 0.25, "filter/dropped": 2.0})   # filter/dropped is a count (SUM_METRICS)
        m.mean("w", 1.0, weight=3.0)
        m.mean("only0", 5.0)
        m.add("n", 1.0)
        m.add("n", 1.0)
    else:
        m.write({"train/acc": 0.75, "filter/dropped": 3.0})
        m.mean("w", 3.0, weight=1.0)
        m.add("n", 4.0)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        m = StepMetrics()
        _writes(m, rank)
        torch.save({"local": m.peek(), "global": m.compute()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, str(out)), nprocs=2, join=True, start_method="fork")
    return {r: torch.load(out / f"rank{r}.pt") for r in (0, 1)}


def test_two_ranks_reduce_means_and_counts(two_ranks):
    # by hand: acc (0.25 + 0.75) / 2; w (1·3 + 3·1) / (3 + 1); dropped 2 + 3; n (1 + 1) + 4; only0: rank 0's
    want = {"train/acc": 0.5, "w": 1.5, "filter/dropped": 5.0, "n": 6.0, "only0": 5.0}
    assert two_ranks[0]["global"] == two_ranks[1]["global"] == want
    assert two_ranks[0]["local"]["train/acc"] == 0.25 and two_ranks[1]["local"]["n"] == 4.0


def test_one_process_is_the_local_values_and_kinds_do_not_mix():
    m = StepMetrics()
    _writes(m, 0)
    assert m.compute() == {"train/acc": 0.25, "filter/dropped": 2.0, "w": 1.0, "only0": 5.0, "n": 2.0}
    with pytest.raises(TypeError, match="'n'"):
        m.mean("n", 1.0)
    m.reset()
    assert m.compute() == {}
