"""Hand-computed tests for steprl.core.prime (Cui et al., 2025: the implicit process reward, Eq. 3, and the RLOO returns, Eq. 5)."""
import pytest
import torch

from steprl.core import (
    implicit_process_rewards,
    masked_whiten,
    prime_batch_norm,
    prime_grpo_returns,
    prime_reinforce_returns,
    prime_rloo_process,
    prime_rloo_returns,
    prm_abs_acc,
    prm_ce_loss,
    prm_dpo_loss,
    prm_pairwise_acc,
)
from tests.helpers import assert_close_fp32


def approx(xs, tol=1e-4):
    if xs and isinstance(xs[0], list):
        xs = [v for r in xs for v in r]
    return pytest.approx(xs, abs=tol)


def tl(x: torch.Tensor) -> list[float]:
    return x.flatten().tolist()


def rows(x: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    return [[round(v, 6) for v, m in zip(r, mr) if m] for r, mr in zip(x.tolist(), mask.tolist())]


def flat(x):
    return [v for r in x for v in r]


# §1.11 test 2: K = 4, lengths 3, 2, 3, 1; outcome [1, 0, 1, 0]
R = torch.tensor([[0.2, 0.1, 0.3], [-0.1, -0.2, 0.0], [0.0, 0.1, 0.2], [-0.3, 0.0, 0.0]])
M = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
ACC = torch.tensor([1.0, 0.0, 1.0, 0.0])
GID = torch.zeros(4, dtype=torch.long)


def test_outcome_rloo_is_plus_minus_two_thirds():
    """§1.11 test 1: acc [1,0,1,0] -> outcome advantage [+2/3, -2/3, +2/3, -2/3] on every token (γ = 1)."""
    mask = torch.ones(4, 2, dtype=torch.bool)
    adv, ret = prime_rloo_returns(torch.zeros(4, 2), ACC, mask, GID, whiten=False)
    assert tl(adv) == approx([[2 / 3] * 2, [-2 / 3] * 2, [2 / 3] * 2, [-2 / 3] * 2])
    assert torch.equal(adv, ret)


@pytest.mark.parametrize("form,expected", [
    ("paper", [[0.3167, 0.2167, 0.4167], [-0.1, -0.2], [0.0833, 0.1833, 0.2833], [-0.35]]),
    ("code", [[0.3167, 0.1833, 0.45], [-0.0833, -0.2167], [0.05, 0.1833, 0.3167], [-0.35]]),
])
def test_process_rloo_both_forms(form, expected):
    out = prime_rloo_process(R, M, GID, form)
    assert flat(rows(out, M)) == approx(flat(expected))
    assert (out[~M] == 0).all()


def test_returns_to_go_code_and_paper_forms_agree_at_t0_only():
    adv_c, ret_c = prime_rloo_returns(R, ACC, M, GID, form="code", whiten=False)
    _, ret_p = prime_rloo_returns(R, ACC, M, GID, form="paper", whiten=False)
    assert flat(rows(ret_c, M)) == approx(flat([[1.6167, 1.3, 1.1167], [-0.9667, -0.8833],
                                                [1.2167, 1.1667, 0.9833], [-1.0167]]))
    assert rows(ret_p, M)[0] == approx([1.6167, 1.3, 1.0833])
    assert ret_c[:, 0].tolist() == approx(ret_p[:, 0].tolist(), 1e-6)
    assert not torch.allclose(ret_c[0, 2], ret_p[0, 2])
    assert torch.equal(adv_c, ret_c)


def test_code_form_is_whitened_over_the_batch():
    adv, ret = prime_rloo_returns(R, ACC, M, GID, form="code", whiten=True)
    assert flat(rows(adv, M)) == approx(flat([[1.0044, 0.7186, 0.5531], [-1.3269, -1.2517],
                                              [0.6434, 0.5983, 0.4328], [-1.372]]))
    assert torch.allclose(adv, masked_whiten(ret, M) * M)


def test_rloo_groups_are_separate_and_need_not_be_contiguous():
    """Two interleaved groups give the same result as each group alone."""
    gid = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    r2, m2, acc2 = R.repeat_interleave(2, 0), M.repeat_interleave(2, 0), ACC.repeat_interleave(2)
    _, ret = prime_rloo_returns(r2, acc2, m2, gid, whiten=False)
    _, ret1 = prime_rloo_returns(R, ACC, M, GID, whiten=False)
    assert torch.allclose(ret[0::2], ret1) and torch.allclose(ret[1::2], ret1)


def test_source_gammas_and_coefficients():
    """γ discounts each source's return separately; coefficients weight the sources."""
    mask = torch.ones(2, 2, dtype=torch.bool)
    proc = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # m = [1, 0]; code form K=2: r*2 - S = [[1, 1], [-1, -1]]
    _, ret = prime_rloo_returns(proc, torch.tensor([1.0, 0.0]), mask, torch.zeros(2, dtype=torch.long),
                                gamma_process=0.5, gamma_outcome=1.0, process_coef=2.0, whiten=False)
    # process returns [[1 + .5, 1], [-1.5, -1]] x 2; outcome RLOO [+1, -1] on every token
    assert tl(ret) == approx([[4.0, 3.0], [-4.0, -3.0]])


def test_batch_norm_makes_the_largest_return_to_go_one_and_beta_cancels():
    """§1.11 test 3."""
    s = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])
    out = prime_batch_norm(s)
    assert tl(out) == approx([[0.25, -0.5, 1.0], [0.5, 0.5, 0.0]], 1e-5)
    assert torch.allclose(prime_batch_norm(10 * s), out, atol=1e-6)


