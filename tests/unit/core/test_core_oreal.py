"""Hand-computed tests for steprl.core.oreal (Lyu et al., 2025: the OREAL objective's terms, computed by hand)."""
import math

import pytest
import torch

from steprl.core import (
    kl_penalty,
    oreal_importance_weights,
    oreal_pair_select,
    oreal_policy_loss,
    oreal_rewards,
    oreal_rm_loss,
    oreal_shaped_advantage,
)

R8 = torch.tensor([1.0, -1, -1, 1, -1, -1, -1, -1])  # n = 8, k = 2


def approx(xs, tol=1e-4):
    return pytest.approx(xs, abs=tol)


def test_rewards_are_plus_minus_one_and_truncated_is_wrong():
    correct = torch.tensor([1.0, 0.0, 1.0, 0.5])
    trunc = torch.tensor([False, False, True, False])
    assert oreal_rewards(correct, trunc).tolist() == [1.0, -1.0, -1.0, -1.0]
    assert oreal_rewards(correct, trunc, signed=False).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_reward_shaping_rloo_and_grpo():
    """§2.9 test 1: RLOO A = 2(n-k)/(n-1) = 1.7143 for positives, -2k/(n-1) = -0.5714 for negatives;
    GRPO gives [1.6202, -0.5401, ...]."""
    gid = torch.zeros(8, dtype=torch.long)
    rloo = oreal_shaped_advantage(R8, gid, "rloo")
    assert rloo.tolist() == approx([2 * 6 / 7 if r > 0 else -4 / 7 for r in R8.tolist()])
    assert rloo.tolist() == approx([1.7143 if r > 0 else -0.5714 for r in R8.tolist()])
    grpo = oreal_shaped_advantage(R8, gid, "grpo")
    assert grpo.tolist() == approx([1.6202 if r > 0 else -0.5401 for r in R8.tolist()])
    # 0/1 rewards (the paper's) give half the ±1 RLOO advantage
    assert oreal_shaped_advantage((R8 + 1) / 2, gid, "rloo").tolist() == approx((rloo / 2).tolist(), 1e-6)
    with pytest.raises(ValueError, match="shaping"):
        oreal_shaped_advantage(R8, gid, "ppo")


