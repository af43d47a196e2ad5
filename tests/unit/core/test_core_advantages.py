"""Hand-computed tests for steprl.core.advantages."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.core import (
    discounted_returns,
    drgrpo_advantage,
    gae,
    group_mean_std,
    grpo_advantage,
    last_token_index,
    outcome_to_token_rewards,
    reinforce_pp_advantage,
    reinforce_pp_baseline_advantage,
    rloo_advantage,
)

# Non-contiguous, unequal groups: 7 -> {1, 2}, 3 -> {0, 4}, 9 -> {3} (singleton)
R = torch.tensor([1.0, 0.0, 2.0, 4.0, 3.0])
G = torch.tensor([7, 3, 7, 3, 9])
MEAN = [1.5, 2.0, 1.5, 2.0, 3.0]
STD7 = math.sqrt((0.5**2 + 0.5**2) / 1)  # 0.70711
STD3 = math.sqrt((2.0**2 + 2.0**2) / 1)  # 2.82843
STD = [STD7, STD3, STD7, STD3, 0.0]


def approx(xs, tol=1e-5):
    return pytest.approx(xs, abs=tol)


def test_group_mean_std():
    mean, std = group_mean_std(R, G)
    assert mean.tolist() == approx(MEAN)
    assert std.tolist() == approx(STD)


def test_grpo_group():
    out = grpo_advantage(R, G)
    exp = [(r - m) / (s + 1e-4) for r, m, s in zip(R.tolist(), MEAN, STD)]
    assert out.tolist() == approx(exp)


def test_grpo_batch_and_none():
    batch_std = math.sqrt((1 + 4 + 0 + 4 + 1) / 4)  # batch mean 2, unbiased var 10/4
    out = grpo_advantage(R, G, std_scale="batch")
    assert out.tolist() == approx([(r - m) / (batch_std + 1e-4) for r, m in zip(R.tolist(), MEAN)])
    assert grpo_advantage(R, G, std_scale="none").tolist() == approx([-0.5, -2.0, 0.5, 2.0, 0.0])


def test_grpo_bad_std_scale():
    with pytest.raises(ValueError, match="group.*batch.*none"):
        grpo_advantage(R, G, std_scale="global")


def test_grpo_spec_values():
    # OREAL spec 2.9.1: R = [+1,-1,-1,+1,-1,-1,-1,-1] -> GRPO [1.6202, -0.5401, ...]
    r = torch.tensor([1.0, -1, -1, 1, -1, -1, -1, -1])
    out = grpo_advantage(r, torch.zeros(8, dtype=torch.long), eps=1e-6)
    assert out[0].item() == pytest.approx(1.6202, abs=1e-3)
    assert out[1].item() == pytest.approx(-0.5401, abs=1e-3)
    # E-GRPO spec 3.6.2: R = [1, .15, 0, .075], eps 1e-6
    out = grpo_advantage(torch.tensor([1, 0.15, 0, 0.075]), torch.zeros(4, dtype=torch.long), eps=1e-6)
    assert out.tolist() == approx([1.4870, -0.3349, -0.6564, -0.4957], 1e-3)


def test_rloo_hand_and_spec():
    # group 7: 1-2, 2-1 ; group 3: 0-4, 4-0 ; singleton -> 0
    assert rloo_advantage(R, G).tolist() == approx([-1.0, -4.0, 1.0, 4.0, 0.0])
    # OREAL spec: n=8, k=2 -> 2(n-k)/(n-1) = 12/7, -2k/(n-1) = -4/7
    r = torch.tensor([1.0, -1, -1, 1, -1, -1, -1, -1])
    out = rloo_advantage(r, torch.zeros(8, dtype=torch.long))
    assert out.tolist() == approx([12 / 7, -4 / 7, -4 / 7, 12 / 7] + [-4 / 7] * 4)
    # PRIME spec: acc [1,0,1,0] -> [2/3, -2/3, 2/3, -2/3]
    out = rloo_advantage(torch.tensor([1.0, 0, 1, 0]), torch.tensor([0, 0, 0, 0]))
    assert out.tolist() == approx([2 / 3, -2 / 3, 2 / 3, -2 / 3])


def test_drgrpo():
    assert drgrpo_advantage(R, G).tolist() == approx([-0.5, -2.0, 0.5, 2.0, 0.0])


def test_integer_rewards_accepted():
    out = drgrpo_advantage(torch.tensor([1, 0, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert out.tolist() == approx([0.5, -0.5, 0.0, 0.0])


group_data = st.integers(1, 6).flatmap(
    lambda n_groups: st.lists(
        st.tuples(st.integers(0, n_groups - 1), st.floats(-10, 10, allow_nan=False)), min_size=1, max_size=24
    )
)


@settings(max_examples=80, deadline=None)
@given(data=group_data)
def test_group_baselines_are_zero_sum_and_sign_consistent(data):
    ids = torch.tensor([g * 13 + 5 for g, _ in data])  # arbitrary, non-contiguous ids
    r = torch.tensor([x for _, x in data], dtype=torch.float64)
    groups = {}
    for i, (g, x) in enumerate(data):
        groups.setdefault(g, []).append(i)
    for fn in (drgrpo_advantage, rloo_advantage, grpo_advantage):
        adv = fn(r, ids)
        for g, idx in groups.items():
            assert sum(adv[i].item() for i in idx) == pytest.approx(0.0, abs=1e-6)
            mu = sum(data[i][1] for i in idx) / len(idx)
            for i in idx:
                d = data[i][1] - mu
                if abs(d) > 1e-9:
                    assert math.copysign(1, adv[i].item()) == math.copysign(1, d)
    # RLOO = K/(K-1) * (r - mean) ; singletons 0
    adv = rloo_advantage(r, ids)
    for g, idx in groups.items():
        k = len(idx)
        mu = sum(data[i][1] for i in idx) / k
        for i in idx:
            loo = 0.0 if k == 1 else data[i][1] - (sum(data[j][1] for j in idx) - data[i][1]) / (k - 1)
            assert adv[i].item() == pytest.approx(loo, abs=1e-6)
            if k > 1:
                assert adv[i].item() == pytest.approx(k / (k - 1) * (data[i][1] - mu), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(data=group_data, seed=st.integers(0, 1000))
def test_group_advantages_are_permutation_equivariant(data, seed):
    ids = torch.tensor([g for g, _ in data])
    r = torch.tensor([x for _, x in data], dtype=torch.float64)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    for fn in (grpo_advantage, rloo_advantage):
        assert torch.allclose(fn(r, ids)[perm], fn(r[perm], ids[perm]))


# ---------- returns ----------

def test_discounted_returns_ppr_spec():
    # PPR spec 1.11.5: 10 tokens, rewards 2/3 @3, 0.4 @6, 1.0 @9 -> [2.0667 x4, 1.4 x3, 1.0 x3]
    r = torch.zeros(1, 10)
    r[0, 3], r[0, 6], r[0, 9] = 2 / 3, 0.4, 1.0
    out = discounted_returns(r, torch.ones(1, 10))
    assert out[0].tolist() == approx([2.0666667] * 4 + [1.4] * 3 + [1.0] * 3)


def test_discounted_returns_with_hole_and_gamma():
    r = torch.tensor([[1.0, 2.0, 9.0, 3.0, 7.0]])
    m = torch.tensor([[1, 1, 0, 1, 0]])  # position 2 is a tool observation, 4 is padding
    # gamma = 0.5: G3 = 3; G1 = 2 + .5*3 = 3.5; G0 = 1 + .5*3.5 = 2.75 ; skipped positions 0
    assert discounted_returns(r, m, gamma=0.5)[0].tolist() == approx([2.75, 3.5, 0.0, 3.0, 0.0])
    # gamma = 1: reversed cumsum of masked rewards
    assert discounted_returns(r, m)[0].tolist() == approx([6.0, 5.0, 0.0, 3.0, 0.0])


def _ref_returns(rews, mask, gamma):
    out, carry = [0.0] * len(rews), 0.0
    for t in reversed(range(len(rews))):
        if mask[t]:
            carry = rews[t] + gamma * carry
            out[t] = carry
    return out


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=6, max_size=6), min_size=1, max_size=4),
    gamma=st.sampled_from([1.0, 0.99, 0.5, 0.0]),
)
def test_discounted_returns_matches_python_reference(rows, gamma):
    r = torch.tensor([[x for x, _ in row] for row in rows], dtype=torch.float64)
    m = torch.tensor([[b for _, b in row] for row in rows])
    out = discounted_returns(r, m, gamma)
    for i, row in enumerate(rows):
        assert out[i].tolist() == approx(_ref_returns([x for x, _ in row], [b for _, b in row], gamma), 1e-9)


def test_reinforce_pp_hand():
    r = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # returns [[1,1,1],[0,0,-]]; masked values 1,1,1,0,0 : mean .6, var (3*.16 + 2*.36)/4 = .3
    s = math.sqrt(0.3 + 1e-8)
    out = reinforce_pp_advantage(r, m)
    assert out.tolist() == [approx([0.4 / s] * 3), approx([-0.6 / s, -0.6 / s, 0.0])]


def test_reinforce_pp_matches_prime_spec_whitened_returns():
    # PRIME spec 1.11.2 (code form): token r*4/3 - S/3 with S = -0.15, plus outcome RLOO on the last token.
    proc = [[0.2, 0.1, 0.3], [-0.1, -0.2], [0.0, 0.1, 0.2], [-0.3]]
    outcome_rloo = [2 / 3, -2 / 3, 2 / 3, -2 / 3]
    r = torch.zeros(4, 3)
    m = torch.zeros(4, 3)
    for i, row in enumerate(proc):
        for t, x in enumerate(row):
            r[i, t] = x * 4 / 3 + 0.15 / 3
            m[i, t] = 1
        r[i, len(row) - 1] += outcome_rloo[i]
    out = reinforce_pp_advantage(r, m)
    expected = [[1.0044, 0.7186, 0.5531], [-1.3269, -1.2517], [0.6434, 0.5983, 0.4328], [-1.372]]
    for i, row in enumerate(expected):
        assert out[i, : len(row)].tolist() == approx(row, 1e-3)


def test_reinforce_pp_baseline_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    m = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0]])
    # centred: [.5, -.5, 0, 0] -> token values .5 .5 | -.5 | 0 0 | 0
    vals = [0.5, 0.5, -0.5, 0.0, 0.0, 0.0]
    mu = sum(vals) / 6
    s = math.sqrt(sum((v - mu) ** 2 for v in vals) / 5 + 1e-8)
    out = reinforce_pp_baseline_advantage(rewards, groups, m)
    a, b, c = (0.5 - mu) / s, (-0.5 - mu) / s, (0 - mu) / s
    assert out.tolist() == [approx([a, a]), approx([b, 0.0]), approx([c, c]), approx([c, 0.0])]


# ---------- GAE ----------

def test_gae_hand():
    # gamma .9, lam .8: t2 d=1-.3=.7 A=.7 ; t1 d=.9*.3-.4=-.13 A=-.13+.72*.7=.374 ;
    # t0 d=.9*.4-.5=-.14 A=-.14+.72*.374=.12928 ; R = A + V
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert adv[0].tolist() == approx([0.12928, 0.374, 0.7])
    assert ret[0].tolist() == approx([0.62928, 0.774, 1.0])


def test_gae_skips_masked_positions_and_padding():
    # same numbers with a hole at t=1 (its reward and value are ignored) and right padding
    r = torch.tensor([[0.0, 5.0, 0.0, 1.0, 3.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    v = torch.tensor([[0.5, 9.0, 0.4, 0.3, 8.0], [0.5, 0.4, 0.3, 7.0, 7.0]])
    m = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]])
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8)
    assert adv.tolist() == [approx([0.12928, 0.0, 0.374, 0.7, 0.0]), approx([0.12928, 0.374, 0.7, 0.0, 0.0])]
    assert ret.tolist() == [approx([0.62928, 0.0, 0.774, 1.0, 0.0]), approx([0.62928, 0.774, 1.0, 0.0, 0.0])]


def test_gae_ppr_spec_equals_reward_to_go():
    r = torch.zeros(1, 10)
    r[0, 3], r[0, 6], r[0, 9] = 2 / 3, 0.4, 1.0
    adv, ret = gae(r, torch.zeros(1, 10), torch.ones(1, 10))
    assert adv[0].tolist() == approx([2.0666667] * 4 + [1.4] * 3 + [1.0] * 3)
    assert ret[0].tolist() == approx(adv[0].tolist())


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.booleans()), min_size=5, max_size=5),
        min_size=1, max_size=3,
    ),
    gamma=st.sampled_from([1.0, 0.9, 0.5]),
)
def test_gae_lambda_limits(rows, gamma):
    r = torch.tensor([[a for a, _, _ in row] for row in rows], dtype=torch.float64)
    v = torch.tensor([[b for _, b, _ in row] for row in rows], dtype=torch.float64)
    m = torch.tensor([[c for _, _, c in row] for row in rows])
    # lam = 1: A_t = G_t - V_t (Monte-Carlo), so returns are the discounted reward-to-go
    adv, ret = gae(r, v, m, gamma=gamma, lam=1.0)
    for i, row in enumerate(rows):
        g = _ref_returns([a for a, _, _ in row], [c for _, _, c in row], gamma)
        assert ret[i].tolist() == approx(g, 1e-9)
    # lam = 0: A_t = r_t + gamma V_next - V_t (one-step TD error)
    adv0, _ = gae(r, v, m, gamma=gamma, lam=0.0)
    for i, row in enumerate(rows):
        idx = [t for t, (_, _, c) in enumerate(row) if c]
        for k, t in enumerate(idx):
            v_next = row[idx[k + 1]][1] if k + 1 < len(idx) else 0.0
            assert adv0[i, t].item() == pytest.approx(row[t][0] + gamma * v_next - row[t][1], abs=1e-9)


def test_gae_outputs_carry_no_grad():
    v = torch.zeros(1, 3, requires_grad=True)
    adv, ret = gae(torch.ones(1, 3), v, torch.ones(1, 3))
    assert not adv.requires_grad and not ret.requires_grad


# ---------- outcome placement ----------

def test_outcome_to_token_rewards():
    m = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]])
    assert last_token_index(m).tolist() == [1, 2, -1]
    out = outcome_to_token_rewards(torch.tensor([1.0, 2.0, 3.0]), m)
    assert out.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]