def test_implicit_rewards_granularities():
    q = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    assert tl(implicit_process_rewards(q, m, 0.1, "token")) == approx([[.1, .2, .3], [.4, .5, 0]], 1e-6)
    assert tl(implicit_process_rewards(q, m, 0.1, "token_but_last")) == approx([[.1, .2, 0], [.4, 0, 0]], 1e-6)
    assert tl(implicit_process_rewards(q, m, 0.1, "whole")) == approx([[0, 0, .6], [0, .9, 0]], 1e-6)
    with pytest.raises(ValueError, match="granularity"):
        implicit_process_rewards(q, m, 0.1, "step")


def test_prm_ce_loss_hand_value_and_gradient_only_through_phi():
    """§1.11 test 4: β = 0.05, Σq = [4, -2, 0, 1], labels [1, 0, 1, 0] -> mean BCE 0.66354."""
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    logp_ref = torch.tensor([[-1.0, -2.0], [-0.5, -9.0], [-1.0, -1.0], [-3.0, -1.0]], requires_grad=False)
    q_target = torch.tensor([[3.0, 1.0], [-2.0, 0.0], [0.5, -0.5], [0.25, 0.75]])  # row sums 4, -2, 0, 1
    logp_phi = (logp_ref + q_target).clone().requires_grad_(True)
    loss = prm_ce_loss(logp_phi - logp_ref, mask, ACC, beta=0.05)
    assert float(loss) == pytest.approx(0.66354, abs=1e-5)
    loss.backward()
    assert logp_phi.grad is not None and logp_phi.grad[1, 1] == 0  # padding gets no gradient
    assert logp_ref.grad is None
    # micro-batch split with the global row count sums to the same loss
    halves = sum(prm_ce_loss((logp_phi - logp_ref)[i:i + 2], mask[i:i + 2], ACC[i:i + 2], 0.05, num_seqs=4)
                 for i in (0, 2))
    # two orders of the same float32 sums: over the 4 rows, over each row's 2 tokens, and the BCE's log / exp
    assert_close_fp32(float(halves), float(loss), terms=4 + 2 + 2)


def test_prm_dpo_loss_hand_value():
    """Detached DPO: the 'other' Q is β·mean Σq of the group members with a lower (correct row) / higher
    (wrong row) outcome. Σq = [4, -2, 0, 1], outcome [1, 0, 1, 0], β = 0.05: margins
    [.2+.025, -(-.1-.1), 0+.025, -(.05-.1)] = [.225, .2, .025, .05]; -log σ(x) = [.586962, .598139, .680725, .66846]."""
    q = torch.tensor([[4.0], [-2.0], [0.0], [1.0]])
    mask = torch.ones(4, 1, dtype=torch.bool)
    group_q = torch.tensor([4.0, -2.0, 0.0, 1.0]).expand(4, 4)
    group_o = ACC.expand(4, 4)
    loss = prm_dpo_loss(q, mask, ACC, group_q, group_o, beta=0.05)
    assert float(loss) == pytest.approx(0.633571, abs=1e-5)
    # a group without an opposite outcome falls back to other = 0: -log σ(±β Σq)
    one = prm_dpo_loss(q[:1], mask[:1], ACC[:1], torch.tensor([[4.0]]), torch.tensor([[1.0]]), beta=0.05)
    assert float(one) == pytest.approx(0.598139, abs=1e-5)