def test_pair_select_keeps_one_positive_and_one_negative_per_mixed_group():
    """§2.9 test 2: groups with pass rate 0 or 1 vanish; every other group gives exactly 1 + 1; the
    advantages of the kept rows are those of the unfiltered group."""
    r = torch.cat([R8, -torch.ones(8), torch.ones(8), torch.tensor([1.0, 1, 1, -1, -1, 1, 1, 1])])
    gid = torch.arange(4).repeat_interleave(8)
    adv = oreal_shaped_advantage(r, gid)
    for seed in range(5):
        keep = oreal_pair_select(r, gid, torch.Generator().manual_seed(seed))
        assert gid[keep].tolist() == [0, 0, 3, 3]
        assert sorted(r[keep[:2]].tolist()) == [-1.0, 1.0] and sorted(r[keep[2:]].tolist()) == [-1.0, 1.0]
        kept_adv = sorted(adv[keep].tolist())
        # group 0: k=2 of 8 -> +12/7, -4/7; group 3: k=6 of 8 -> +4/7, -12/7
        assert kept_adv == approx(sorted([12 / 7, -4 / 7, 4 / 7, -12 / 7]))
    picks = {tuple(oreal_pair_select(r, gid, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(picks) > 1  # the choice is random


def test_importance_weights_prefix_mean():
    """§2.9 test 3: w = [0, 2, -2, -4, 1] -> prefix means [0, 1, 0, -1, -.6] -> σ [.5, .7311, .5, .2689, .3543]
    -> w+ = [0, .4621, 0, 0, 0], w- = [0, 0, 0, .4621, .2913]; no gradient; padding 0."""
    w = torch.tensor([[0.0, 2.0, -2.0, -4.0, 1.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    wp, wn = oreal_importance_weights(w, mask)
    assert wp[0].tolist() == approx([0, 0.4621, 0, 0, 0, 0])
    assert wn[0].tolist() == approx([0, 0, 0, 0.4621, 0.2913, 0])
    assert not wp.requires_grad and not wn.requires_grad


def test_token_rm_loss_is_sequence_level_bce():
    """§2.9 test 4: mean logit -0.6, label 1 -> BCE 1.03749; a zero head gives ln 2 and all weights 0. A
    per-token BCE would give a different number (rlhf-book #505)."""
    w = torch.tensor([[0.0, 2.0, -2.0, -4.0, 1.0]])
    mask = torch.ones_like(w, dtype=torch.bool)
    loss = oreal_rm_loss(w, mask, torch.tensor([1.0]))
    assert float(loss) == pytest.approx(1.03749, abs=1e-5)
    per_token = torch.nn.functional.binary_cross_entropy_with_logits(w, torch.ones_like(w))
    assert abs(float(per_token) - float(loss)) > 0.1
    zero = torch.zeros(3, 4)
    assert float(oreal_rm_loss(zero, torch.ones(3, 4), torch.tensor([1.0, 0.0, 1.0]))) == pytest.approx(math.log(2))
    wp, wn = oreal_importance_weights(zero, torch.ones(3, 4))
    assert (wp == 0).all() and (wn == 0).all()


def test_k3_kl_values():
    """§2.9 test 5: logp [-1, -.5], ref [-1.2, -.4] -> k3 [0.0187, 0.0052]; 0 iff equal."""
    logp, ref = torch.tensor([-1.0, -0.5]), torch.tensor([-1.2, -0.4])
    assert kl_penalty(logp, ref, "k3").tolist() == approx([0.0187, 0.0052])
    assert kl_penalty(ref, ref, "k3").tolist() == [0.0, 0.0]
    # inside the OREAL loss: kl_coef * Σ k3 / N_all
    _, parts = oreal_policy_loss(logp[None], torch.zeros(1), torch.tensor([True]), torch.ones(1, 2),
                                 torch.zeros(1, 2), torch.zeros(1, 2), 2, 0, 2, ref_logp=ref[None], kl_coef=0.01)
    assert float(parts["kl"]) == pytest.approx(0.01 * (0.018731 + 0.005171) / 2, abs=1e-7)


def test_negative_loss_value_and_gradient():
    """§2.9 test 6: ρ = exp(logp - sg(logp)) is 1 in value and d loss / d logp_t = -(A w-_t) η / N_neg."""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    w_neg = torch.tensor([[0.2, 0.0, 0.9]])
    A, eta, n_neg = -0.5714, 0.5, 7.0
    loss, parts = oreal_policy_loss(logp, torch.tensor([A]), torch.tensor([False]), torch.ones(1, 3),
                                    torch.zeros(1, 3), w_neg, n_pos=5, n_neg=n_neg, n_all=12, eta=eta, kl_coef=0.0)
    assert float(loss) == pytest.approx(-A * (0.2 + 0.9) / n_neg * eta, abs=1e-7)
    loss.backward()
    assert logp.grad[0].tolist() == approx([-(A * w) * eta / n_neg for w in w_neg[0].tolist()], 1e-7)
    assert (logp.grad > -1e-12).all()  # minimising lowers the log-prob of bad tokens (gradient >= 0)


def test_positive_loss_is_weighted_nll_times_advantage_or_plain_bc():
    logp = torch.tensor([[-1.0, -2.0]])
    w_pos = torch.tensor([[0.5, 1.0]])
    args = (torch.tensor([1.7143]), torch.tensor([True]), torch.ones(1, 2), w_pos, torch.zeros(1, 2))
    code, _ = oreal_policy_loss(logp, *args, n_pos=4, n_neg=1, n_all=5, kl_coef=0.0)
    paper, _ = oreal_policy_loss(logp, *args, n_pos=4, n_neg=1, n_all=5, kl_coef=0.0, pos_mult_adv=False)
    assert float(code) == pytest.approx((0.5 * 1 + 1.0 * 2) * 1.7143 / 4, abs=1e-6)
    assert float(paper) == pytest.approx((0.5 * 1 + 1.0 * 2) / 4, abs=1e-6)


def test_loss_is_invariant_to_micro_batch_splits():
    """§2.9 test 7: global token counts make the sum over micro-batches equal the whole batch, value and
    gradient."""
    g = torch.Generator().manual_seed(0)
    N, T = 6, 5
    base = torch.randn(N, T, generator=g)
    mask = torch.rand(N, T, generator=g) > 0.3
    mask[:, 0] = True
    positive = torch.tensor([True, False, True, False, False, True])
    adv = torch.randn(N, generator=g)
    wp, wn = oreal_importance_weights(torch.randn(N, T, generator=g), mask)
    ref = torch.randn(N, T, generator=g)
    n_pos = float(mask[positive].sum())
    n_neg = float(mask[~positive].sum())
    n_all = float(mask.sum())

    def run(splits):
        x = base.clone().requires_grad_(True)
        total = 0.0
        for idx in splits:
            loss, _ = oreal_policy_loss(x[idx], adv[idx], positive[idx], mask[idx], wp[idx], wn[idx],
                                        n_pos, n_neg, n_all, ref_logp=ref[idx], kl_coef=0.01)
            loss.backward()
            total += float(loss)
        return total, x.grad

    whole, g_whole = run([torch.arange(N)])
    parts, g_parts = run([torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3, 4, 5])])
    assert parts == pytest.approx(whole, abs=1e-6)
    assert torch.allclose(g_whole, g_parts, atol=1e-7)


def test_oreal_kl_has_no_clamp_by_default():
    """Issue 15 item 6: a token 3 nats below the reference (d = ref - logp = 3): plain k3 = e^3 - 3 - 1 = 16.0855
    with gradient d k3 / d logp = -(e^3 - 1) = -19.0855; verl's clamp caps it at 10 with no gradient at all."""
    logp = torch.tensor([[-3.0]], requires_grad=True)
    ref = torch.zeros(1, 1)
    k = kl_penalty(logp, ref, "k3", clamp=False)
    k.sum().backward()
    assert float(k) == pytest.approx(16.085537, rel=1e-6) and float(logp.grad) == pytest.approx(-19.085537, rel=1e-6)
    logp.grad = None
    kc = kl_penalty(logp, ref, "k3")
    kc.sum().backward()
    assert float(kc) == 10.0 and float(logp.grad) == 0.0
    # OREAL's loss: kl_coef * sum k3 / N_all, unclamped unless asked
    _, parts = oreal_policy_loss(logp.detach(), torch.zeros(1), torch.tensor([True]), torch.ones(1, 1),
                                 torch.zeros(1, 1), torch.zeros(1, 1), 1, 0, 1, ref_logp=ref, kl_coef=0.01)
    assert float(parts["kl"]) == pytest.approx(0.01 * 16.085537, rel=1e-6)


def test_algo_oreal_defaults_to_the_plain_k3(tmp_path):
    from tests.helpers import compose_train

    cfg = compose_train(["algo=oreal", "logger=none"], tmp_path)
    assert cfg.algo.kl.clamp is False and cfg.algo.kl.estimator == "k3"
    assert compose_train(["algo=grpo", "logger=none"], tmp_path).algo.kl.clamp is True
