"""The loss of a minibatch, and its gradient, do not depend on how the minibatch is cut into micro-batches.

Four rollouts of different prompt and response lengths (so every micro-batch of 1 is padded differently from
the micro-batch of 4) from a tiny random model; RLModule.micro_loss with the minibatch's global token and
sequence counts, gradients accumulated with .backward() as the update loop does.
"""
from __future__ import annotations

import pytest
import torch

from steprl.algos.step import Step
from steprl.algos.base import Rewards
from steprl.models import packing
from steprl.train import build
from tests.helpers import assert_close_fp32, compose_train, decoder_terms

MAX_NEW = 16
COMMON = [
    "logger=none", "callbacks.progress_bar=null", "model=tiny", "torch_threads=1",
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "batch.prompts_per_step=2", "batch.samples_per_prompt=2", "batch.minibatch_size=4", "batch.micro_batch_size=4",
    f"rollout.max_new_tokens={MAX_NEW}",
    # prompts of 1 to 3 terms with operands up to 99 have different lengths
    "task.num_terms=[1,3]", "task.max_operand=99",
    # the random model samples nearly uniform bytes: 20 one-letter stop strings end rows at different lengths
    "rollout.stop=[a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t]",
    "algo.loss.entropy_coef=0.01",
]
MODES = [
    ("token-mean", None),
    ("seq-mean-token-mean", None),
    ("seq-mean-token-sum", None),
    ("seq-mean-token-sum-norm", MAX_NEW),
    ("seq-mean-token-sum-norm", None),  # null norm_len: the padded width, the same for every micro-batch
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # build() applies torch_threads=1


REWARDS = Rewards(outcome=torch.tensor([1.0, 0.0, 0.25, 1.0]), correct=torch.tensor([1.0, 0.0, 0.0, 1.0]))


def _prepare(tmp_path, extra: list[str], advantages: bool = True):
    cfg = compose_train([*COMMON, *extra], tmp_path)
    module, data, _ = build(cfg)
    samples = next(iter(data.train_dataloader()))
    ro = module.rollout(samples)
    ro = ro.select(torch.arange(len(ro)))  # plain tensors (the rollout ran in inference mode)
    assert len(ro) == 4
    assert len(set(ro.response_lengths.tolist())) > 1, ro.response_lengths
    assert len(set(ro.prompt_mask.sum(-1).tolist())) > 1
    # behaviour log-probs a little off the current policy so the PPO ratio is not 1 and some tokens clip
    T = ro.response_ids.shape[1]
    wiggle = 0.3 * torch.sin(1.7 * torch.arange(T)[None, :] + torch.arange(4)[:, None])
    ro.old_logp = module.logp_pass(module.policy, ro) + wiggle * ro.loss_mask
    if not advantages:  # PPO: GAE needs the critic's values first
        return module, ro, None
    adv, _ = module.advantages(Step([], ro, REWARDS))
    assert adv.abs().sum() > 0
    return module, ro, adv


def _loss_and_grads(module, ro, adv, micro: int, num_tokens=None, extras: dict | None = None):
    module.zero_grad(set_to_none=True)
    n_tok = ro.loss_mask.sum().clamp(min=1) if num_tokens is None else None
    total, clipped = 0.0, 0.0
    for start in range(0, len(ro), micro):
        idx = torch.arange(start, start + micro)
        mb = ro.select(idx)
        tokens = n_tok if n_tok is not None else mb.loss_mask.sum()
        mb_extras = {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in (extras or {}).items()}
        loss, stats = module.micro_loss(mb, adv[idx], mb_extras, tokens, len(ro))
        loss.backward()
        total += float(loss.detach())
        clipped += stats["train/clip_frac"]
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return total, grads, clipped


def _assert_same(module, ro, adv, a, b, extras: dict | None = None):
    """Same loss and gradients up to float32 rounding: each row's forward rounds differently in a micro-batch
    padded differently (one token's forward and a log-softmax: ``fwd`` terms), and the token sums are split."""
    (la, ga, _), (lb, gb, _) = a, b
    fwd = decoder_terms(module.policy.config, ro.input_ids.shape[1], vocab=True)
    tokens = int(ro.loss_mask.sum())
    # the loss sums per-token terms of either sign: its rounding is relative to their magnitudes, the same loss
    # with every advantage made positive (nothing cancels), not to the (smaller) loss
    magnitude = abs(_loss_and_grads(module, ro, adv.abs(), micro=len(ro), extras=extras)[0])
    assert magnitude > 0
    assert_close_fp32(la, lb, terms=fwd + tokens, scale=magnitude)
    assert ga.keys() == gb.keys() and len(ga) > 0
    scale = max(float(g.abs().max()) for g in gb.values())
    assert scale > 0
    for name in gb:  # the forward, the same chain backwards, and the sum over the tokens
        assert_close_fp32(ga[name], gb[name], terms=2 * fwd + tokens, scale=scale, msg=name)


@pytest.mark.parametrize("agg,norm_len", MODES)
def test_micro_batches_of_1_equal_one_of_4(agg, norm_len, tmp_path):
    module, ro, adv = _prepare(tmp_path, [f"algo.loss.agg={agg}",
                                          f"algo.loss.norm_len={'null' if norm_len is None else norm_len}"])
    assert module.loss_cfg["agg"] == agg and module.loss_cfg["norm_len"] == norm_len
    one = _loss_and_grads(module, ro, adv, micro=1)
    four = _loss_and_grads(module, ro, adv, micro=4)
    assert one[2] == four[2] > 0  # the same tokens are clipped, and some are
    _assert_same(module, ro, adv, one, four)
    two = _loss_and_grads(module, ro, adv, micro=2)
    _assert_same(module, ro, adv, two, four)
    if agg == "token-mean":
        # the comparison can tell: normalising each micro-batch by its own token count gives another loss
        local = _loss_and_grads(module, ro, adv, micro=1, num_tokens="local")
        assert local[0] != pytest.approx(four[0], rel=1e-3)


@pytest.mark.parametrize("agg,norm_len", MODES[:4])
def test_micro_batches_with_kl_in_the_loss(agg, norm_len, tmp_path):
    module, ro, adv = _prepare(tmp_path, [f"algo.loss.agg={agg}",
                                          f"algo.loss.norm_len={'null' if norm_len is None else norm_len}",
                                          "algo.kl.coef=0.1", "algo.kl.estimator=k3"])
    assert module.ref_policy is not None
    # move the reference away from the policy (a copy of it at start), else the KL and its gradient are 0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.ref_policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ro.ref_logp = module.logp_pass(module.ref_policy, ro)
    one = _loss_and_grads(module, ro, adv, micro=1)
    four = _loss_and_grads(module, ro, adv, micro=4)
    _assert_same(module, ro, adv, one, four)
    # the KL term is really in: without ref_logp the loss changes
    ro.ref_logp = None
    assert _loss_and_grads(module, ro, adv, micro=4)[0] != pytest.approx(four[0], rel=1e-4)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_ppo_value_loss_is_split_invariant_too(agg, tmp_path):
    """PPO adds the critic's clipped value loss per micro-batch (extras sliced per micro-batch, as update does)."""
    module, ro, _ = _prepare(tmp_path, ["algo=ppo", f"algo.loss.agg={agg}"], advantages=False)
    values = module.prepare(Step([], ro))["values"]
    with torch.no_grad():  # a critic that does not predict 0 everywhere, so the value loss has a real gradient
        module.critic.head.bias.fill_(0.3)
    adv, returns = module.advantages(Step([], ro, REWARDS, extras={"values": values}))
    assert returns is not None and adv.abs().sum() > 0
    extras = {"values": values, "returns": returns, "advantages": adv}
    one = _loss_and_grads(module, ro, adv, micro=1, extras=extras)
    four = _loss_and_grads(module, ro, adv, micro=4, extras=extras)
    assert any(n.startswith("critic.") for n in four[1])  # the value loss reaches the critic
    _assert_same(module, ro, adv, one, four, extras)


@pytest.mark.parametrize("agg,norm_len", MODES)
def test_packed_micro_batches_equal_padded(agg, norm_len, tmp_path):
    """``batch.packed``: micro-batches of 1 and of 4 packed rows give the loss and gradients of the padded
    micro-batch of 4 (the normalisers are the minibatch's counts, whatever the layout)."""
    module, ro, adv = _prepare(tmp_path, [f"algo.loss.agg={agg}", "batch.packed=true",
                                          f"algo.loss.norm_len={'null' if norm_len is None else norm_len}"])
    assert module.batch_cfg["packed"] is True
    assert packing.usable(module.policy, ro.attention_mask, ro.prompt_ids.shape[1])  # the packed path runs
    one = _loss_and_grads(module, ro, adv, micro=1)
    four = _loss_and_grads(module, ro, adv, micro=4)
    _assert_same(module, ro, adv, one, four)
    module.batch_cfg["packed"] = False
    padded = _loss_and_grads(module, ro, adv, micro=4)
    assert padded[2] == four[2] > 0  # the same tokens clip
    _assert_same(module, ro, adv, four, padded)


@pytest.mark.parametrize("packed", [True, False])
def test_a_zero_weight_micro_batch_adds_exactly_zero_gradient(packed, tmp_path):
    """The pass a rank runs when the ranks agreed on more token-budget micro-batches than it has rows for
    (``RLModule.zero_weight_loss``): every parameter the policy loss reaches gets a gradient (so DDP / FSDP2
    reduce it like any micro-batch's), exactly 0, and the accumulated gradient of a real micro-batch is
    unchanged to the last bit. The loss is 0 too."""
    module, ro, adv = _prepare(tmp_path, [f"batch.packed={str(packed).lower()}", "algo.loss.entropy_coef=0.01"])
    row = packing.zero_weight_row(torch.arange(4), (ro.prompt_mask.sum(-1) + ro.response_mask.sum(-1)).cpu())
    n_tok = ro.loss_mask.sum()
    module.zero_grad(set_to_none=True)
    zero = module.zero_weight_loss(ro.select(row), adv[row], {}, n_tok, 4)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    zero.backward()
    grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(bool((g == 0).all()) for g in grads.values())
    # on top of a real micro-batch's gradient: bit for bit the same
    _, real, _ = _loss_and_grads(module, ro, adv, micro=4)
    module.micro_loss(ro, adv, {}, n_tok, 4)[0].backward()
    module.zero_weight_loss(ro.select(row), adv[row], {}, n_tok, 4).backward()
    after = {f"policy.{n}": p.grad for n, p in module.policy.named_parameters() if p.requires_grad}
    assert any(bool(g.abs().sum() > 0) for g in after.values())
    for name, g in after.items():
        assert torch.equal(g, real[name]), name
