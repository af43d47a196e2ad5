"""steprl.models.fast_decode: the pure pieces on hand-computed cases, then the decoder against the HF forward on
tiny random Qwen2 / Llama models (GQA and MHA, tied and untied embeddings, with and without biases, with and
without left padding), and the HF engine with and without it."""
from __future__ import annotations

import math

import pytest
import torch

from steprl.models.fast_decode import (FastDecoder, apply_rotary, attended_length, decode_attention, rms_norm,
                                       rotary_table, rotate_half, supported, unsupported_reason)
from steprl.models.tokenizer import build_byte_tokenizer
from steprl.rollout.hf import HFEngine, _kv_cache
from tests.helpers import assert_close_fp32, decoder_terms


# ------------------------------------------------------------------------------------------ pure math
def test_rms_norm_hand_computed():
    # x = [3, 4]: mean(x^2) = 12.5, 1/sqrt(12.5) = 0.282843; weight [1, 2]
    out = rms_norm(torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 2.0]), 0.0)
    # [3, 8] / sqrt(12.5) = [0.848528, 2.262742]; float32 defaults (rtol 1.3e-6 ~ 11 eps): a few elementwise roundings
    torch.testing.assert_close(out, torch.tensor([[3.0, 8.0]]) / math.sqrt(12.5))
    # eps enters under the root: x = [1, 1], eps = 3 -> 1 / sqrt(1 + 3) = 0.5
    assert torch.allclose(rms_norm(torch.ones(1, 2), torch.ones(2), 3.0), torch.full((1, 2), 0.5))


def test_rotate_half_and_rotary_hand_computed():
    assert rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-3.0, -4.0, 1.0, 2.0]
    # head_dim 2, inv_freq [1]: position p rotates (x1, x2) by angle p
    cos, sin = rotary_table(torch.tensor([1.0]), 3)
    assert torch.allclose(cos[2], torch.full((2,), math.cos(2.0))) and torch.allclose(sin[2], torch.full((2,), math.sin(2.0)))
    x = torch.tensor([1.0, 0.0])
    out = apply_rotary(x, cos[2], sin[2])  # (cos 2, sin 2): x rotated by 2 rad
    torch.testing.assert_close(out, torch.tensor([math.cos(2.0), math.sin(2.0)]))  # float32 defaults: 2 roundings
    assert torch.equal(apply_rotary(x, cos[0], sin[0]), x)  # position 0: identity
    cos_s, _ = rotary_table(torch.tensor([1.0]), 3, scaling=0.5)  # attention scaling multiplies both
    assert torch.allclose(cos_s, 0.5 * cos)


def test_decode_attention_hand_computed():
    q = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # scores [1, 0] -> softmax [e/(e+1), 1/(e+1)] = [0.731059, 0.268941]
    out = decode_attention(q, k, v, 1.0)
    w1 = 1 / (math.e + 1)  # float32 defaults below: a softmax and a 2-term weighted sum, a few roundings each
    torch.testing.assert_close(out.view(2), torch.tensor([1.0 + 2 * w1, 2.0 + 2 * w1]))
    # scale 0: uniform weights -> mean of the values
    assert torch.allclose(decode_attention(q, k, v, 0.0).view(2), torch.tensor([2.0, 3.0]))
    # masking key 0 leaves only value 1
    assert torch.allclose(decode_attention(q, k, v, 1.0, mask=torch.tensor([[0, 1]])).view(2), torch.tensor([3.0, 4.0]))


def test_decode_attention_groups_share_their_kv_head():
    torch.manual_seed(0)
    B, Hkv, g, d, T = 2, 2, 3, 4, 5
    q, k, v = torch.randn(B, Hkv, g, d), torch.randn(B, Hkv, T, d), torch.randn(B, Hkv, T, d)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.reshape(B, Hkv * g, 1, d), k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))
    # two orders of the same sums: scores (d terms), softmax normaliser and weighted values (T terms each)
    assert_close_fp32(decode_attention(q, k, v, d ** -0.5).reshape(B, Hkv * g, 1, d), ref, terms=d + 2 * T)


# ------------------------------------------------------------------------------------------ models
def _model(arch="qwen2", heads=4, kv_heads=2, tied=True, bias=None, seed=0, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_byte_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                  tie_word_embeddings=tied, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.bos_token_id, attn_implementation="sdpa", **extra)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=bool(bias), mlp_bias=bool(bias)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights than the stock init, so that every position and head matters
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3, generator=g)
            if "norm" in name:
                p.add_(1.0)
    model.eval()
    return model, tok


