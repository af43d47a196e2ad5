"""RewardPipeline: failed verifier calls become score 0 plus counted metrics; step scores are NaN-padded."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

from steprl.rewards import RewardPipeline, RewardResult, metrics
from steprl.rollout.types import Sample
from tests.unit.rewards import verifiers as V

pytestmark = pytest.mark.timeout(60)

NAN = math.nan


def batch(*responses: str, answer: str = "42"):
    return [Sample(prompt="what is 6*7?", answer=answer, uid=str(i)) for i in range(len(responses))], list(responses)


@pytest.fixture(scope="module", params=[0, 2], ids=["inline", "workers"])
def pipeline(request):
    with RewardPipeline(V.outcome_by_response, V.steps_by_line, num_workers=request.param, timeout_s=0.5) as p:
        yield p


def test_scores_and_nan_padded_steps(pipeline):
    samples, responses = batch("42", "41", "good\nbad\ngood", "good")
    result = pipeline(samples, responses)
    assert isinstance(result, RewardResult)
    assert result.outcome.dtype == torch.float32 and result.outcome.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert result.step.dtype == torch.float32 and result.step.shape == (4, 3)
    torch.testing.assert_close(result.step, torch.tensor(
        [[0.0, NAN, NAN], [0.0, NAN, NAN], [1.0, 0.0, 1.0], [1.0, NAN, NAN]]), equal_nan=True)
    assert (result.errors, result.timeouts) == (0, 0)
    assert metrics(result) == {"reward/errors": 0.0, "reward/timeouts": 0.0, "reward/error_rate": 0.0}
    assert result.extras["calls"] == 8 and result.extras["error_examples"] == []


def test_failures_score_zero_and_are_counted(pipeline):
    # inline, the main-thread timer stops the Python loop of "hang"; in workers, the kill does
    kinds = ["42", "hang", "boom", "nan", "str", "none", "42"]
    if pipeline.pool.num_workers:
        kinds.append("exit")
    samples, responses = batch(*kinds)
    result = pipeline(samples, responses)
    expected = [1.0] + [0.0] * 5 + [1.0] + [0.0] * (len(kinds) - 7)
    assert result.outcome.tolist() == expected
    assert result.extras["outcome_failed"].tolist() == [s not in ("42",) for s in kinds]
    # the step scorer gets its own call per response and succeeds on all of these
    assert result.timeouts == 1
    assert result.errors == len(kinds) - 3  # boom, nan, str, none (+ exit)
    assert not result.extras["step_failed"].any()
    examples = result.extras["error_examples"]
    assert 0 < len(examples) <= 5 and any("timeout" in e for e in examples)
    assert any("ValueError: boom" in e for e in examples)
    m = metrics(result)
    assert m["reward/timeouts"] == 1.0 and m["reward/errors"] == float(result.errors)
    assert m["reward/error_rate"] == pytest.approx((result.errors + 1) / (2 * len(kinds)))


def test_a_hanging_step_scorer_keeps_the_outcome(pipeline):
    samples, responses = batch("stephang", "stepnone", "stepnan", "good", answer="stephang")
    result = pipeline(samples, responses)
    assert result.outcome.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert (result.timeouts, result.errors) == (1, 1)  # stephang timed out; stepnan has an inf
    assert result.extras["step_failed"].tolist() == [True, False, True, False]
    torch.testing.assert_close(result.step, torch.tensor([[NAN], [NAN], [NAN], [1.0]]), equal_nan=True)


def test_pipeline_still_works_after_failures(pipeline):
    samples, responses = batch("42", "42")
    assert pipeline(samples, responses).outcome.tolist() == [1.0, 1.0]


def test_without_step_scorer_and_empty_batch():
    with RewardPipeline(V.outcome_by_response) as p:
        result = p(*batch("42", "7"))
        assert result.step is None and result.outcome.tolist() == [1.0, 0.0]
        assert metrics(result)["reward/error_rate"] == 0.0
        empty = p([], [])
        assert empty.outcome.shape == (0,) and empty.step is None and empty.errors == 0
    with RewardPipeline(V.outcome_by_response, V.steps_by_line) as p:
        assert p([], []).step.shape == (0, 0)
        assert p(*batch("stepnone")).step.shape == (1, 0)


def test_length_mismatch_is_a_usage_error():
    with RewardPipeline(V.outcome_by_response) as p, pytest.raises(ValueError, match="2 samples but 1"):
        p(batch("1", "2")[0], ["only one"])


def test_pipeline_pickles_without_its_workers():
    with RewardPipeline(V.outcome_by_response, num_workers=1, timeout_s=1.0) as p:
        samples = [V.LightSample("q", "42"), V.LightSample("q", "42")]  # any object the verifier accepts
        p(samples[:1], ["42"])
        clone = pickle.loads(pickle.dumps(p))
        try:
            assert clone.pool.worker_pids == []
            assert clone(samples, ["42", "0"]).outcome.tolist() == [1.0, 0.0]
        finally:
            clone.close()


def test_metrics_on_a_hand_built_result():
    result = RewardResult(outcome=torch.zeros(4), step=None, errors=1, timeouts=1, extras={})
    assert metrics(result) == {"reward/errors": 1.0, "reward/timeouts": 1.0, "reward/error_rate": 0.5}
    assert RewardPipeline.metrics(result) == metrics(result)
