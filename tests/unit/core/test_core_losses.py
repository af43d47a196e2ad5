"""Hand-computed tests for steprl.core.losses."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.core import (
    AGG_MODES,
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    ppo_clip_loss,
    value_clip_loss,
)


def approx(xs, tol=1e-5):
    return pytest.approx(xs, abs=tol)


def _lse(xs):
    mx = max(xs)
    return mx + math.log(sum(math.exp(x - mx) for x in xs))


# ---------- log-probs / entropy ----------

LOGITS = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[-1.0, 4.0, 0.5], [2.0, -2.0, 0.0]]])
LABELS = torch.tensor([[2, 1], [0, 2]])
EXP_LOGP = [
    [3.0 - _lse([1, 2, 3]), -math.log(3)],  # 3 - 3.407606 = -0.407606
    [-1.0 - _lse([-1, 4, 0.5]), 0.0 - _lse([2, -2, 0])],
]


def test_logprobs_from_logits():
    out = logprobs_from_logits(LOGITS, LABELS)
    assert out.shape == (2, 2)
    assert out.tolist() == [approx(r) for r in EXP_LOGP]
    assert logprobs_from_logits(LOGITS, LABELS, chunk_size=1).tolist() == [approx(r) for r in EXP_LOGP]


def test_logprobs_non_contiguous_slice_and_chunks():
    big = torch.cat([LOGITS, torch.zeros(2, 1, 3)], dim=1).requires_grad_(True)  # [2, 3, 3]
    sliced = big[:, :-1]  # the usual logits[:, :-1] view: not contiguous
    assert not sliced.is_contiguous()
    for chunk in (None, 1, 2, 4, 100):
        assert logprobs_from_logits(sliced, LABELS, chunk_size=chunk).tolist() == [approx(r) for r in EXP_LOGP]
    logprobs_from_logits(sliced, LABELS, chunk_size=2).sum().backward()
    assert big.grad[:, -1].abs().sum() == 0 and big.grad[:, :-1].abs().sum() > 0
    # 2-D logits [T, V]
    assert logprobs_from_logits(LOGITS[0], LABELS[0], chunk_size=1).tolist() == approx(EXP_LOGP[0])


def test_logprobs_low_precision_upcasts():
    out = logprobs_from_logits(LOGITS.bfloat16(), LABELS, chunk_size=3)
    assert out.dtype == torch.float32
    assert out.tolist() == [approx(r, 2e-2) for r in EXP_LOGP]


def test_logprobs_gradient_is_onehot_minus_softmax():
    logits = torch.tensor([[[1.0, 2.0, 3.0]]], requires_grad=True)
    logprobs_from_logits(logits, torch.tensor([[2]])).sum().backward()
    z = _lse([1, 2, 3])
    p = [math.exp(x - z) for x in (1, 2, 3)]  # [.090031, .244728, .665241]
    assert logits.grad[0, 0].tolist() == approx([-p[0], -p[1], 1 - p[2]])


def test_entropy_from_logits():
    out = entropy_from_logits(LOGITS)
    exp = []
    for row in LOGITS.tolist():
        er = []
        for z in row:
            lz = _lse(z)
            er.append(-sum(math.exp(x - lz) * (x - lz) for x in z))
        exp.append(er)
    assert exp[0][1] == pytest.approx(math.log(3))  # uniform
    assert out.tolist() == [approx(r) for r in exp]
    assert entropy_from_logits(LOGITS.half()).tolist() == [approx(r, 1e-2) for r in exp]
    assert entropy_from_logits(LOGITS, chunk_size=None).tolist() == [approx(r) for r in exp]
    assert entropy_from_logits(LOGITS[:, :1], chunk_size=1).tolist() == [approx(r[:1]) for r in exp]


# ---------- KL ----------

LOGP = torch.tensor([-1.0, -0.5])
REF = torch.tensor([-1.2, -0.4])


def test_kl_kinds_values():
    # delta = ref - logp = [-0.2, 0.1]
    assert kl_penalty(LOGP, REF, "k1").tolist() == approx([0.2, -0.1])
    assert kl_penalty(LOGP, REF, "k2").tolist() == approx([0.02, 0.005])
    assert kl_penalty(LOGP, REF, "abs").tolist() == approx([0.2, 0.1])
    k3 = [math.exp(-0.2) + 0.2 - 1, math.exp(0.1) - 0.1 - 1]  # [0.018731, 0.005171]
    assert kl_penalty(LOGP, REF).tolist() == approx(k3)
    assert kl_penalty(LOGP, REF, "k3").tolist() == approx([0.0187, 0.0052], 1e-4)  # spec value
    assert kl_penalty(LOGP, REF, "k3+").tolist() == approx(k3)


def test_kl_aliases_and_errors():
    assert kl_penalty(LOGP, REF, "low_var_kl").tolist() == kl_penalty(LOGP, REF, "k3").tolist()
    assert kl_penalty(LOGP, REF, "mse").tolist() == kl_penalty(LOGP, REF, "k2").tolist()
    with pytest.raises(ValueError, match=r"k1.*k2.*k3.*abs.*k3\+"):
        kl_penalty(LOGP, REF, "full")


def test_k3_clamp():
    # delta = 5: e^5 - 6 = 142.4 -> 10 ; delta = 50 -> clamp delta to 20, still -> 10
    out = kl_penalty(torch.tensor([0.0, 0.0]), torch.tensor([5.0, 50.0]), "k3")
    assert out.tolist() == [10.0, 10.0]


def test_k3_plus_is_straight_through_k2_gradient():
    lp = LOGP.clone().requires_grad_(True)
    kl_penalty(lp, REF, "k3+").sum().backward()
    assert lp.grad.tolist() == approx([0.2, -0.1])  # d/dlogp of ½(logp-ref)² = logp - ref
    lp3 = LOGP.clone().requires_grad_(True)
    kl_penalty(lp3, REF, "k3").sum().backward()
    # d/dlogp (e^d - d - 1), d = ref - logp -> 1 - e^d
    assert lp3.grad.tolist() == approx([1 - math.exp(-0.2), 1 - math.exp(0.1)])


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-15, 0), b=st.floats(-15, 0))
def test_k2_k3_nonnegative_zero_iff_equal(a, b):
    lp, ref = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    for kind in ("k2", "k3", "abs", "k3+"):
        v = kl_penalty(lp, ref, kind).item()
        assert v >= 0.0
        if a == b:
            assert v == 0.0
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(a - b)


# ---------- PPO clip ----------

def _ppo_case(dual_clip=None, eps_high=None):
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.5, 1.5, 5.0, 5.0], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, -2.0, 2.0], dtype=torch.float64)
    old = torch.zeros_like(ratio)
    return ppo_clip_loss(ratio.log(), old, adv, 0.2, eps_high, dual_clip)


def test_ppo_clip_hand():
    loss, clipped = _ppo_case()
    # 1.5,A=1: pg1=-1.5 pg2=-1.2 -> -1.2 clipped | 0.5,A=1: -.5 vs -.8 -> -.5
    # 1.1,A=-1: 1.1 vs 1.1 -> 1.1             | 0.5,A=-1: .5 vs .8 -> .8 clipped
    # 1.5,A=-1: 1.5 vs 1.2 -> 1.5             | 5,A=-2: 10 vs 2.4 -> 10 | 5,A=2: -10 vs -2.4 -> -2.4 clipped
    assert loss.tolist() == approx([-1.2, -0.5, 1.1, 0.8, 1.5, 10.0, -2.4])
    assert clipped.tolist() == [True, False, False, True, False, False, True]


def test_ppo_clip_higher():
    loss, clipped = _ppo_case(eps_high=0.28)
    # upper bound 1.28: case 1 -> -1.28 ; case 7 -> -2*1.28 = -2.56 ; lower bound unchanged (.8)
    assert loss.tolist() == approx([-1.28, -0.5, 1.1, 0.8, 1.5, 10.0, -2.56])
    assert clipped.tolist() == [True, False, False, True, False, False, True]


def test_ppo_dual_clip():
    loss, clipped = _ppo_case(dual_clip=3.0)
    # only the A<0 case with loss 10 > -A*c = 6 changes ; A>0 rows untouched
    assert loss.tolist() == approx([-1.2, -0.5, 1.1, 0.8, 1.5, 6.0, -2.4])
    assert clipped.tolist() == [True, False, False, True, False, True, True]
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="> 1"):
            _ppo_case(dual_clip=bad)


def test_ppo_gradients():
    lp = torch.tensor([1.5, 0.5]).log().requires_grad_(True)
    loss, _ = ppo_clip_loss(lp, torch.zeros(2), torch.tensor([1.0, 1.0]))
    loss.sum().backward()
    # clipped token: no gradient ; unclipped: d(-A e^{lp})/dlp = -A * ratio = -0.5
    assert lp.grad.tolist() == approx([0.0, -0.5])


def test_value_clip_loss():
    v, old, ret = torch.tensor([1.0, 0.3]), torch.tensor([0.0, 0.0]), torch.tensor([0.8, 1.0])
    # token 0: (1-.8)^2=.04 vs (clip->.5 - .8)^2=.09 -> .045 ; token 1: .49 vs .49 -> .245
    assert value_clip_loss(v, old, ret, 0.5).tolist() == approx([0.045, 0.245])
    assert value_clip_loss(v, old, ret, None).tolist() == approx([0.02, 0.245])


# ---------- aggregation ----------

L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
LM = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_aggregate_modes_hand():
    assert aggregate_loss(L, LM).item() == pytest.approx(7 / 3)  # (1+2+4)/3
    assert aggregate_loss(L, LM, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate_loss(L, LM, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    assert aggregate_loss(L, LM, "seq-mean-token-sum-norm").item() == pytest.approx(7 / (2 * 3))
    assert aggregate_loss(L, LM, "seq-mean-token-sum-norm", norm_len=10).item() == pytest.approx(7 / 20)


def test_aggregate_global_counts():
    assert aggregate_loss(L, LM, num_tokens=7).item() == pytest.approx(1.0)
    assert aggregate_loss(L, LM, num_tokens=torch.tensor(14)).item() == pytest.approx(0.5)
    assert aggregate_loss(L, LM, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(5.5 / 4)
    assert aggregate_loss(L, LM, "seq-mean-token-sum", num_seqs=7).item() == pytest.approx(1.0)
    assert aggregate_loss(L, LM, "seq-mean-token-sum-norm", num_seqs=7, norm_len=2).item() == pytest.approx(0.5)


def test_aggregate_empty_rows_no_nan():
    loss = torch.cat([L, torch.full((1, 3), float("nan"))])
    mask = torch.cat([LM, torch.zeros(1, 3, dtype=LM.dtype)])
    assert aggregate_loss(loss, mask).item() == pytest.approx(7 / 3)
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(5.5 / 3)
    for mode in AGG_MODES:
        v = aggregate_loss(loss, torch.zeros_like(mask), mode)
        assert v.item() == 0.0


def test_aggregate_bad_mode():
    with pytest.raises(ValueError, match="token-mean.*seq-mean-token-mean.*seq-mean-token-sum-norm"):
        aggregate_loss(L, LM, "sample-mean")


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=6, max_size=6), min_size=1, max_size=8
    ),
    cuts=st.lists(st.integers(1, 7), max_size=4),
    mode=st.sampled_from(AGG_MODES),
)
def test_aggregate_invariant_to_micro_batch_split(rows, cuts, mode):
    """Σ over micro-batches with global counts == value on the whole minibatch; each micro-batch is also
    trimmed to its own longest valid length (dynamic padding), so only norm_len pins the Dr.GRPO constant."""
    loss = torch.tensor([[x for x, _ in r] for r in rows], dtype=torch.float64)
    mask = torch.tensor([[b for _, b in r] for r in rows])
    n, t = loss.shape
    # plain-Python value of the whole minibatch
    lens = [sum(b for _, b in r) for r in rows]
    sums = [sum(x for x, b in r if b) for r in rows]
    tot_tokens = sum(lens)
    if mode == "token-mean":
        expected = sum(sums) / tot_tokens if tot_tokens else 0.0
    elif mode == "seq-mean-token-mean":
        expected = sum(s / k for s, k in zip(sums, lens) if k) / n
    elif mode == "seq-mean-token-sum":
        expected = sum(sums) / n
    else:
        expected = sum(sums) / (n * t)
    whole = aggregate_loss(loss, mask, mode)
    assert whole.item() == pytest.approx(expected, abs=1e-9)
    bounds = sorted({c for c in cuts if c < n} | {0, n})
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        mb_mask = mask[a:b]
        width = max(int(last) + 1 for last in torch.where(mb_mask.bool(), torch.arange(t), -1).amax(-1)) or 1
        part = aggregate_loss(loss[a:b, :width], mb_mask[:, :width], mode,
                              num_tokens=mask.sum(), num_seqs=n, norm_len=t)
        assert torch.isfinite(part)
        total += part.item()
    assert total == pytest.approx(whole.item(), abs=1e-9)