CONFIGS = [
    dict(arch="qwen2", heads=4, kv_heads=2, tied=True),    # GQA, tied, q/k/v bias (Qwen2 always has it)
    dict(arch="qwen2", heads=4, kv_heads=4, tied=False),   # MHA, untied lm_head
    dict(arch="llama", heads=4, kv_heads=1, tied=False, bias=True),   # MQA, all biases
    dict(arch="llama", heads=2, kv_heads=2, tied=True, bias=False),   # no biases
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("left_pad", [False, True])
def test_decoder_logits_match_the_full_forward(cfg, left_pad):
    model, _ = _model(**cfg)
    assert supported(model), unsupported_reason(model)
    torch.manual_seed(1)
    B, P, steps = 3, 6, 5
    ids = torch.randint(4, 200, (B, P + steps))
    mask = torch.ones_like(ids)
    if left_pad:
        mask[0, :3] = 0
        mask[2, :1] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # no cache at all
        cache, hf_cache = _kv_cache(P + steps), _kv_cache(P + steps)
        for c in (cache, hf_cache):
            model(input_ids=ids[:, :P], attention_mask=mask[:, :P], position_ids=pos[:, :P], use_cache=True, cache=c)
        fast = FastDecoder(model, [(x._k, x._v) for x in cache.layers], P)
        for t in range(steps):
            step_mask = mask[:, :P + t + 1] if left_pad else None
            logits = fast.step(ids[:, P + t], pos[:, P + t], step_mask)
            hf = model(input_ids=ids[:, P + t:P + t + 1], attention_mask=step_mask, position_ids=pos[:, P + t:P + t + 1],
                       use_cache=True, cache=hf_cache).logits[:, -1]  # the decode step it replaces
            # the decode step and model.forward round differently along one token's forward (its sums' lengths)
            terms = decoder_terms(model.config, P + t + 1)
            assert_close_fp32(logits, hf, terms=terms, msg=f"step {t}: against the HF decode step")
            assert_close_fp32(logits, ref[:, P + t], terms=terms, msg=f"step {t}: against the full forward")
            assert torch.equal(logits.argmax(-1), hf.argmax(-1))


PROMPTS = ["1+2=", "hello world, a longer prompt", "ab", "12345678"]


def _assert_same_logp(model, ids, mask, lp_a, lp_b):
    """Log-probs of two decoding paths over the same tokens ``ids``: a log-softmax's rounding over one token's
    forward and the vocabulary, relative to the logits (the summed terms; the log-probs can be smaller)."""
    with torch.no_grad():
        scale = float(model(input_ids=ids, attention_mask=mask).logits.abs().max())
    assert_close_fp32(lp_a, lp_b, terms=decoder_terms(model.config, ids.shape[1], vocab=True), scale=scale)


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=["qwen2-gqa-tied", "qwen2-mha-untied", "llama-mqa-bias"])
def test_engine_tokens_identical_with_and_without_fast_decode(cfg):
    model, tok = _model(**cfg)
    for prompts in (PROMPTS, ["same length"] * 2):  # left-padded (masked) and unpadded (no mask) decoding
        for greedy in (True, False):
            out = []
            for fast in (False, True):
                eng = HFEngine(max_new_tokens=12, temperature=1.0, fast_decode=fast, return_logprobs=True)
                # seed 2: every draw's winner beats the runner-up by >= 7e-3 relative (seed 3 had one at 8e-5),
                # far beyond the ~1e-5 the two paths' rounding can move a probability
                out.append(eng.generate(model, tok, prompts, n=3, greedy=greedy,
                                        generator=torch.Generator().manual_seed(2)))
            a, b = out
            assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_mask, b.response_mask)
            assert a.finish_reason == b.finish_reason
            _assert_same_logp(model, a.input_ids, a.attention_mask, a.engine_logp, b.engine_logp)


