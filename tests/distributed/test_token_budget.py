"""``batch.micro_batch_tokens`` under 2 CPU ranks (gloo), DDP and FSDP2: one RL step cut by a token budget
gives the loss, gradient norm and parameter update of the same step cut into row micro-batches.

The budget (64 tokens) is chosen so that the ranks' own cuts differ: with this seed rank 0's rows of the second
minibatch hold 32, 34, 30, 34 tokens (32 | 34+30 | 34: 3 micro-batches) and rank 1's 30 each (30+30 | 30+30: 2),
so rank 1 must re-cut its rows into 3 to run as many (``steprl.models.packing.agreed_chunks``); without the
agreement DDP's gradient all-reduce and FSDP2's gathers would pair different micro-batches and the run would
hang or fail. The test checks that precondition from the cuts each rank recorded, then that both ranks ran the
agreed number. Under DDP the update is packed; FSDP2 takes the padded forward, cut by the same budget.

Two updates per step (``minibatch_size=8`` of 16 rollouts), so the log-prob pass before the update is cut by
the budget too, and the second update's loss depends on the first update's weights.

Bounds: the two runs add the same per-token terms in other groupings (other micro-batches, so other matrix shapes
and summation orders), which moves fp32 results by float32 rounding only. The loss is a token mean of terms of
either sign of size ~|advantage| (<= 2): allowed 1e-6 absolute (measured <= 6e-8, a few ulps of terms of size 1).
The gradient norm and the entropy: 1e-5 relative (measured <= 6e-7). The update of each parameter (its checksums,
|Δw| summed and Δw against a ramp): 5e-4 of its Σ|Δw| (measured <= 5.1e-5 under FSDP2, 1.4e-5 under DDP: a
coordinate's gradient sums terms of either sign, so its rounding is relative to their magnitudes, not to the
smaller gradient). The check can fail: with the update loop changed by hand to skip the last micro-batch of each
minibatch, the gradient norm moved by 50 % and a parameter's update by 54 % of its Σ|Δw|. The optimiser's ``eps``
is raised to 1 so the AdamW update is ``lr * g / (|g| + 1)``, smooth in the gradient (with eps 1e-8 the first step
is ``lr * sign(g)``, and a coordinate whose gradient is ~0 could flip on rounding alone). Each run is a subprocess
with a timeout, so a hang fails the test instead of blocking it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from steprl.models.packing import token_budget_chunks
from tests.distributed.gloo import run_steps

BUDGET = 64
COMMON = ["experiment=grpo_tiny", "trainer.max_steps=1", "trainer.num_sanity_val_steps=0",
          "trainer.val_check_interval=100", "batch.prompts_per_step=4", "batch.samples_per_prompt=4",
          "batch.minibatch_size=8", "batch.micro_batch_size=4", "optim.eps=1.0"]
REL = {"train/grad_norm": 1e-5, "train/entropy": 1e-5}
LOSS_ABS, UPDATE_REL = 1e-6, 5e-4

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def run(out: Path, *overrides: str, timeout: int = 420) -> list[dict]:
    m = run_steps(out, *COMMON, *overrides, timeout=timeout)
    return [json.loads(m.with_name(f"m.json.rank{r}").read_text()) for r in (0, 1)]


def own_cut(tokens: list[int]) -> list[int]:
    """The tokens of each micro-batch of a rank's own greedy cut by the budget (before the ranks agree)."""
    return [sum(tokens[a:b]) for a, b in token_budget_chunks(tokens, BUDGET)]


@pytest.mark.parametrize("hardware", ["ddp_cpu", "fsdp_cpu"])
def test_token_budget_equals_row_micro_batches(hardware, tmp_path):
    rows = run(tmp_path / "rows", f"hardware={hardware}")
    budget = run(tmp_path / "budget", f"hardware={hardware}", f"batch.micro_batch_tokens={BUDGET}")

    # the cuts each rank ran: per minibatch, per micro-batch, its rows' tokens ([]: a zero-weight pass)
    cuts = [r["micro_batch_cuts"] for r in budget]
    assert len(cuts[0]) == len(cuts[1]) == 2  # two updates
    greedy = [[own_cut([x for mb in minibatch for x in mb]) for minibatch in c] for c in cuts]
    own = [[len(g) for g in r] for r in greedy]
    assert any(a > b for a, b in zip(own[0], own[1])), own  # rank 0 alone would cut more than rank 1
    for m in range(2):
        assert len(cuts[0][m]) == len(cuts[1][m]) == max(own[0][m], own[1][m])  # the agreed count, on both ranks
        for c in cuts:
            assert all(mb for mb in c[m])  # equal row counts: no zero-weight pass
            assert all(sum(mb) <= BUDGET or len(mb) == 1 for mb in c[m])
        for r in (0, 1):  # evened out: the largest micro-batch is no larger than in the rank's own greedy cut
            assert max(sum(mb) for mb in cuts[r][m]) <= max(greedy[r][m])
    assert [len(mb) for c in rows for m in c["micro_batch_cuts"] for mb in m] == [4] * 4  # rows: 4 a micro-batch

    for a, b in zip(rows[0]["rows"], budget[0]["rows"]):
        assert abs(a["train/loss"] - b["train/loss"]) <= LOSS_ABS, (a["train/loss"], b["train/loss"])
        for k, tol in REL.items():
            assert abs(a[k] - b[k]) <= tol * abs(a[k]), (k, a[k], b[k])
    for r in (0, 1):  # every rank's (shard of the) update
        d_rows, d_budget = rows[r]["policy_delta"], budget[r]["policy_delta"]
        assert d_rows.keys() == d_budget.keys() and sum(v[0] for v in d_rows.values()) > 0  # the step moved them
        for name, (abs_sum, ramp_sum) in d_rows.items():
            for x, y in zip((abs_sum, ramp_sum), d_budget[name]):
                assert abs(x - y) <= UPDATE_REL * abs_sum, (name, x, y)
