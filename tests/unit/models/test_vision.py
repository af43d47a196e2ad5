"""Vision-language support: the tiny Qwen2-VL built from config, prompt encoding with image tokens, the HF engine
on images (same tokens as HF ``generate``, left-padding invariant), the update pass's log-probs (the model's own
multimodal positions: teacher-forced argmax reproduces greedy decoding), and Rollouts row operations carrying
vision inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steprl.models import load_model
from tests.helpers import redraw_weights
from steprl.models.vision import (IMAGE_PLACEHOLDER, VISION_TOKENS, build_vl_byte_tokenizer, load_processor,
                                  vision_forward_kwargs)
from steprl.rollout.hf import HFEngine
from steprl.rollout.types import cat_rollouts

CFG = dict(tiny=dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
           vision=dict(depth=1, embed_dim=32, num_heads=2), image_processor=dict(max_pixels=112 * 112))
PROMPTS = [f"{IMAGE_PLACEHOLDER}Rotate?\n", f"a much longer prompt here {IMAGE_PLACEHOLDER}Which tile?\n"]


@pytest.fixture(scope="module")
def vl():
    """(model, tokenizer, processor); weights redrawn with std 0.5 so outputs depend on image and positions."""
    model, tok = load_model(**CFG)
    return redraw_weights(model), tok, load_processor(**CFG)


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(0)
    return [[(rs.rand(112, 112, 3) * 255).astype(np.uint8)], [(rs.rand(56, 112, 3) * 255).astype(np.uint8)]]


def test_tokenizer_keeps_byte_ids_and_adds_vision_tokens():
    tok = build_vl_byte_tokenizer()
    assert len(tok) == 264
    assert tok.convert_tokens_to_ids(list(VISION_TOKENS)) == [260, 261, 262, 263]
    assert tok("ab", add_special_tokens=False)["input_ids"] == [4 + sorted_byte("a"), 4 + sorted_byte("b")]
    ids = tok(IMAGE_PLACEHOLDER + "x", add_special_tokens=False)["input_ids"]
    assert ids[:3] == [260, 262, 261] and len(ids) == 4
    assert tok.decode(ids, skip_special_tokens=True) == "x"


def sorted_byte(ch: str) -> int:
    from tokenizers import pre_tokenizers
    return sorted(pre_tokenizers.ByteLevel.alphabet()).index(ch)


def test_tiny_vl_is_small_and_text_model_is_unchanged(vl):
    model, _, proc = vl
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 400_000
    text_model, text_tok = load_model(tiny=CFG["tiny"])
    assert type(text_model).__name__ == "Qwen2ForCausalLM" and len(text_tok) == 260
    assert load_processor(tiny=CFG["tiny"]) is None


def test_encode_expands_one_image_token_per_merged_patch(vl, images):
    _, tok, proc = vl
    enc = proc.encode(tok, PROMPTS, images)
    # 112x112 -> 8x8 patches of 14 px -> 16 tokens after 2x2 merging; 56x112 -> 4x8 -> 8 tokens
    assert [g.tolist() for g in enc["image_grid_thw"]] == [[[1, 8, 8]], [[1, 4, 8]]]
    n_img = (enc["input_ids"] == 262).sum(-1).tolist()
    assert n_img == [16, 8]
    assert [p.shape[0] for p in enc["pixel_values"]] == [64, 32]
    with pytest.raises(ValueError, match="image placeholder"):
        proc.encode(tok, ["no placeholder"], [images[0]])


def test_engine_matches_hf_generate_and_is_padding_invariant(vl, images):
    model, tok, proc = vl
    eng = HFEngine(max_new_tokens=10)
    ro = eng.generate(model, tok, PROMPTS, n=2, greedy=True, images=images, processor=proc)
    assert len(ro.pixel_values) == 4 and ro.pixel_values[0] is ro.pixel_values[1]  # a group shares its tensor
    enc = proc.encode(tok, PROMPTS, images)
    vis = vision_forward_kwargs(model, enc["input_ids"], enc["pixel_values"], enc["image_grid_thw"])
    with torch.no_grad():
        ref = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **vis,
                             max_new_tokens=10, do_sample=False, eos_token_id=[10**6], pad_token_id=0)
    ref = ref[:, enc["input_ids"].shape[1]:]
    rows = [r[m.bool()].tolist() for r, m in zip(ro.response_ids, ro.response_mask)]
    for i in range(2):
        n = len(rows[2 * i])
        assert rows[2 * i] == rows[2 * i + 1] == ref[i, :n].tolist()
    alone = eng.generate(model, tok, PROMPTS[:1], n=1, greedy=True, images=images[:1], processor=proc)
    assert alone.response_ids[0, :len(rows[0])].tolist() == rows[0]


def test_teacher_forced_logits_reproduce_greedy_tokens(vl, images):
    """The update pass (no position ids: the model computes its multimodal ones) sees what decoding saw."""
    from steprl.algos.base import RLModule

    model, tok, proc = vl
    ro = HFEngine(max_new_tokens=8).generate(model, tok, PROMPTS, n=1, greedy=True, images=images, processor=proc)
    mod = RLModule.__new__(RLModule)  # only forward_logp is used: it needs the engine's temperature
    mod.engine = HFEngine(temperature=1.0)
    logp, _ = RLModule.forward_logp(mod, model, ro.select(torch.arange(len(ro))))
    with torch.no_grad():
        ids = ro.input_ids
        vis = vision_forward_kwargs(model, ids, ro.pixel_values, ro.image_grid_thw)
        logits = model(input_ids=ids, attention_mask=ro.attention_mask, **vis).logits
    P = ro.prompt_ids.shape[1]
    pred = logits[:, P - 1:-1].argmax(-1)
    m = ro.response_mask.bool()
    assert torch.equal(pred[m], ro.response_ids[m])
    best = torch.log_softmax(logits[:, P - 1:-1].float(), -1).max(-1).values
    assert torch.allclose(logp[m], best[m], atol=1e-4)


def test_rollouts_select_and_cat_carry_vision_rows(vl, images):
    model, tok, proc = vl
    eng = HFEngine(max_new_tokens=4, temperature=1.5)
    a = eng.generate(model, tok, PROMPTS, n=2, images=images, processor=proc, generator=torch.Generator().manual_seed(0))
    b = eng.generate(model, tok, PROMPTS[:1], n=1, images=images[:1], processor=proc,
                     generator=torch.Generator().manual_seed(1))
    sel = a.select(torch.tensor([3, 0]))
    assert sel.pixel_values[0] is a.pixel_values[3] and torch.equal(sel.image_grid_thw[1], a.image_grid_thw[0])
    both = cat_rollouts([a, b], tok.pad_token_id)
    assert len(both.pixel_values) == 5 and both.pixel_values[4] is b.pixel_values[0]
    moved = both.to("cpu")
    assert moved.pixel_values[0] is moved.pixel_values[1] or moved.pixel_values[0].data_ptr() == moved.pixel_values[1].data_ptr()


def test_text_prompts_without_images_need_no_processor(vl):
    model, tok, _ = vl
    ro = HFEngine(max_new_tokens=3).generate(model, tok, ["hi"], n=1, greedy=True, images=[[]])
    assert ro.pixel_values is None and len(ro) == 1
    with pytest.raises(ValueError, match="image processor"):
        HFEngine().generate(model, tok, [IMAGE_PLACEHOLDER], images=[[np.zeros((28, 28, 3), np.uint8)]])


def test_image_tokens_are_never_sampled_and_never_break_the_update_pass(vl, images):
    """A VL model that would write <|image_pad|> does not (the engine suppresses it); a response that holds one
    anyway (another engine, scripted text) still gets finite log-probs instead of a mismatch error."""
    from steprl.algos.base import RLModule

    model, tok, proc = vl
    image_id = model.config.image_token_id

    def prefer_image_token(module, args, output):
        output.logits[..., image_id] += 1e4
        return output

    handle = model.register_forward_hook(prefer_image_token)
    try:
        ro = HFEngine(max_new_tokens=6).generate(model, tok, PROMPTS, n=2, greedy=True, images=images,
                                                 processor=proc)
    finally:
        handle.remove()
    assert not (ro.response_ids == image_id).any()
    ro = ro.select(torch.arange(len(ro)))
    ro.response_ids[:, 1] = image_id  # as if the model had written one
    mod = RLModule.__new__(RLModule)
    mod.engine = HFEngine(temperature=1.0)
    logp, _ = RLModule.forward_logp(mod, model, ro)
    assert torch.isfinite(logp[ro.response_mask.bool()]).all()


def test_a_saved_vl_directory_loads_back_like_a_hub_model(vl, images, tmp_path):
    """``model.path=<dir>`` (how hub ids load): image-text-to-text model, tokenizer and image processor."""
    model, tok, proc = vl
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    proc.image_processor.save_pretrained(tmp_path)
    m2, tok2 = load_model(path=str(tmp_path))
    p2 = load_processor(path=str(tmp_path), image_processor={"max_pixels": 56 * 56})
    assert type(m2).__name__ == "Qwen2VLForConditionalGeneration" and len(tok2) == len(tok)
    assert p2.image_processor.size.longest_edge == 56 * 56  # the pixel budget override reaches the processor
    p2 = load_processor(path=str(tmp_path))
    eng = HFEngine(max_new_tokens=6)
    a = eng.generate(model, tok, PROMPTS[:1], greedy=True, images=images[:1], processor=proc)
    b = eng.generate(m2.eval(), tok2, PROMPTS[:1], greedy=True, images=images[:1], processor=p2)
    assert torch.equal(a.response_ids, b.response_ids)
    text_dir = tmp_path / "text"
    text_model, text_tok = load_model(tiny=CFG["tiny"])
    text_model.save_pretrained(text_dir)
    text_tok.save_pretrained(text_dir)
    assert load_processor(path=str(text_dir)) is None


def test_qwen2_5_vl_architecture_loads_by_path_and_decodes_like_generate(images, tmp_path):
    """The model=qwen2_5_vl_* path (AutoModelForImageTextToText + AutoImageProcessor from a directory), on a
    Qwen2.5-VL built tiny from config: the engine decodes what HF generate does (up to a placeholder token,
    which the engine never samples), and the update pass reproduces its greedy tokens."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from steprl.algos.base import RLModule
    from steprl.models.vision import build_image_processor

    tok = build_vl_byte_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    build_image_processor(max_pixels=112 * 112).save_pretrained(tmp_path)
    model, tok = load_model(path=str(tmp_path))
    proc = load_processor(path=str(tmp_path))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    model.eval()
    ro = HFEngine(max_new_tokens=8).generate(model, tok, PROMPTS, greedy=True, images=images, processor=proc)
    enc = proc.encode(tok, PROMPTS, images)
    vis = vision_forward_kwargs(model, enc["input_ids"], enc["pixel_values"], enc["image_grid_thw"])
    with torch.no_grad():
        ref = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **vis,
                             max_new_tokens=8, do_sample=False, eos_token_id=[10**6], pad_token_id=0)
    ref = ref[:, enc["input_ids"].shape[1]:].tolist()
    banned = {ids["<|image_pad|>"], ids["<|video_pad|>"]}
    for got, want in zip(ro.response_ids.tolist(), ref):
        k = next((i for i, t in enumerate(want) if t in banned), len(want))
        assert got[:k] == want[:k] and not banned & set(got)
    mod = RLModule.__new__(RLModule)
    mod.engine = HFEngine(temperature=1.0)
    ro = ro.select(torch.arange(len(ro)))
    logp, _ = RLModule.forward_logp(mod, model, ro)
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                       **vision_forward_kwargs(model, ro.input_ids, ro.pixel_values, ro.image_grid_thw)).logits
    P, m = ro.prompt_ids.shape[1], ro.response_mask.bool()
    lp = torch.log_softmax(logits[:, P - 1:-1].float(), -1)
    allowed = lp.index_fill(-1, torch.tensor(sorted(banned)), float("-inf"))
    assert torch.equal(allowed.argmax(-1)[m], ro.response_ids[m])  # greedy over the tokens it may write
    assert torch.allclose(logp[m], allowed.max(-1).values[m], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vl_engine_and_update_pass_on_cuda(images, dtype):
    """On CUDA the tiny VL decodes with its multimodal positions (fp32: the same tokens as HF generate) and
    the update pass gives finite log-probs with a gradient, in fp32 and bf16."""
    from steprl.algos.base import RLModule

    model, tok = load_model(**CFG, dtype=dtype)
    proc = load_processor(**CFG)
    model = model.cuda().eval()
    ro = HFEngine(max_new_tokens=8).generate(model, tok, PROMPTS, n=2, greedy=True, images=images, processor=proc)
    assert ro.response_ids.is_cuda and ro.pixel_values[0].shape[0] == 64
    if dtype == "float32":
        enc = proc.encode(tok, PROMPTS, images)
        ids = enc["input_ids"].cuda()
        vis = vision_forward_kwargs(model, ids, enc["pixel_values"], enc["image_grid_thw"])
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=enc["attention_mask"].cuda(), **vis,
                                 max_new_tokens=8, do_sample=False, eos_token_id=[10**6], pad_token_id=0)
        n = int(ro.response_mask[0].sum())
        assert ro.response_ids[0, :n].tolist() == ref[0, ids.shape[1]:ids.shape[1] + n].tolist()
    mod = RLModule.__new__(RLModule)
    mod.engine = HFEngine(temperature=1.0)
    model.train()
    logp, _ = RLModule.forward_logp(mod, model, ro.select(torch.arange(len(ro))))
    m = ro.response_mask.bool()
    assert torch.isfinite(logp[m]).all()
    logp[m].sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
