"""PROPA's SFT schedule (the paper's: 5 % linear warm-up, cosine decay to 0), its multipliers by hand."""
import math

import pytest
import torch

from steprl.algos.propa import sft_schedule


def factors(total: int, kind: str = "cosine", ratio: float = 0.05) -> list[float]:
    """The learning-rate multiplier at each of the phase's ``total`` steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, out = sft_schedule(opt, total, kind, ratio), []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_by_hand():
    f = factors(100)  # warm-up ceil(0.05 x 100) = 5 steps: 0, 0.2, ..., 0.8, then 1 at step 5
    assert f[:6] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert f[24] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 95)))
    assert f[99] == pytest.approx(0.5 * (1 + math.cos(math.pi * 94 / 95)))


def test_short_phases_round_the_warmup_up():
    # 3 steps: warm-up ceil(0.15) = 1 -> 0, 1, 0.5 x (1 + cos(pi / 2)) = 0.5
    assert factors(3) == pytest.approx([0.0, 1.0, 0.5])
    assert factors(20)[:2] == pytest.approx([0.0, 1.0])  # ceil(1.0) = 1 warm-up step


def test_constant_has_no_warmup():
    assert factors(4, "constant") == [1.0, 1.0, 1.0, 1.0]
