"""TP-GRPO math against the hand-computed cases of spec §2.9 (and a property test of Propositions 1-2)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl import core
from steprl.core.tp_grpo import (
    merge_runs,
    thought_ids_from_steps,
    tp_grpo_direct_advantages,
    tp_grpo_outcome,
    tp_grpo_thought_rewards,
    tp_grpo_token_rewards,
)

NAN = float("nan")


def test_merge_runs():  # spec §2.9 case 1
    assert merge_runs(["C", "C", "I", "I", "C"]) == [("C", 2), ("I", 2), ("C", 1)]
    assert [lab for lab, _ in merge_runs(["U", "M", "M", "U", "M"])] == ["U", "M", "U", "M"]
    assert merge_runs([]) == []


def test_outcome_normalisation_group_of_8_with_2_correct():  # spec §2.9 case 2
    correct = torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0])
    rhat, r_c = tp_grpo_outcome(correct, torch.zeros(8, dtype=torch.long), alpha=1.0)
    # r = ±1: mean -0.5, unbiased std sqrt(6/7) = 0.92582; (1 + 0.5)/(0.92582 + 1e-4), (-1 + 0.5)/(...)
    assert rhat[0].item() == pytest.approx(1.620, abs=1e-3) and rhat[2].item() == pytest.approx(-0.540, abs=1e-3)
    assert torch.allclose(r_c, torch.full((8,), 0.25))
    _, static = tp_grpo_outcome(correct, torch.zeros(8, dtype=torch.long), alpha=1.0, adaptive=False)
    assert torch.allclose(static, torch.ones(8))


def _row(labels: list[int], lens: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row: steps with `labels` (0 good, 1 bad) and token lengths `lens`; returns step_ids, bad, mask."""
    ids = torch.tensor([[k for k, n in enumerate(lens) for _ in range(n)]])
    return ids, torch.tensor([labels], dtype=torch.float), torch.ones_like(ids, dtype=torch.float)


def _advantages(labels, lens, correct, rhat, r_c, literal=False):
    step_ids, bad, mask = _row(labels, lens)
    tids, tbad, num = thought_ids_from_steps(step_ids, bad)
    c, rh, rc = torch.tensor([float(correct)]), torch.tensor([rhat]), torch.tensor([r_c])
    rew = tp_grpo_thought_rewards(tbad, num, c, rh, rc, literal_final=literal)
    cum = core.discounted_returns(tp_grpo_token_rewards(tids, rew, rh, mask), mask)
    direct = tp_grpo_direct_advantages(tids, tbad, c, rh, rc, mask)
    return rew[0], cum[0], direct[0], tids[0]


def test_correct_solution_thought_advantages():  # spec §2.9 case 3: thoughts C, I, C
    rew, cum, direct, tids = _advantages([0, 0, 1, 0], [2, 1, 2, 3], True, 1.620, 0.25)
    assert tids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # steps C,C merged
    assert torch.allclose(rew, torch.tensor([0.25, -0.25, 0.0]))
    expected = torch.tensor([1.620] * 3 + [1.370] * 2 + [1.620] * 3)
    assert torch.allclose(cum, expected, atol=1e-6) and torch.allclose(direct, expected, atol=1e-6)


def test_incorrect_solution_thought_advantages():  # spec §2.9 case 4: thoughts U, M, U, M
    rew, cum, direct, _ = _advantages([0, 1, 0, 1], [1, 2, 1, 2], False, -0.540, 0.25)
    assert torch.allclose(rew, torch.tensor([0.540, -0.540, 0.540, 0.0]))
    expected = torch.tensor([0.0, -0.540, -0.540, 0.0, -0.540, -0.540])
    assert torch.allclose(cum, expected, atol=1e-6) and torch.allclose(direct, expected, atol=1e-6)


def test_literal_final_thought_breaks_proposition_1():
    _, cum, direct, _ = _advantages([0, 1, 0], [1, 1, 1], True, 1.620, 0.25, literal=True)
    assert torch.allclose(cum, torch.tensor([1.870, 1.620, 1.870]), atol=1e-6)  # C tokens get r̂ + r_c
    assert not torch.allclose(cum, direct)


