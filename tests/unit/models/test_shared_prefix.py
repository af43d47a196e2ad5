"""steprl.models.shared_prefix: the update's forward with each distinct prompt computed once gives the same
log-probs, entropies and gradients as the plain forward over [prompt, response] rows."""
from __future__ import annotations

import pytest
import torch

from steprl.algos.base import RLModule
from steprl.models.shared_prefix import prompt_groups, shared_prompt_logits, supported, unsupported_reason
from tests.helpers import assert_close_fp32, decoder_terms
from tests.unit.models.conftest import LORA

def test_prompt_groups_hand_computed():
    ids = torch.tensor([[5, 6], [7, 8], [5, 6], [0, 6]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 1]])
    first, inverse = prompt_groups(ids, mask)
    # distinct (ids, mask) rows sorted: [0 6 | 0 1] < [5 6 | 1 1] < [7 8 | 1 1]
    assert first.tolist() == [3, 0, 1] and inverse.tolist() == [1, 2, 1, 0]
    same_ids_other_mask = prompt_groups(torch.tensor([[0, 6], [0, 6]]), torch.tensor([[0, 1], [1, 1]]))[0]
    assert len(same_ids_other_mask) == 2


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("lora", [None, LORA], ids=["plain", "lora"])
def test_same_logp_entropy_and_gradients(lora, monkeypatch, tiny_policy, shuffled_rollouts, logp_module):
    import steprl.algos.logprob as logprob  # where RLModule.forward_logp lives

    used = []
    orig = logprob.shared_prompt_logits
    monkeypatch.setattr(logprob, "shared_prompt_logits", lambda *a, **k: used.append(1) or orig(*a, **k))
    model, tok = tiny_policy(lora)
    assert supported(model), unsupported_reason(model)
    mb = shuffled_rollouts(model, tok)
    model.train()
    out = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        logp, ent = RLModule.forward_logp(logp_module(share, temperature=0.7), model, mb, entropy=True)
        ((logp * mb.response_mask).sum() + (ent * mb.response_mask).sum()).backward()
        out[share] = (logp.detach(), ent.detach(), _grads(model))
    assert len(used) == 1  # the shared path ran (only) when asked
    (lp0, e0, g0), (lp1, e1, g1) = out[False], out[True]
    m = mb.response_mask.bool()
    # one token's forward and a log-softmax (entropy: a sum over the vocabulary too), relative to the logits
    fwd = decoder_terms(model.config, mb.input_ids.shape[1], vocab=True)
    with torch.no_grad():
        scale = float(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits.abs().max())
    assert_close_fp32(lp1[m], lp0[m], terms=fwd, scale=scale)
    assert_close_fp32(e1[m], e0[m], terms=fwd, scale=scale)
    # gradients: the forward, the same chain backwards, and the sum over every token of the minibatch
    assert_close_fp32(g1, g0, terms=2 * fwd + mb.input_ids.numel())


def test_shared_logits_equal_plain_and_fall_back_when_nothing_is_shared(tiny_policy):
    model, tok = tiny_policy()
    model.eval()
    ids = torch.tensor([[0, 10, 11, 20, 21], [0, 10, 11, 22, 23], [12, 13, 14, 24, 25]])
    att = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=3).logits[:, :-1]
        shared = shared_prompt_logits(model, ids, att, pos, n_prompt=3)
        assert shared.shape == plain.shape == (3, 2, model.config.vocab_size)
        terms = decoder_terms(model.config, ids.shape[1])  # two orders of one token's forward
        assert_close_fp32(shared[:, 0], plain[:, 0], terms=terms)
        assert_close_fp32(shared[:2, 1], plain[:2, 1], terms=terms)
        # row 2's response token 1 is padding: its prediction is never used, only rows 0-1 share a prompt
        assert shared_prompt_logits(model, ids[1:], att[1:], pos[1:], n_prompt=3) is None  # no prompt repeats
        empty = att.clone()
        empty[0, :3] = 0
        assert shared_prompt_logits(model, ids, empty, pos, n_prompt=3) is None  # an empty prompt


def test_unsupported_models(tiny_policy):
    model, _ = tiny_policy(gradient_checkpointing=True)
    assert "checkpointing" in unsupported_reason(model)
    assert "architecture" in unsupported_reason(torch.nn.Linear(2, 2))
