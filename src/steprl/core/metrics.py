"""Evaluation metrics over n graded samples per problem (pure functions on numbers, no I/O).

* ``pass_at_k(n, c, k)``: the unbiased estimator of Chen et al. (2021, Codex paper): the probability that at
  least one of k samples drawn without replacement from the n generated ones is correct, when c of the n are:
  ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` for numerical stability.
* ``maj_at_k(answers, correct, k)``: majority vote over the first k samples' extracted answers (``None``, i.e. no
  answer, never wins; ties go to the answer seen first); 1 if the voted answer is a correct one, else 0.
* ``mean_at_k(correct, k)``: mean correctness of the first k samples (``mean@n`` is the usual avg@n, an unbiased
  estimate of sampled pass@1).
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pass_at_k", "maj_at_k", "mean_at_k", "majority_answer"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` correct among ``n`` samples (``1 <= k <= n``)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample carrying the most frequent non-None answer (ties: the answer seen first)."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, i)
    if not counts:
        return None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool | float], k: int) -> float:
    """1.0 if the majority answer of the first ``k`` samples is correct, else 0.0."""
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answers but {len(correct)} correctness values")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: need 1 <= k <= {len(answers)}, got k={k}")
    i = majority_answer(answers[:k])
    return 0.0 if i is None else float(bool(correct[i]))


def mean_at_k(correct: Sequence[bool | float], k: int) -> float:
    """Mean correctness of the first ``k`` samples."""
    if not 1 <= k <= len(correct):
        raise ValueError(f"mean_at_k: need 1 <= k <= {len(correct)}, got k={k}")
    return sum(float(c) for c in correct[:k]) / k
