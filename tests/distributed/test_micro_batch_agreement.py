"""Token-budget micro-batches under 2 CPU ranks (gloo): every rank runs the same number of micro-batches.

``steprl.models.packing.agreed_chunks``: the ranks agree on the largest local count (all-reduce MAX); a rank
cuts its rows into that many with the smallest largest one (within the budget) and, out of rows, pads with
zero-weight passes (``None``). The counts and cuts below are worked out by hand in the comments.
"""
from __future__ import annotations

import pytest
import torch

from steprl.models.packing import agreed_chunks, micro_batches
from tests.distributed.gloo import two_ranks as run_two_ranks

pytestmark = pytest.mark.distributed

CASES = {  # name -> (rank 0's row tokens, rank 1's, budget)
    # rank 0: 3+4 | 2 | 6+1 (3 micro-batches, already as even as 3 can be: a cap of 6 needs 4); rank 1: 2+2+2 | 2
    # (2) -> 3 micro-batches with the smallest largest one: a cap of 4 cuts 2+2 | 2+2, the first is split
    "split": ([3, 4, 2, 6, 1], [2, 2, 2, 2], 7),
    # rank 0: 9 | 9 | 9 (each over the budget, alone); rank 1: one row, nothing to split -> 2 zero-weight passes
    "pad": ([9, 9, 9], [1], 5),
    # rank 0: 5+1 | 1+1+1+1 (2), evened out to 5 | 1+1+1+1+1; rank 1: 3+3 (1) -> 3 | 3
    "even": ([5, 1, 1, 1, 1, 1], [3, 3], 6),
}
EXPECTED = {
    "split": ([(0, 2), (2, 3), (3, 5)], [(0, 1), (1, 2), (2, 4)]),
    "pad": ([(0, 1), (1, 2), (2, 3)], [(0, 1), None, None]),
    "even": ([(0, 1), (1, 6)], [(0, 1), (1, 2)]),
}


def _on_rank(rank: int) -> dict:
    out = {name: agreed_chunks(case[rank], case[2]) for name, case in CASES.items()}
    # micro_batches on a shuffled minibatch: rank 1 holds rows 6 and 2 of its rollouts (tokens 4 and 1)
    idx = torch.tensor([4, 0, 2, 1, 3]) if rank == 0 else torch.tensor([6, 2])
    tokens = torch.tensor([3, 6, 1, 2, 4, 0, 4]) if rank == 0 else torch.tensor([0, 0, 1, 0, 0, 0, 4])
    out["micro_batches"] = [m.tolist() for m in micro_batches(idx, tokens, rows=2, token_budget=7)]
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_two_ranks(_on_rank, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("name", list(CASES))
def test_ranks_agree_on_the_number_of_micro_batches(name, two_ranks):
    got = (two_ranks[0][name], two_ranks[1][name])
    assert got == EXPECTED[name]
    assert len(got[0]) == len(got[1])
    budget = CASES[name][2]
    for r in (0, 1):  # every real micro-batch keeps the budget (or is one row), and the rows are all there once
        tokens = CASES[name][r]
        real = [c for c in got[r] if c is not None]
        assert all(sum(tokens[a:b]) <= budget or b - a == 1 for a, b in real)
        assert [i for a, b in real for i in range(a, b)] == list(range(len(tokens)))


def test_micro_batches_of_the_ranks_by_hand(two_ranks):
    # rank 0: tokens in idx order 4 3 1 6 2 -> 4+3 | 1+6 | 2 (3; a cap of 6 needs 4); rank 1: 4 1 -> 4+1 (1)
    # -> 4 | 1, then one empty micro-batch (a zero-weight pass)
    assert two_ranks[0]["micro_batches"] == [[4, 0], [2, 1], [3]]
    assert two_ranks[1]["micro_batches"] == [[6], [2], []]
