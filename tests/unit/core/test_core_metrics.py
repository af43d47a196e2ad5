"""pass@k / maj@k / mean@k against hand-computed values."""
from __future__ import annotations

import math

import pytest

from steprl.core.metrics import maj_at_k, majority_answer, mean_at_k, pass_at_k


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)            # c/n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)            # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5)=21, C(10,5)=252
    assert pass_at_k(5, 2, 4) == 1.0                            # n - c = 3 < k: always a correct one
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(1, 1, 1) == 1.0
    # matches the combinatorial definition everywhere on a small grid
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)


def test_majority_vote_by_hand():
    answers = ["4", "5", "5", None, "4", "4"]
    correct = [True, False, False, False, True, True]
    assert majority_answer(answers) == 0                 # "4" three times
    assert maj_at_k(answers, correct, 6) == 1.0
    assert maj_at_k(answers, correct, 3) == 0.0          # first 3: "5" twice beats "4" once
    assert maj_at_k(answers, correct, 2) == 1.0          # tie "4" / "5": the one seen first
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    assert majority_answer([None, "x", "y", "y", "x"]) == 1  # tie 2-2: "x" appeared first


def test_mean_at_k_by_hand():
    assert mean_at_k([1, 0, 1, 1], 4) == 0.75
    assert mean_at_k([1, 0, 1, 1], 2) == 0.5
    with pytest.raises(ValueError):
        mean_at_k([1], 2)
