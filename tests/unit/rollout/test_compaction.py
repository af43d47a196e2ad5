"""Decode-batch compaction in the HF engine (``rollout.compact``): rows that finished leave the decode batch
(KV cache, mask, positions), and the samples stay the ones the uncompacted decode draws for the same seed.

The model is a tiny random Qwen2 (byte tokenizer) whose matrices are redrawn with std 0.5 (so a continuation
depends on the whole prompt) and whose lm_head gets a bias of +3 on EOS, so that rows end at very different
lengths within 40 tokens (with the stock init EOS is one of 260 near-equal choices and rows run to the limit).
"""
from __future__ import annotations

import pytest
import torch

import steprl.rollout.hf as hf
from steprl.models import load_model
from tests.helpers import redraw_weights
from steprl.rollout.hf import HFEngine, sample_next

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
             max_position_embeddings=256)
PADDED = ["1+2=", "hello world, a longer prompt", "ab"]  # 4, 28, 2 tokens: left padding
UNPADDED = ["abcd", "1+2=", "wxyz"]  # 4 tokens each: no padding, no attention mask in decode


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def lm():
    model, tok = load_model(tiny=SMALL)
    return redraw_weights(model, eos_bias=(tok.eos_token_id, 3.0)), tok


@pytest.fixture
def compactions(monkeypatch):
    """Counts the engine's row selections (the real function runs)."""
    calls = []
    real = hf._select_rows

    def counting(cache, keep, n):
        calls.append(keep.numel())
        return real(cache, keep, n)

    monkeypatch.setattr(hf, "_select_rows", counting)
    return calls


def _generate(lm, prompts, compact, fast, **kw):
    model, tok = lm
    engine = HFEngine(max_new_tokens=40, temperature=1.0, compact=compact, fast_decode=fast,
                      return_logprobs=True, **kw)
    return engine.generate(model, tok, prompts, n=4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fast", [True, False], ids=["fast_decode", "model_forward"])
@pytest.mark.parametrize("prompts", [PADDED, UNPADDED], ids=["left_padded", "unpadded"])
def test_compaction_keeps_the_samples(lm, prompts, fast, compactions):
    off = _generate(lm, prompts, compact=False, fast=fast)
    assert compactions == []
    on = _generate(lm, prompts, compact=True, fast=fast)
    lengths = off.response_mask.sum(1)
    # the batch is one whose rows end at different times, and the engine did drop rows from it
    assert len(set(lengths.tolist())) >= 4 and int(lengths.min()) < 10 and int(lengths.max()) == 40
    assert len(compactions) >= 2 and compactions == sorted(compactions, reverse=True)
    assert torch.equal(on.response_ids, off.response_ids)
    assert torch.equal(on.response_mask, off.response_mask)
    assert on.finish_reason == off.finish_reason and on.texts == off.texts
    # the log-probs of a row computed in a smaller batch: equal up to fp32 rounding of the matmuls
    torch.testing.assert_close(on.engine_logp, off.engine_logp, rtol=0, atol=1e-5)


def test_compaction_with_stop_strings_and_greedy(lm, compactions):
    for kw in ({"stop": ("a",)}, {}):
        for greedy in (False, True):
            model, tok = lm
            rows = []
            for compact in (False, True):
                engine = HFEngine(max_new_tokens=40, temperature=1.0, compact=compact, **kw)
                ro = engine.generate(model, tok, PADDED, n=4, greedy=greedy,
                                     generator=torch.Generator().manual_seed(1))
                rows.append((ro.response_ids, ro.response_mask, ro.finish_reason))
            assert torch.equal(rows[0][0], rows[1][0]) and torch.equal(rows[0][1], rows[1][1])
            assert rows[0][2] == rows[1][2]
    assert compactions  # at least one of the runs dropped rows


def test_continue_ids_with_compaction(lm, compactions):
    model, tok = lm
    contexts = [tok("hello", add_special_tokens=False)["input_ids"], [5, 6], [40, 41, 42, 43, 44, 45, 46]] * 3
    out = [HFEngine(max_new_tokens=30, temperature=1.0, compact=c).continue_ids(
        model, tok, contexts, generator=torch.Generator().manual_seed(2)) for c in (False, True)]
    assert out[0] == out[1]
    assert len({len(t) for t in out[0][0]}) >= 3 and compactions


def test_sample_next_on_a_subset_draws_what_the_full_batch_draws():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 50, generator=g)
    rows = torch.tensor([0, 2, 5])
    for top_p, top_k in ((1.0, 0), (0.9, 0), (1.0, 5)):
        g_full, g_sub = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        full = sample_next(logits, 0.8, top_p, top_k, g_full)
        sub = sample_next(logits[rows], 0.8, top_p, top_k, g_sub, rows=rows, batch=6)
        assert torch.equal(sub, full[rows])
        # both consumed the random numbers of one [6, 50] draw: the streams stay in step
        assert torch.equal(g_full.get_state(), g_sub.get_state())


def test_compaction_on_a_vision_language_model(compactions):
    """A tiny Qwen2-VL decodes through model.forward with its own 3-axis positions: those are compacted too."""
    import numpy as np

    from steprl.models.vision import IMAGE_PLACEHOLDER, load_processor

    cfg = dict(tiny=dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
               vision=dict(depth=1, embed_dim=32, num_heads=2), image_processor=dict(max_pixels=112 * 112))
    model, tok = load_model(**cfg)
    model = redraw_weights(model, eos_bias=(tok.eos_token_id, 6.0))  # this model's logits are larger
    rs = np.random.RandomState(0)
    images = [[(rs.rand(112, 112, 3) * 255).astype(np.uint8)], [(rs.rand(56, 112, 3) * 255).astype(np.uint8)]]
    prompts = [f"{IMAGE_PLACEHOLDER}Rotate?\n", f"a much longer prompt here {IMAGE_PLACEHOLDER}Which tile?\n"]
    out = [HFEngine(max_new_tokens=30, temperature=1.0, compact=c, return_logprobs=True).generate(
        model, tok, prompts, n=4, images=images, processor=load_processor(**cfg),
        generator=torch.Generator().manual_seed(0)) for c in (False, True)]
    assert len(set(out[0].response_mask.sum(1).tolist())) >= 3 and compactions
    assert torch.equal(out[0].response_ids, out[1].response_ids)
    assert torch.equal(out[0].response_mask, out[1].response_mask)
    torch.testing.assert_close(out[1].engine_logp, out[0].engine_logp, rtol=0, atol=1e-5)