def test_engine_uses_the_fast_path_only_where_supported(monkeypatch):
    import steprl.models.fast_decode as fd

    calls = []
    orig = fd.FastDecoder.step
    monkeypatch.setattr(fd.FastDecoder, "step", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    model, tok = _model()
    HFEngine(max_new_tokens=4, min_new_tokens=4).generate(model, tok, ["ab"], greedy=True)
    assert len(calls) == 3  # the first token comes from the prefill
    HFEngine(max_new_tokens=4, min_new_tokens=4, fast_decode=False).generate(model, tok, ["ab"], greedy=True)
    assert len(calls) == 3
    HFEngine(max_new_tokens=4, min_new_tokens=4, fast_decode=True).generate(model, tok, ["ab"], greedy=True)
    assert len(calls) == 6  # true: wherever supported (the default)
    HFEngine(max_new_tokens=4, min_new_tokens=4, fast_decode="cpu").generate(model, tok, ["ab"], greedy=True)
    assert len(calls) == 9  # "cpu": the model is on CPU
    with pytest.raises(ValueError, match="rollout.fast_decode"):
        HFEngine(fast_decode="gpu")
    rope, _ = _model(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    assert "rope" in unsupported_reason(rope)
    HFEngine(max_new_tokens=4, min_new_tokens=4, fast_decode=True).generate(rope, tok, ["ab"], greedy=True)
    assert len(calls) == 9  # unsupported: model.forward even when asked for


def test_unsupported_models_are_named():
    sliding, _ = _model(use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert "sliding" in unsupported_reason(sliding)
    from steprl.models import load_model

    lora, _ = load_model(tiny=dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32),
                         lora={"r": 2, "alpha": 4, "target_modules": ["q_proj"]})
    assert unsupported_reason(lora) is not None
    assert "architecture" in unsupported_reason(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("fast", [False, True])
def test_group_prefill_gives_the_same_tokens(fast):
    """Rows that repeat a prompt are prefilled once and the cache copied (``group``): same tokens as one
    prefill per row, with left padding (different prompt lengths) and sampling."""
    model, tok = _model()
    eng = HFEngine(max_new_tokens=10, temperature=1.0, fast_decode=fast, return_logprobs=True)
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].repeat_interleave(3, 0), enc["attention_mask"].repeat_interleave(3, 0)
    out = []
    for group in (1, 3):
        lps = []
        out.append((eng._decode(model, tok, ids, mask, 10, False, torch.Generator().manual_seed(4), logps=lps,
                                group=group), lps[0]))
    (a, lp_a), (b, lp_b) = out
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    _assert_same_logp(model, torch.cat([ids, a[0]], 1), torch.cat([mask, a[1]], 1), lp_a, lp_b)


def test_attended_length_rounds_up_to_the_bucket():
    # slot 0 -> 1 position -> one bucket of 256, cut to a capacity of 100; slot 255 -> 256 positions, still the
    # first bucket; slot 256 -> 257 positions -> the second bucket (512); never past the capacity
    assert attended_length(0, 100, 256) == 100
    assert attended_length(0, 1000, 256) == 256
    assert attended_length(255, 1000, 256) == 256
    assert attended_length(256, 1000, 256) == 512
    assert attended_length(999, 1000, 256) == 1000
    assert [attended_length(s, 10, 4) for s in range(10)] == [4, 4, 4, 4, 8, 8, 8, 8, 10, 10]


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("left_pad", [False, True])
def test_static_step_matches_the_step(fuse, left_pad):
    """The fixed-shape step a CUDA graph replays (keys/values written at a slot tensor, attention over the whole
    capacity under the full mask buffer) gives the eager step's logits, fused or with the model's own weights."""
    model, _ = _model(**CONFIGS[0])
    torch.manual_seed(2)
    B, P, steps = 3, 5, 4
    cap = P + steps
    ids = torch.randint(4, 200, (B, P + steps))
    mask = torch.ones(B, cap, dtype=torch.long)
    if left_pad:
        mask[1, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        caches = [_kv_cache(cap), _kv_cache(cap)]
        for c in caches:
            model(input_ids=ids[:, :P], attention_mask=mask[:, :P], position_ids=pos[:, :P], use_cache=True, cache=c)
        eager = FastDecoder(model, [(x._k, x._v) for x in caches[0].layers], P)
        static = FastDecoder(model, [(x._k, x._v) for x in caches[1].layers], P, fuse=fuse)
        for K, V in static.kv:  # positions not yet written hold large finite values: masked, they must not count
            K[:, :, P:] = 1e3 * torch.randn_like(K[:, :, P:])
            V[:, :, P:] = 1e3 * torch.randn_like(V[:, :, P:])
        full = torch.zeros(B, cap, dtype=torch.long)
        full[:, :P] = mask[:, :P]
        for t in range(steps):
            full[:, P + t] = 1
            ref = eager.step(ids[:, P + t], pos[:, P + t], full[:, :P + t + 1] if left_pad else None)
            length = cap if t % 2 else P + t + 1  # the whole capacity, or just the positions written so far
            out = static.static_step(ids[:, P + t], pos[:, P + t], torch.tensor([P + t]), full, length)
            # the same forward, attention over up to `cap` positions (the masked ones weigh exactly 0)
            assert_close_fp32(out, ref, terms=decoder_terms(model.config, cap), msg=f"step {t}")
        for (Ke, Ve), (Ks, Vs) in zip(eager.kv, static.kv):  # keys/values: one token's forward up to a projection
            assert_close_fp32(Ks, Ke, terms=decoder_terms(model.config, cap))
            assert_close_fp32(Vs, Ve, terms=decoder_terms(model.config, cap))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decode_gives_the_same_tokens(monkeypatch):
    """On a GPU: the replayed CUDA graphs (attended lengths in buckets of 4 positions here, so that a decode
    crosses several), the eager fast step and model.forward draw the same tokens in fp32 (left-padded and unpadded
    prompts, sampling with one seed)."""
    import steprl.models.fast_decode as fd

    monkeypatch.setattr(fd.CUDAGraphStep.__init__, "__defaults__", (4,))
    model, tok = _model(**CONFIGS[0])
    model = model.cuda()
    for prompts in (PROMPTS, ["same length"] * 2):
        out = []
        for fast, graph in ((False, False), (True, False), (True, True)):
            eng = HFEngine(max_new_tokens=12, temperature=1.0, fast_decode=fast, cuda_graph=graph,
                           return_logprobs=True)
            out.append(eng.generate(model, tok, prompts, n=3, generator=torch.Generator("cuda").manual_seed(3)))
        for other in out[1:]:
            assert torch.equal(out[0].response_ids, other.response_ids)
            _assert_same_logp(model, other.input_ids, other.attention_mask, out[0].engine_logp, other.engine_logp)
