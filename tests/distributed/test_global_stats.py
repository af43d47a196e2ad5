"""Batch statistics are global under data parallelism: 2 CPU ranks (gloo), each holding half of a batch,
whiten (and batch-normalise) exactly as one process does on the whole batch.

The expected values are the one-process functions applied to the concatenated batch (computed, not
typed in); the ranks hold different numbers of masked tokens, so a per-rank mean / variance differs from
the global one (checked too: the test fails if the reduction is dropped).
"""
from __future__ import annotations

import pytest
import torch

from steprl import core
from steprl.algos.advantage import GAE, AdvantageInputs, GroupAdvantage, ReinforcePP
from steprl.algos.advantage import PrimeAdvantage
from steprl.utils import dist as D
from tests.distributed.gloo import two_ranks as run_two_ranks
from tests.helpers import assert_close_fp32

pytestmark = pytest.mark.distributed


def _batch():
    """A global batch of 8 rows (4 groups of 2, a group on one rank: rank r holds rows 4r..4r+3) with
    ragged masks (rank 0 holds 12 masked tokens, rank 1 holds 17)."""
    g = torch.Generator().manual_seed(0)
    N, T = 8, 5
    x = torch.randn(N, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 2, 4, 5, 3, 5, 4])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    scores = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0.25], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    values = torch.randn(N, T, generator=g, dtype=torch.float64) * mask
    return x, mask, scores, groups, values


def _estimators():
    """name -> fn(x, mask, scores, groups, values, reduce) giving an advantage tensor."""
    def inputs(x, m, s, gid, v, red):
        return AdvantageInputs(s, x * m, m, gid, v, red)
    return {
        "masked_whiten": lambda x, m, s, gid, v, red: core.masked_whiten(x, m, reduce=red),
        "masked_whiten_keep_mean": lambda x, m, s, gid, v, red: core.masked_whiten(x, m, shift_mean=False,
                                                                                  reduce=red),
        "reinforce_pp": lambda *a: ReinforcePP()(inputs(*a))[0],
        "reinforce_pp_baseline": lambda *a: ReinforcePP(baseline=True)(inputs(*a))[0],
        "gae": lambda *a: GAE(lam=0.9)(inputs(*a))[0],
        "grpo_batch_std": lambda *a: GroupAdvantage(std_scale="batch")(inputs(*a))[0],
        "prime_rloo": lambda *a: PrimeAdvantage()(inputs(*a))[0],
        "prime_grpo": lambda *a: PrimeAdvantage(estimator="grpo", whiten=True)(inputs(*a))[0],
        "prime_batch_norm": lambda x, m, s, gid, v, red: core.prime_batch_norm(x, m, reduce=red),
    }


def _on_rank(rank: int) -> dict:
    x, m, s, gid, v = (t[4 * rank:4 * rank + 4] for t in _batch())
    return {name: fn(x, m, s, gid, v, D.all_reduce) for name, fn in _estimators().items()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_two_ranks(_on_rank, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("name", list(_estimators()))
def test_two_ranks_equal_one_process_on_the_whole_batch(name, two_ranks):
    fn = _estimators()[name]
    x, m, s, gid, v = _batch()
    whole = fn(x, m, s, gid, v, None)
    got = torch.cat([two_ranks[0][name], two_ranks[1][name]])
    if got.dtype == torch.float32:  # a path that computes in fp32: sums over the batch's 40 entries (mean, var)
        assert_close_fp32(got, whole, terms=2 * x.numel())
    else:  # float64 paths: the float64 defaults (rtol = atol = 1e-7)
        torch.testing.assert_close(got, whole)
    # a per-rank statistic differs: the test would catch a missing reduction
    local = torch.cat([fn(*(t[4 * r:4 * r + 4] for t in (x, m, s, gid, v)), None) for r in (0, 1)])
    assert not torch.allclose(local, whole, atol=1e-6), name


def test_one_process_reduce_identity_is_bit_identical():
    """One process: passing an identity reduction gives the same numbers as no reduction (the engine passes
    None there, which runs the old code path unchanged)."""
    x, m, *_ = _batch()
    ident = lambda t, op="sum": t  # noqa: E731
    torch.testing.assert_close(core.masked_whiten(x, m, reduce=ident), core.masked_whiten(x, m),
                               rtol=1e-12, atol=1e-14)
    mean, var = core.masked_mean_var(x, m, reduce=ident)
    torch.testing.assert_close(mean, core.masked_mean(x, m))
    torch.testing.assert_close(var, core.masked_var(x, m))
