"""EMPG (spec §1.8): Proposition 1, the hand-computed 2x2 case, invariants, and the third-party bug."""
import math

import pytest
import torch

from steprl.core import (
    empg_advantages,
    empg_step_advantages,
    expected_logit_grad_sq_norm,
    fill_step_ids,
    gather_step_values,
    scatter_step_values,
)

NAN = float("nan")


def approx(xs, tol=1e-3):
    return pytest.approx(xs, abs=tol)


# ----------------------------------------------------------------------------------------------- Proposition 1
def test_proposition1_closed_form():
    z = torch.tensor([2.0, 0.5, -1.0])
    p = torch.softmax(z, -1)
    lhs = sum(float(p[a]) * float(((torch.eye(3)[a] - p) ** 2).sum()) for a in range(3))
    assert lhs == pytest.approx(0.350581, abs=1e-5)
    assert float(expected_logit_grad_sq_norm(z)) == pytest.approx(0.350581, abs=1e-5)


def test_proposition1_autograd_sampled():
    z0 = torch.tensor([2.0, 0.5, -1.0])
    gen = torch.Generator().manual_seed(0)
    actions = torch.multinomial(torch.softmax(z0, -1), 20000, replacement=True, generator=gen)
    sq = torch.zeros(3)
    for a in range(3):  # gradient of log π(a) w.r.t. z, by autograd, weighted by how often a was drawn
        z = z0.clone().requires_grad_(True)
        torch.log_softmax(z, -1)[a].backward()
        sq[a] = (z.grad ** 2).sum()
    est = float((sq[actions]).mean())
    assert est == pytest.approx(0.3506, abs=5e-3)


# ----------------------------------------------------------------------------------------------- hand case
# τ1 (A=+1) steps H=[0.2, 1.0]; τ2 (A=-1) steps H=[0.6, 0.2]; k = k' = 1, ζ = 0.1
H = torch.tensor([[0.2, 1.0], [0.6, 0.2]])
A = torch.tensor([1.0, -1.0])


def test_hand_case_dense():
    out = empg_advantages(H, A, k=1.0, k_future=1.0, zeta=0.1)
    assert out.h_norm.flatten().tolist() == approx([0, 1, 0.5, 0], 1e-6)
    assert out.g.flatten().tolist() == approx([1.3448, 0.4947, 0.8157, 1.3448])
    # mean over the float32 outputs taken in float64: their rounding (u each) moves it by < u max|g| = 8e-8
    assert float(out.g.double().mean()) == pytest.approx(1.0, abs=1e-6)
    assert out.bonus.flatten().tolist() == approx([0.03679, 0.0, 0.1, 0.0])
    assert out.adv.flatten().tolist() == approx([1.4276, 0.5408, -0.6696, -1.2988])
    # the confident error (τ2, step 2) gets the largest-magnitude penalty
    assert float(out.adv[1, 1]) < float(out.adv[1, 0]) < 0
    assert float(out.adv[1, 1]) == min(out.adv.flatten().tolist())


def test_hand_case_flat_step_sample_layout():
    """One sample per step (verl-agent layout): steps shuffled, linked by trajectory id and turn index."""
    h = torch.tensor([0.2, 0.6, 1.0, 0.2])
    traj = torch.tensor([7, 3, 7, 3])
    turn = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = empg_step_advantages(h, a, traj, turn)
    assert out.adv.tolist() == approx([1.4276, -0.6696, 0.5408, -1.2988])


