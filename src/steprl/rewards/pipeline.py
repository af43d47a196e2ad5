"""Score a batch of responses with an outcome verifier and, optionally, a step scorer, without ever crashing.

Every call of a reward component is one item of a :class:`~steprl.rewards.pool.BoundedPool`: the outcome
call and the step call of a response are separate items, so each has its own time budget and a hanging step
scorer does not cost the outcome score. A call that raises, dies, times out or returns something that is not a
finite number becomes a failed call: outcome 0 (step row all NaN), counted in ``errors`` or ``timeouts``.

A failed step scorer gives an all-NaN row rather than zeros: how many steps the response has is unknown then,
and NaN already means "no step score here" to every consumer of ``step``.

torch is imported inside :meth:`RewardPipeline.__call__`, not at module level: every worker process unpickles
:func:`_score_call` from this module, and a module-level torch import would add ~2.5 s to each worker (re)start
even when the verifier and its arguments never need torch.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from steprl.rewards.pool import TIMEOUT, BoundedPool, ItemResult, reporting_timeouts

if TYPE_CHECKING:
    import torch

    from steprl.rollout.types import Sample

__all__ = ["RewardPipeline", "RewardResult", "metrics"]

log = logging.getLogger(__name__)

OutcomeFn = Callable[[Any, str], float]
StepFn = Callable[[Any, str], "Sequence[float] | None"]

_MAX_ERROR_EXAMPLES = 5
_OUTCOME, _STEP = 0, 1


@dataclass
class RewardResult:
    """Scores of one batch.

    ``extras`` holds ``calls`` (component calls made), ``error_examples`` (the first few failure messages,
    each prefixed with the component and row), ``outcome_failed`` (bool tensor [N]: the outcome is 0 because
    the verifier failed, not because the answer was wrong) and ``step_failed`` (the same for the step scorer).
    """

    outcome: torch.Tensor  # [N] float32, 0 where the verifier failed
    step: torch.Tensor | None  # [N, S_max] float32, NaN padding; None without a step scorer
    errors: int  # calls that raised, died, or returned something that is not a finite number
    timeouts: int  # calls killed for running past the timeout
    extras: dict = field(default_factory=dict)


def _as_score(value: Any) -> float:
    if isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"score must be a number, got {type(value).__name__}: {value!r:.80}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    return score


def _score_call(outcome_fn: OutcomeFn, step_fn: StepFn | None, which: int, sample: Any, response: str):
    """One component call, run inside a worker: the score(s), validated, as plain floats. A component that
    raises :class:`~steprl.rewards.pool.ScoreTimeout` (its own time limit, e.g. the math grader's) is counted
    in ``timeouts``."""
    if which == _OUTCOME:
        with reporting_timeouts():
            return _as_score(outcome_fn(sample, response))
    with reporting_timeouts():
        scores = step_fn(sample, response)  # type: ignore[misc]
    if scores is None:
        return None
    if isinstance(scores, (str, bytes)) or not hasattr(scores, "__iter__"):
        raise TypeError(f"step scores must be a list of numbers or None, got {type(scores).__name__}")
    return [_as_score(s) for s in scores]


def metrics(result: RewardResult) -> dict[str, float]:
    """``reward/errors`` and ``reward/timeouts`` (counts) and ``reward/error_rate`` (failed calls / calls)."""
    calls = result.extras.get("calls")
    if calls is None:
        calls = result.outcome.numel() * (1 if result.step is None else 2)
    failed = result.errors + result.timeouts
    return {
        "reward/errors": float(result.errors),
        "reward/timeouts": float(result.timeouts),
        "reward/error_rate": failed / calls if calls else 0.0,
    }


class RewardPipeline:
    """Outcome verifier (+ optional step scorer) over a batch, in a bounded pool.

    Args:
        outcome_fn: ``(sample, response) -> float``, e.g. a task's bound ``verify`` method.
        step_fn: ``(sample, response) -> list[float] | None``; None (the function) means no step scores.
        num_workers: worker processes; 0 runs inline (timeouts only partly enforced, see ``pool``).
        timeout_s: wall-clock budget of each call, from when a worker starts it.
        mp_context: multiprocessing start method for the workers.

    The functions must be picklable when ``num_workers > 0``. Call :meth:`close` (or use ``with``) to stop the
    workers; they are also stopped when the pipeline is garbage-collected and at exit.
    """

    def __init__(self, outcome_fn: OutcomeFn, step_fn: StepFn | None = None, num_workers: int = 0,
                 timeout_s: float = 10.0, mp_context: Any = "spawn"):
        self.outcome_fn = outcome_fn
        self.step_fn = step_fn
        self.pool = BoundedPool(num_workers=num_workers, timeout_s=timeout_s, mp_context=mp_context)
        self._call = functools.partial(_score_call, outcome_fn, step_fn)
        self._warned = False

    def __enter__(self) -> "RewardPipeline":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    metrics = staticmethod(metrics)

    def __call__(self, samples: Sequence[Sample], responses: Sequence[str]) -> RewardResult:
        import torch

        if len(samples) != len(responses):
            raise ValueError(f"{len(samples)} samples but {len(responses)} responses")
        n = len(samples)
        items = [(_OUTCOME, s, r) for s, r in zip(samples, responses)]
        if self.step_fn is not None:
            items += [(_STEP, s, r) for s, r in zip(samples, responses)]
        results = self.pool.map(self._call, items)

        errors = timeouts = 0
        examples: list[str] = []

        def settle(kind: str, row: int, res: ItemResult) -> bool:
            nonlocal errors, timeouts
            if res.ok:
                return True
            if res.status == TIMEOUT:
                timeouts += 1
            else:
                errors += 1
            if len(examples) < _MAX_ERROR_EXAMPLES:
                examples.append(f"{kind}[{row}] {res.status}: {res.value}")
            return False

        outcome_ok = [settle("outcome", row, res) for row, res in enumerate(results[:n])]
        outcome = torch.tensor([res.value if ok else 0.0 for res, ok in zip(results, outcome_ok)],
                               dtype=torch.float32)
        outcome_failed = torch.tensor([not ok for ok in outcome_ok], dtype=torch.bool)

        step = step_failed = None
        if self.step_fn is not None:
            step_ok = [settle("step", row, res) for row, res in enumerate(results[n:])]
            rows = [res.value if ok and res.value else [] for res, ok in zip(results[n:], step_ok)]
            width = max(map(len, rows), default=0)
            step = torch.tensor([r + [math.nan] * (width - len(r)) for r in rows], dtype=torch.float32)
            step = step.reshape(n, width)  # keeps the shape [N, 0] when no row has steps
            step_failed = torch.tensor([not ok for ok in step_ok], dtype=torch.bool)

        if examples:
            level, self._warned = (logging.DEBUG if self._warned else logging.WARNING), True
            log.log(level, "reward: %d errors, %d timeouts in %d calls; first: %s%s", errors, timeouts,
                    len(items), examples[0], "" if level == logging.DEBUG else " (later reports at DEBUG)")
        extras = {"calls": len(items), "error_examples": examples, "outcome_failed": outcome_failed}
        if step_failed is not None:
            extras["step_failed"] = step_failed
        return RewardResult(outcome=outcome, step=step, errors=errors, timeouts=timeouts, extras=extras)
