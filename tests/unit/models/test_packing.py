"""steprl.models.packing: the padding-free forward. The layout on hand-built rows (every index worked out by
hand below); then log-probs, entropies and gradients equal to the padded forward's (plain and shared-prompt
layouts, plain model and LoRA); token-budget micro-batches."""
from __future__ import annotations

import pytest
import torch

from steprl.algos.base import RLModule
from steprl.models.packing import (agreed_chunks, balanced_chunks, micro_batches, pack, packable, packed_attention,
                                   split_to_count, token_budget_chunks, unpack, usable, zero_weight_row)
from tests.helpers import assert_close_fp32, decoder_terms
from tests.unit.models.conftest import LORA

# three rows, prompt columns 3 (left-padded), response columns 4 (right-padded)
IDS = torch.tensor([[0, 5, 6, 7, 8, 9, 0],
                    [4, 5, 6, 1, 0, 0, 0],
                    [0, 5, 6, 3, 2, 0, 0]])
ATT = torch.tensor([[0, 1, 1, 1, 1, 1, 0],
                    [1, 1, 1, 1, 0, 0, 0],
                    [0, 1, 1, 1, 1, 0, 0]])


def test_pack_plain_layout_by_hand():
    p = pack(IDS, ATT, n_prompt=3)
    # row 0: prompt 5 6, response 7 8 9 -> 5 6 7 8 (9 predicts nothing scored); row 1: 4 5 6 (+1); row 2: 5 6 (+3 2)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 4, 5, 6, 5, 6, 3]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]]
    assert p.cu_q.tolist() == [0, 4, 7, 10] and p.cu_k.tolist() == [0, 4, 7, 10] and p.k_index is None
    assert (p.max_q, p.max_k) == (4, 4)
    # the logits at positions 1 2 3 (row 0: predict 7 8 9), 6 (row 1: predicts 1), 8 9 (row 2: predict 3 2)
    assert p.logit_index.tolist() == [1, 2, 3, 6, 8, 9]
    assert p.rows.tolist() == [0, 0, 0, 1, 2, 2] and p.cols.tolist() == [0, 1, 2, 0, 0, 1]
    out = unpack(torch.tensor([1.0, 2, 3, 4, 5, 6]), p, (3, 4))
    assert out.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0]]


def test_pack_shared_prompt_layout_by_hand():
    p = pack(IDS, ATT, n_prompt=3, share_prompt=True)
    # rows 0 and 2 share the prompt (0) 5 6; distinct prompts in sorted order: [0 5 6] first, then [4 5 6]
    # prompt 5 6 | row 0's 7 8 | row 2's 3 | prompt 4 5 6 (row 1 has one response token: no segment of its own)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 3, 4, 5, 6]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2]]
    assert p.cu_q.tolist() == [0, 2, 4, 5, 8]
    # keys: the prompt itself; prompt + 7 8; prompt + 3; the second prompt itself
    assert p.k_index.tolist() == [0, 1, 0, 1, 2, 3, 0, 1, 4, 5, 6, 7]
    assert p.cu_k.tolist() == [0, 2, 6, 9, 12] and (p.max_q, p.max_k) == (3, 4)
    assert p.logit_index.tolist() == [1, 2, 3, 1, 4, 7]
    assert p.rows.tolist() == [0, 0, 0, 2, 2, 1] and p.cols.tolist() == [0, 1, 2, 0, 1, 0]


def test_unpackable_rows_are_named():
    assert packable(ATT, 3) is None
    gap = ATT.clone()
    gap[0, 4] = 0  # a hole inside row 0's response
    assert "gap" in packable(gap, 3)
    right = ATT.clone()
    right[1, :3] = torch.tensor([1, 1, 0])  # a right-padded prompt
    assert "left padding" in packable(right, 3)
    no_prompt = ATT.clone()
    no_prompt[0, :3] = 0
    assert "without a prompt" in packable(no_prompt, 3)
    with pytest.raises(ValueError, match="gap"):
        pack(IDS, gap, 3)