def test_edge_groups():  # spec §2.9 case 6
    g = torch.zeros(4, dtype=torch.long)
    rhat, r_c = tp_grpo_outcome(torch.ones(4), g, alpha=1.0)
    assert torch.all(rhat == 0) and torch.all(r_c == 1.0)
    _, cum, _, _ = _advantages([0, 1, 0], [1, 1, 1], True, 0.0, 1.0)
    assert cum.tolist() == [0.0, -1.0, 0.0]   # all-correct: C tokens 0, I tokens -alpha
    rhat, r_c = tp_grpo_outcome(torch.zeros(4), g)
    assert torch.all(rhat == 0) and torch.all(r_c == 0)
    _, cum, _, _ = _advantages([0, 1, 0, 1], [1, 1, 1, 1], False, 0.0, 0.0)
    assert torch.all(cum == 0)                 # all-wrong: nothing to learn (the algorithm drops the group)


def test_step_level_counter_example():  # spec §2.9 case 7: CCCC IIIII C with ±1 per step, summed returns
    step_rewards = torch.tensor([[1.0] * 4 + [-1.0] * 5 + [1.0]])
    returns = core.discounted_returns(step_rewards, torch.ones_like(step_rewards))
    assert returns[0].tolist() == [0, -1, -2, -3, -4, -3, -2, -1, 0, 1]


def test_tokens_outside_steps_and_nan_labels():
    step_ids = torch.tensor([[0, 0, -1, 1, 1, -1, 2, -1, -1]])   # -1 between steps and at the end (EOS, pad)
    mask = torch.tensor([[1.0] * 8 + [0.0]])
    bad = torch.tensor([[0.0, 1.0, 0.0, NAN]])
    tids, tbad, num = thought_ids_from_steps(step_ids, bad)
    assert tids[0].tolist() == [0, 0, -1, 1, 1, -1, 2, -1, -1] and num.tolist() == [3]
    c, rh, rc = torch.tensor([1.0]), torch.tensor([0.8]), torch.tensor([0.5])
    rew = tp_grpo_thought_rewards(tbad, num, c, rh, rc)
    cum = core.discounted_returns(tp_grpo_token_rewards(tids, rew, rh, mask), mask)
    direct = tp_grpo_direct_advantages(tids, tbad, c, rh, rc, mask)
    assert torch.allclose(cum, direct)
    assert torch.allclose(cum[0], torch.tensor([0.8, 0.8, 0.3, 0.3, 0.3, 0.8, 0.8, 0.8, 0.0]))
    # a NaN hole inside a row takes the label before it (no thought of its own)
    tids, tbad, num = thought_ids_from_steps(torch.tensor([[0, 1, 2]]), torch.tensor([[1.0, NAN, 1.0]]))
    assert tids[0].tolist() == [0, 0, 0] and num.tolist() == [1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2)), min_size=1, max_size=8),
       st.booleans(), st.floats(-3, 3), st.floats(0, 2))
def test_cumulative_form_equals_the_propositions_table(runs, correct, rhat, r_c):  # spec §2.9 case 5
    """Random alternating thoughts (final thought = the answer, labelled C / M), random gaps between steps:
    the summed returns of the placed rewards equal the per-thought table of Propositions 1-2 at every token."""
    k = len(runs)
    labels = [(k - 1 - j) % 2 for j in range(k)]  # alternate, last one 0 for correct (C) ...
    if not correct:
        labels = [1 - x for x in labels]          # ... and 1 (M) for incorrect
    ids = []
    for j, (n, gap) in enumerate(runs):
        ids += [j] * n + [-1] * gap
    step_ids, mask = torch.tensor([ids]), torch.ones(1, len(ids))
    bad = torch.tensor([[float(x) for x in labels]])
    tids, tbad, num = thought_ids_from_steps(step_ids, bad)
    assert num.item() == k
    c, rh, rc = torch.tensor([float(correct)]), torch.tensor([rhat]), torch.tensor([r_c])
    rew = tp_grpo_thought_rewards(tbad, num, c, rh, rc)
    cum = core.discounted_returns(tp_grpo_token_rewards(tids, rew, rh, mask), mask)
    direct = tp_grpo_direct_advantages(tids, tbad, c, rh, rc, mask)
    assert torch.allclose(cum, direct, atol=1e-5)
    # Proposition 1/2: key tokens keep the outcome target, errors are only de-weighted
    for t, j in enumerate(ids):
        if j < 0:
            continue
        b = labels[j]
        want = (rhat - r_c if b else rhat) if correct else (rhat if b else 0.0)
        assert math.isclose(cum[0, t].item(), want, abs_tol=1e-5)