def test_prm_accuracy_metrics():
    scores = torch.tensor([4.0, -2.0, 0.0, 1.0, 3.0, 1.0])
    outcome = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    gid = torch.tensor([0, 0, 0, 0, 1, 1])
    # group 0: pairs (0,1) (0,3) (1,2) ordered right, (2,3) wrong -> 0.75; group 1: no differing pair -> 0.5
    assert float(prm_pairwise_acc(scores, outcome, gid)) == pytest.approx(0.625)
    # signs: + + (ok), - - (ok), 0 vs + (no), + vs - (no), + + (ok), + + (ok)
    assert float(prm_abs_acc(scores, outcome)) == pytest.approx(4 / 6)
    # soft (code) outcomes weigh pairs by |Δ|: (0,1) Δ=.5 right, (0,2) Δ=1 wrong, (1,2) Δ=.5 wrong -> .5 / 2
    soft = prm_pairwise_acc(torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 0.5, 0.0]), torch.zeros(3, dtype=torch.long))
    assert float(soft) == pytest.approx(0.5 / 2.0)


def test_prm_pairwise_acc_counts_a_tie_as_half():
    """A fresh PRM scores every response 0: chance (0.5) whichever order the group's rows come in (verl's rule
    gave 1.0 for wrong-first rows and 0.0 for right-first ones)."""
    gid = torch.zeros(4, dtype=torch.long)
    zero = torch.zeros(4)
    assert float(prm_pairwise_acc(zero, torch.tensor([0.0, 0.0, 1.0, 1.0]), gid)) == pytest.approx(0.5)
    assert float(prm_pairwise_acc(zero, torch.tensor([1.0, 1.0, 0.0, 0.0]), gid)) == pytest.approx(0.5)
    # scores [1, 1, 0], outcome [1, 0, 0]: (0,1) tied -> 1/2, (0,2) ordered right -> 1, (1,2) equal outcomes
    # (no weight): (0.5 + 1) / 2
    part = prm_pairwise_acc(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3, dtype=torch.long))
    assert float(part) == pytest.approx(0.75)


def test_fresh_prm_gives_zero_rewards_and_whitened_outcome_rloo():
    """§1.11 test 5: π_φ == π_ref -> every process reward is 0 and the advantage is whitened outcome RLOO."""
    logp = torch.randn(4, 3)
    r = prime_batch_norm(implicit_process_rewards(logp - logp, M, 0.05), M)
    assert (r == 0).all()
    adv, _ = prime_rloo_returns(r, ACC, M, GID, form="code", whiten=True)
    expected = masked_whiten(torch.tensor([2 / 3, -2 / 3, 2 / 3, -2 / 3])[:, None].expand(4, 3), M) * M
    assert torch.allclose(adv, expected, atol=1e-6)


# GRPO / REINFORCE with PRIME (paper App. B.3, Eq. 7 and 8): K = 3, lengths 2, 1, 2, outcome [1, 0, 0]
R3 = torch.tensor([[0.2, 0.4], [0.3, 0.0], [-0.1, 0.1]])
M3 = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
O3 = torch.tensor([1.0, 0.0, 0.0])
G3 = torch.zeros(3, dtype=torch.long)


def test_grpo_with_prime():
    """Averages a = [.3, .3, 0]: mean .2, std sqrt(.03) = .173205; outcome mean 1/3, std .57735.
    Row 0: process (0, .2)/.1732 -> returns [1.1547, 1.1547] + outcome 1.1547 -> [2.3094, 2.3094];
    row 1: .57735 - .57735 = 0; row 2: (-.3, -.1)/.1732 -> returns [-2.3094, -.57735] - .57735."""
    adv, _ = prime_grpo_returns(R3, O3, M3, G3)
    assert flat(rows(adv, M3)) == approx([2.3094, 2.3094, 0.0, -2.8868, -1.1547])


def test_reinforce_with_prime():
    adv, _ = prime_reinforce_returns(R3, O3, M3)
    assert flat(rows(adv, M3)) == approx([1.6, 1.4, 0.3, 0.0, 0.1], 1e-6)
