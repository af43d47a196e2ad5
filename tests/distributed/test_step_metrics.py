"""The step's metrics channel (steprl.algos.metrics.StepMetrics) over 2 CPU ranks (gloo): means are weighted
over every write of every rank, counts are summed over ranks, and a key only one rank wrote is that rank's
value (the other joins with weight 0), the same dict on both ranks."""
from __future__ import annotations

import pytest

from steprl.algos.metrics import StepMetrics
from tests.distributed.gloo import two_ranks as run_two_ranks

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


def _on_rank(rank: int) -> dict:
    m = StepMetrics()
    _writes(m, rank)
    return {"local": m.peek(), "global": m.compute()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_two_ranks(_on_rank, tmp_path_factory.mktemp("metrics"))


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