def test_ragged_rows_and_turn_gaps():
    h = torch.tensor([[0.2, 1.0, NAN], [0.6, 0.2, 0.4]])
    out = empg_advantages(h, A)
    assert math.isnan(float(out.adv[0, 2]))
    assert float(out.bonus[1, 1]) > 0 and float(out.bonus[1, 2]) == 0.0  # last step of τ2 is now step 3
    # a missing turn breaks the chain: no bonus across the gap
    flat = empg_step_advantages(torch.tensor([0.1, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([0, 0]),
                                torch.tensor([0, 2]))
    assert flat.bonus.tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------- invariants
def test_no_bonus_constant_entropy_reduces_to_baseline():
    h = torch.full((3, 2), 0.7)
    a = torch.tensor([0.5, -1.0, 2.0])
    out = empg_advantages(h, a, zeta=0.0)
    assert torch.isfinite(out.adv).all()
    assert out.g.flatten().tolist() == approx([1.0] * 6, 1e-6)  # ε handles max = min: H̃ = 0, g = 1
    want = (a - a.mean())[:, None].expand(3, 2)
    assert out.adv.flatten().tolist() == approx(want.flatten().tolist(), 1e-6)


def test_last_steps_get_no_bonus_and_mean_g_is_one():
    gen = torch.Generator().manual_seed(3)
    h = torch.rand(5, 4, generator=gen)
    out = empg_advantages(h, torch.randn(5, generator=gen), zeta=0.3, k=2.0, k_future=0.5)
    assert out.bonus[:, -1].tolist() == [0.0] * 5
    # means of the float32 outputs taken in float64, independent of a float32 sum's order: off by < u max|x|
    assert float(out.g.double().mean()) == pytest.approx(1.0, abs=1e-6)
    assert float(out.adv.double().mean()) == pytest.approx(0.0, abs=1e-6)
    assert (out.bonus[:, :-1] > 0).all()


def test_final_norm_options():
    none = empg_advantages(H, A, final_norm="none")
    assert none.adv.flatten().tolist() == approx([1.3816, 0.4947, -0.7157, -1.3448])
    ms = empg_advantages(H, A, final_norm="mean_std").adv.flatten()
    assert float(ms.std()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="final_norm"):
        empg_advantages(H, A, final_norm="whiten")


def test_empty_batch():
    out = empg_advantages(torch.full((2, 3), NAN), torch.zeros(2))
    assert torch.isnan(out.adv).all()


# ----------------------------------------------------------------------------------------------- the bug
def _buggy_verl_fork(token_entropy, step_ids, traj_adv, k=1.0, eps=1e-8):
    """The third-party fork the spec warns about: min/max over the token entropy matrix, and
    ``advantages *= g_H[i]`` applied to the whole batch tensor once per step."""
    valid = step_ids >= 0
    tok = token_entropy[valid]
    adv = traj_adv[:, None].expand(step_ids.shape).clone()
    S = int(step_ids.max()) + 1
    H = gather_step_values(token_entropy, step_ids, S, "mean")
    for i in range(H.shape[0]):
        for s in range(S):
            hn = (H[i, s] - tok.min()) / (tok.max() - tok.min() + eps)
            adv *= torch.exp(-k * hn)  # scales every row, not step (i, s)
    return adv


def test_each_step_scaled_by_its_own_g_with_step_mean_entropy():
    # token entropies: τ1 step0 tokens [0.0, 0.4] (mean 0.2), step1 [1.0]; τ2 step0 [0.6, 0.6], step1 [0.2]
    ent = torch.tensor([[0.0, 0.4, 1.0, 0.0], [0.6, 0.6, 0.2, 0.0]])
    ids = torch.tensor([[0, 0, 1, -1], [0, 0, 1, -1]])
    Hs = gather_step_values(ent, ids, 2, "mean")
    assert Hs.flatten().tolist() == approx([0.2, 1.0, 0.6, 0.2], 1e-6)
    out = empg_advantages(Hs, A)
    tok = scatter_step_values(out.adv, ids)
    want = [1.4276, 1.4276, 0.5408, 0.0, -0.6696, -0.6696, -1.2988, 0.0]
    assert tok.flatten().tolist() == approx(want)
    bug = _buggy_verl_fork(ent, ids, A)
    assert (bug[ids >= 0] - tok[ids >= 0]).abs().max() > 0.1  # the buggy version gives other numbers


def test_fill_step_ids_attaches_eos_and_gaps():
    ids = torch.tensor([[-1, 0, 0, -1, 1, -1, -1], [-1, -1, -1, -1, -1, -1, -1], [2, -1, 3, -1, -1, -1, -1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    out = fill_step_ids(ids, mask)
    assert out.tolist() == [[0, 0, 0, 0, 1, 1, -1], [0, 0, -1, -1, -1, -1, -1], [2, 2, 3, -1, -1, -1, -1]]
