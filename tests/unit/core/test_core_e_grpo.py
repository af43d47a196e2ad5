"""core.e_grpo: the hand-computed cases of the E-GRPO spec (§3.6)."""
from __future__ import annotations

import pytest
import torch

from steprl import core
from steprl.core.e_grpo import egrpo_rewards

# ------------------------------------------------------------------------------------------ E-GRPO
G4 = torch.zeros(4, dtype=torch.long)


def _adv(r):
    return core.grpo_advantage(r, G4, "group", 1e-6)


def test_egrpo_mixed_group_spec_case_2():
    r = egrpo_rewards(torch.tensor([1, 0, 0, 0]), torch.tensor([1.0, 0.5, 0.0, 0.25]), torch.zeros(4), G4, 0.3)
    assert r.tolist() == pytest.approx([1, 0.15, 0, 0.075])
    assert _adv(r).tolist() == pytest.approx([1.4870, -0.3349, -0.6564, -0.4957], abs=1e-4)
    plain = _adv(torch.tensor([1.0, 0, 0, 0]))
    assert plain.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-4)


def test_egrpo_all_wrong_group_spec_case_3():
    r = egrpo_rewards(torch.zeros(4), torch.tensor([0.5, 0.25, 0.0, 0.0]), torch.zeros(4), G4, 0.3)
    assert r.tolist() == pytest.approx([0.3, 0.15, 0, 0])
    assert _adv(r).tolist() == pytest.approx([1.3056, 0.2611, -0.7833, -0.7833], abs=1e-4)


def test_egrpo_errors_spec_case_4():
    r = egrpo_rewards(torch.tensor([1, 0, 0, 0]), torch.tensor([1.0, 0.5, 0.0, 0.25]),
                      torch.tensor([0, 1, 0, 0]), G4, 0.3)
    assert r.tolist() == pytest.approx([1, 0, 0, 0.075])
    assert _adv(r).tolist() == pytest.approx([1.4961, -0.5498, -0.5498, -0.3964], abs=1e-4)


def test_egrpo_gamma_max_zero_and_alpha_zero_and_groups():
    r = egrpo_rewards(torch.tensor([0, 0, 1, 0]), torch.zeros(4), torch.zeros(4), G4, 0.3)
    assert r.tolist() == [0, 0, 1, 0] and torch.isfinite(r).all()
    # alpha = 0 is GRPO exactly
    c = torch.tensor([1, 0, 0, 1])
    r0 = egrpo_rewards(c, torch.tensor([0.3, 0.9, 0.1, 0.0]), torch.zeros(4), G4, 0.0)
    assert torch.equal(_adv(r0), _adv(c.float()))
    # gamma_max is per group
    r = egrpo_rewards(torch.zeros(4), torch.tensor([0.5, 0.25, 0.2, 0.1]), torch.zeros(4), torch.tensor([0, 0, 1, 1]))
    assert r.tolist() == pytest.approx([0.3, 0.15, 0.3, 0.15])


def test_token_mean_weights_every_token_equally_spec_case_7():
    """Lengthening one rollout changes every token's weight equally under token-mean (unlike seq-mean)."""
    loss = torch.ones(2, 6)
    short = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]).float()
    long = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).float()
    w = lambda m: torch.autograd.functional.jacobian(lambda x: core.aggregate_loss(x, m), loss)  # noqa: E731
    assert torch.allclose(w(short)[short.bool()], torch.full((6,), 1 / 6))
    assert torch.allclose(w(long)[long.bool()], torch.full((10,), 1 / 10))
    seq = torch.autograd.functional.jacobian(lambda x: core.aggregate_loss(x, short, "seq-mean-token-mean"), loss)
    assert seq[0, 0] != seq[1, 0]
