"""sample_next's cheap path draws exactly what torch.multinomial over the same probabilities draws (same
generator state), and its finite-maximum shortcut changes no probability."""
from __future__ import annotations

import torch

from steprl.rollout.hf import sample_next


def _reference(logits, temperature, generator):
    """The former implementation (repair passes always on, torch.multinomial)."""
    logits = logits.float() / temperature
    logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=1e30)
    logits = torch.where(torch.isinf(logits).all(-1, keepdim=True) & (logits < 0), torch.zeros_like(logits), logits)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)


def test_same_draws_as_multinomial():
    torch.manual_seed(0)
    logits = torch.randn(64, 50) * 3
    logits[:, 1] = float("-inf")  # a banned token (EOS before min_new_tokens)
    logits[5] = float("-inf")     # a row with nothing left: uniform
    logits[6, 3] = float("nan")   # a diverged row
    for rows in (logits[:5], logits):  # all-finite maxima (shortcut) and rows needing repair
        g0, g1 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        for _ in range(20):
            assert torch.equal(sample_next(rows, 0.7, 1.0, 0, g0), _reference(rows, 0.7, g1))
        assert torch.equal(g0.get_state(), g1.get_state())  # the generator advanced by the same amount


def test_banned_token_is_never_drawn():
    logits = torch.zeros(256, 4)
    logits[:, 2] = float("-inf")
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, 1.0, 1.0, 0, g) for _ in range(10)])
    assert not (draws == 2).any() and set(draws.tolist()) == {0, 1, 3}
