"""Long arithmetic chains: where a chain first went wrong (hand-made chains), prefix step scores, per-length
sources, the arith_long config and the per-length summary of the measurement script."""
from __future__ import annotations

import math

import pytest

from steprl.rollout.types import Sample
from steprl.tasks import ArithTask, evaluate_expression
from steprl.tasks.arith_eval import summarize
from tests.helpers import compose_train

EXPR = "3+5-2+7"  # reference: 3+5-2+7=8-2+7 / 8-2+7=6+7 / 6+7=13 / #### 13  (4 steps)


def sample_for(expr: str) -> Sample:
    return Sample(prompt=f"{expr}=\n", answer=str(evaluate_expression(expr)), meta={"expression": expr})


# (response, local step scores, prefix step scores, first error, outcome)
CHAINS = [
    ("3+5-2+7=8-2+7\n8-2+7=6+7\n6+7=13\n#### 13", [1, 1, 1, 1], [1, 1, 1, 1], None, 1.0),
    # a slip in step 1 (8-2=5): later steps are right from the wrong value, the answer is wrong
    ("3+5-2+7=8-2+7\n8-2+7=5+7\n5+7=12\n#### 12", [1, 0, 1, 1], [1, 0, 0, 0], 1, 0.0),
    # wrong first step, right answer by luck: the outcome says 1, the chain went wrong at step 0
    ("3+5-2+7=9-2+7\n9-2+7=7+7\n7+7=14\n#### 13", [0, 1, 1, 0], [0, 0, 0, 0], 0, 1.0),
    # cut off before the answer line: all written steps right, the first missing step is 2
    ("3+5-2+7=8-2+7\n8-2+7=6+7", [1, 1], [1, 1], 2, 0.0),
    # a step that keeps the value but is not one reduction (two operations at once)
    ("3+5-2+7=6+7\n6+7=13\n#### 13", [0, 1, 1], [0, 0, 0], 0, 1.0),
    # text after the answer line is an error at its own index (and the answer no longer parses)
    ("3+5-2+7=8-2+7\n8-2+7=6+7\n6+7=13\n#### 13\n6+7=13", [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], 4, 0.0),
    # the answer line's value is judged against the chain as written: 6+7 is 13, not 14
    ("3+5-2+7=8-2+7\n8-2+7=6+7\n6+7=13\n#### 14", [1, 1, 1, 0], [1, 1, 1, 0], 3, 0.0),
    ("", [], [], 0, 0.0),
]


@pytest.mark.parametrize("response,local,prefix,first,outcome", CHAINS)
def test_first_error_on_hand_made_chains(response, local, prefix, first, outcome):
    s = sample_for(EXPR)
    t_local, t_prefix = ArithTask(num_val=4), ArithTask(num_val=4, step_scores="prefix")
    assert t_local.score_steps(s, response) == local
    assert t_prefix.score_steps(s, response) == prefix
    assert t_local.first_error(s, response) == first
    assert t_prefix.first_error(s, response) == first
    assert t_local.verify(s, response) == outcome


def test_first_error_never_raises():
    t = ArithTask(num_val=4)
    assert t.first_error(sample_for(EXPR), None) == 0
    assert t.first_error(Sample(prompt="not arithmetic=\n"), "1+1=2") == 0


def test_bad_step_scores_named():
    with pytest.raises(ValueError, match="step_scores.*local.*prefix.*'first'"):
        ArithTask(step_scores="first")


def test_length_in_source_and_mixed_lengths():
    t = ArithTask(num_terms=[2, 10], num_val=200, num_train=50, length_in_source=True, name="arith_long")
    val = [t.val_dataset()[i] for i in range(200)]
    lengths = {s.meta["num_terms"] for s in val}
    assert lengths == set(range(2, 11))
    for s in val[:20]:
        assert s.source == f"arith_long_{s.meta['num_terms']}"
        assert s.solution.count("\n") == s.meta["num_terms"] - 1  # n - 1 reductions, then the answer line
    assert ArithTask(num_val=4).make_sample("val", 0).source == "arith"


def test_arith_long_config_composes(tmp_path):
    cfg = compose_train(["task=arith_long"], tmp_path)
    assert cfg.task.name == "arith_long" and list(cfg.task.num_terms) == [2, 10]
    assert cfg.task.length_in_source is True and cfg.task.step_scores == "local"


def test_summarize_per_length_by_hand():
    # 3 chains of 4 terms: right (4 steps right), first error at 1 (1 right + 1 error), cut off at 2 (2 + 1)
    rows = {4: [(1.0, 4, 0, 1.0, None), (0.0, 1, 1, 0.75, 1), (0.0, 2, 1, 1.0, 2)]}
    r = summarize(rows)[4]
    assert r["n"] == 3 and r["final"] == pytest.approx(1 / 3)
    assert r["final_se"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 3))
    assert r["step"] == pytest.approx(7 / 9)  # 7 steps right out of 7 + 2 attempted until the first errors
    assert r["local"] == pytest.approx((1.0 + 0.75 + 1.0) / 3)
    assert r["first_err"] == pytest.approx(1.5)