def test_token_budget_chunks_by_hand():
    assert token_budget_chunks([3, 4, 2, 6, 1], 7) == [(0, 2), (2, 3), (3, 5)]
    assert token_budget_chunks([9, 1], 5) == [(0, 1), (1, 2)]  # a row over the budget goes alone
    assert token_budget_chunks([], 5) == []
    with pytest.raises(ValueError, match="budget"):
        token_budget_chunks([1], 0)
    idx = torch.tensor([4, 0, 2, 1, 3])
    tokens = torch.tensor([10, 20, 30, 40, 50])
    assert [m.tolist() for m in micro_batches(idx, tokens, rows=2, token_budget=None)] == [[4, 0], [2, 1], [3]]
    # row tokens in idx order: 50 10 30 20 40 -> budget 60: 50+10 | 30+20 | 40
    assert [m.tolist() for m in micro_batches(idx, tokens, rows=2, token_budget=60)] == [[4, 0], [2, 1], [3]]
    assert [m.tolist() for m in micro_batches(idx, tokens, rows=2, token_budget=100)] == [[4, 0, 2], [1, 3]]



def test_split_to_count_by_hand():
    tokens = [3, 4, 2, 6, 1]  # budget 7: 3+4 | 2 | 6+1
    chunks = [(0, 2), (2, 3), (3, 5)]
    assert split_to_count(chunks, tokens, 3) == chunks
    # the largest chunks of 2+ rows hold 7 tokens each: the first is split (its one boundary)
    assert split_to_count(chunks, tokens, 4) == [(0, 1), (1, 2), (2, 3), (3, 5)]
    assert split_to_count(chunks, tokens, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert split_to_count(chunks, tokens, 6) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]  # one row each: stop
    # the cut that leaves the smaller larger half: 1 | 1+1+5 (7), 1+1 | 1+5 (6), 1+1+1 | 5 (5)
    assert split_to_count([(0, 4)], [1, 1, 1, 5], 2) == [(0, 3), (3, 4)]
    # a tie: the first such cut (2+2 | 2+2), then the first of two 4-token chunks
    assert split_to_count([(0, 4)], [2, 2, 2, 2], 2) == [(0, 2), (2, 4)]
    assert split_to_count([(0, 4)], [2, 2, 2, 2], 3) == [(0, 1), (1, 2), (2, 4)]


def test_balanced_chunks_by_hand():
    # cap 6: 3 | 4+2 | 6 | 1 (4 ranges); cap 7: 3+4 | 2 | 6+1 (3): the smallest largest range is 7
    assert balanced_chunks([3, 4, 2, 6, 1], 3) == [(0, 2), (2, 3), (3, 5)]
    # cap 5: 5 | 1+1+1+1+1 (2 ranges), where the budget 6 cut greedily 5+1 | 1+1+1+1
    assert balanced_chunks([5, 1, 1, 1, 1, 1], 2) == [(0, 1), (1, 6)]
    # cap 2: 1+1 | 1+1 (2 ranges, < 3), then the first is split
    assert balanced_chunks([1, 1, 1, 1], 3) == [(0, 1), (1, 2), (2, 4)]
    assert balanced_chunks([9], 3) == [(0, 1)]  # one row: one range
    assert balanced_chunks([], 2) == []
    with pytest.raises(ValueError, match="count"):
        balanced_chunks([1], 0)


def test_one_process_evens_out_the_budget_cut():
    assert agreed_chunks([3, 4, 2, 6, 1], 7) == token_budget_chunks([3, 4, 2, 6, 1], 7)  # already even
    # the budget 6 cuts 2 micro-batches (5+1 | 1+1+1+1); as even as 2 can be: 5 | 1+1+1+1+1
    assert token_budget_chunks([5, 1, 1, 1, 1, 1], 6) == [(0, 2), (2, 6)]
    assert agreed_chunks([5, 1, 1, 1, 1, 1], 6) == [(0, 1), (1, 6)]
    assert agreed_chunks([], 6) == []


