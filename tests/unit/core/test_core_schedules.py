"""PROPA's SFT schedule (issue 15 item 7): 5 % linear warm-up, cosine decay to 0, by hand."""
import math

import pytest

from steprl.core import warmup_cosine, warmup_steps


def test_warmup_steps_rounds_up():
    assert warmup_steps(20, 0.05) == 1 and warmup_steps(100, 0.05) == 5 and warmup_steps(3, 0.05) == 1
    assert warmup_steps(40, 0.0) == 0


def test_warmup_cosine_by_hand():
    # total 100, warm-up 5: 0, 0.2, ..., 0.8, then 1 at step 5, 0.5 at the middle of the decay (step 52.5)
    assert [warmup_cosine(s, 100, 5) for s in range(6)] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert warmup_cosine(24, 100, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 95)))
    assert warmup_cosine(100, 100, 5) == pytest.approx(0.0, abs=1e-12)
    # a 3-step phase (warm-up 1): 0, 1, 0.5 x (1 + cos(pi / 2)) = 0.5
    assert [warmup_cosine(s, 3, 1) for s in range(3)] == pytest.approx([0.0, 1.0, 0.5])