def test_zero_weight_row_is_the_cheapest():
    tokens = torch.tensor([5, 3, 9, 1, 7])
    assert zero_weight_row(torch.tensor([4, 0, 2]), tokens).tolist() == [0]  # tokens 7, 5, 9
    assert zero_weight_row(torch.tensor([2, 3]), tokens).tolist() == [3]
    with pytest.raises(ValueError, match="no rows"):
        zero_weight_row(torch.tensor([], dtype=torch.long), tokens)

@pytest.mark.parametrize("share", [False, True], ids=["own-prompt", "shared-prompt"])
def test_segment_attention_equals_masked_sdpa(share):
    """packed_attention against one SDPA call with the block mask written out: GQA; plain layout: two segments
    of one shape (3 tokens) in one batched call; shared: lower-right causal segments."""
    g = torch.Generator().manual_seed(0)
    p = pack(IDS, ATT, n_prompt=3, share_prompt=share)
    shapes = sorted((lq, lk, n) for _, _, n, lq, lk in p.buckets())
    assert shapes == ([(1, 3, 1), (2, 2, 1), (2, 4, 1), (3, 3, 1)] if share else [(3, 3, 2), (4, 4, 1)])
    if not share:  # rows 1 and 2 are one run of 6 positions from 4, row 0 the run from 0: views, in order
        assert sorted((q, k) for q, k, *_ in p.buckets()) == [(0, 0), (4, 4)] and p.bucket_inverse() is None
    else:  # row 0's response keys 0 1 2 3 are a run (its prompt right before it); row 2's 0 1 4 are gathered
        keys = {(lq, lk): k for _, k, _, lq, lk in p.buckets()}
        assert keys[(2, 4)] == 0 and keys[(1, 3)].tolist() == [[0, 1, 4]]
    N = p.input_ids.shape[1]
    q, k, v = (torch.randn(1, h, N, 8, generator=g) for h in (4, 2, 2))
    module = torch.nn.Module()
    out, _ = packed_attention(module, q, k, v, None, scaling=0.3, packed=p)
    # query i may see key j when j is in i's segment's keys and not later in its sequence
    allowed = torch.zeros(N, N, dtype=torch.bool)
    cq, ck = p.cu_q.tolist(), p.cu_k.tolist()
    for s in range(len(cq) - 1):
        keys = p.k_index[ck[s]:ck[s + 1]] if share else torch.arange(cq[s], cq[s + 1])
        for i in range(cq[s], cq[s + 1]):
            allowed[i, keys[:len(keys) - (cq[s + 1] - i) + 1]] = True
    if share:
        assert allowed[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # token 7: the prompt 5 6 and itself
        assert allowed[4].tolist() == [1, 1, 0, 0, 1, 0, 0, 0]  # token 3: the prompt 5 6 and itself
    else:
        assert allowed[5].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]  # row 1's second token: 4 5
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=allowed, scale=0.3)
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lora", [None, LORA], ids=["plain", "lora"])
@pytest.mark.parametrize("share", [False, True], ids=["own-prompt", "shared-prompt"])
def test_same_logp_entropy_and_gradients_as_padded(lora, share, monkeypatch, tiny_policy, shuffled_rollouts,
                                                    logp_module):
    import steprl.models.packing as packing

    calls = []
    orig = packing.packed_forward
    monkeypatch.setattr(packing, "packed_forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    model, tok = tiny_policy(lora)
    mb = shuffled_rollouts(model, tok)
    assert usable(model, mb.attention_mask, mb.prompt_ids.shape[1])
    model.train()
    out = {}
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        logp, ent = RLModule.forward_logp(logp_module(share, packed), model, mb, entropy=True, temperature=0.7)
        ((logp * mb.response_mask).sum() + (ent * mb.response_mask).sum()).backward()
        out[packed] = (logp.detach(), ent.detach(),
                       torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert len(calls) == 1  # the packed path ran (only) when asked
    (lp0, e0, g0), (lp1, e1, g1) = out[False], out[True]
    m = mb.response_mask.bool()
    assert (lp1[~m] == 0).all() and (e1[~m] == 0).all()  # nothing at padding
    fwd = decoder_terms(model.config, mb.input_ids.shape[1], vocab=True)
    with torch.no_grad():
        scale = float(model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits.abs().max()) / 0.7
    assert_close_fp32(lp1[m], lp0[m], terms=fwd, scale=scale)
    assert_close_fp32(e1[m], e0[m], terms=fwd, scale=scale)
    assert_close_fp32(g1, g0, terms=2 * fwd + mb.input_ids.numel())
    # the comparison can tell: one causal row (attention across sequences) gives other log-probs
    p = pack(mb.input_ids, mb.attention_mask, mb.prompt_ids.shape[1], share_prompt=share)
    picked = lambda logits: torch.log_softmax(logits[0, p.logit_index] / 0.7, -1).gather(  # noqa: E731
        -1, mb.response_ids[p.rows, p.cols][:, None])[:, 0]
    with torch.no_grad():
        leak = picked(model(input_ids=p.input_ids).logits)
        assert (leak - lp0[p.rows, p.cols]).abs().max() > 1e-3


def test_training_steps_with_packing_and_a_token_budget(tmp_path, monkeypatch):
    """The RL step through ``update`` with ``batch.packed`` and ``batch.micro_batch_tokens``: drgrpo_tiny's
    first loss equals the recorded golden loss of the row-cut run (micro-batches of 4 rows) up to float rounding
    (the weights, and so the second step's samples, may then differ in the last bits)."""
    import json

    import steprl.models.packing as packing
    import tests.unit.engine.record_golden as rg
    from tests.unit.engine.record_golden import GOLDEN, numbers

    cuts = []
    orig = packing.token_budget_chunks
    monkeypatch.setattr(packing, "token_budget_chunks", lambda t, b: cuts.append((t, b)) or orig(t, b))
    # drgrpo_tiny: minibatches of 8 rows of ~12 prompt + up to 32 response tokens; 120 tokens: 2-4 rows each
    monkeypatch.setattr(rg, "OVERRIDES", [*rg.OVERRIDES, "batch.packed=true", "batch.micro_batch_tokens=120"])
    got = numbers("drgrpo", tmp_path)["train/loss"]
    recorded = json.loads(GOLDEN.read_text())["drgrpo"]["train/loss"]
    assert cuts and all(b == 120 for _, b in cuts)
    assert any(len(orig(t, b)) != len(t) // 4 for t, b in cuts)  # the budget cut otherwise than 4 rows
    # measured: -0.0063205208 vs -0.0063205212 recorded (7e-8 relative); a wrong mask or cut moves it by far more
    assert len(got) == 2 and got[0] == pytest.approx(recorded[0], rel=1e-5)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "4096", True])
def test_bad_token_budget_is_named(bad):
    from steprl.config import ConfigError, check_batch

    b = dict(prompts_per_step=2, samples_per_prompt=2, minibatch_size=4, micro_batch_size=2, ppo_epochs=1)
    assert check_batch({**b, "micro_batch_tokens": 4096}) == check_batch(b)
    with pytest.raises(ConfigError, match="batch.micro_batch_tokens"):
        check_batch({**b, "micro_batch_tokens": bad})


def test_a_row_without_response_adds_no_scored_position():
    ids = torch.cat([IDS, torch.tensor([[0, 0, 9, 0, 0, 0, 0]])])
    att = torch.cat([ATT, torch.tensor([[0, 0, 1, 0, 0, 0, 0]])])
    for share in (False, True):
        p, ref = pack(ids, att, 3, share_prompt=share), pack(IDS, ATT, 3, share_prompt=share)
        # its prompt token 9 is packed: last in row order; first among the sorted distinct prompts
        # ([0 0 9 | 0 0 1] < [0 5 6 | 0 1 1]), which shifts every other position by one
        shift = int(share)
        assert p.input_ids[0].tolist() == ([9] if share else []) + ref.input_ids[0].tolist() + ([] if share else [9])
        assert torch.equal(p.logit_index, ref.logit_index + shift) and torch.equal(p.rows, ref.rows)
        assert unpack(torch.ones(len(p.rows)), p, (4, 4))[3].tolist() == [0, 0, 0, 0]
