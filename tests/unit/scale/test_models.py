"""Model helpers for scale: frozen copies, LoRA through peft, QLoRA's GPU requirement, FSDP2 layer discovery."""
from __future__ import annotations

import pytest
import torch

from steprl.models import freeze_copy, load_model
from steprl.utils.fsdp import decoder_layers

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}


def test_freeze_copy_is_frozen_in_eval_mode_and_can_change_dtype():
    model, _ = load_model(tiny=TINY)
    frozen = freeze_copy(model, device="cpu", dtype="bf16")
    assert not frozen.training and all(not p.requires_grad for p in frozen.parameters())
    assert all(p.dtype == torch.bfloat16 for p in frozen.parameters())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())  # original untouched
    with pytest.raises(ValueError, match="dtype='int3'"):
        freeze_copy(model, dtype="int3")


def test_lora_wraps_only_adapters_as_trainable_and_r0_is_full_finetuning():
    full, _ = load_model(tiny=TINY, lora={"r": 0})
    assert not hasattr(full, "disable_adapter")
    lora, _ = load_model(tiny=TINY, lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    assert len(decoder_layers(lora)) == 2  # FSDP2 finds the blocks through the peft wrapper


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_qlora_needs_lora_and_a_gpu():
    with pytest.raises(ValueError, match="set model.lora.r > 0"):
        load_model(path="steprl:tiny_arith", quantization="4bit")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        load_model(path="steprl:tiny_arith", quantization="4bit", lora={"r": 4})


def test_weights_pushed_to_an_engine_are_the_merged_hf_checkpoint():
    """What the vLLM engine receives: plain HF names and, for LoRA, base + scale * B A (policy untouched)."""
    from steprl.rollout.vllm import named_full_weights

    base, _ = load_model(tiny=TINY)
    names = set(base.state_dict())
    lora, _ = load_model(tiny=TINY, lora={"r": 2, "alpha": 4, "target_modules": ["q_proj"]})
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    pushed = {n: t.clone() for n, t in named_full_weights(lora)}
    assert set(pushed) == names
    q = lora.base_model.model.model.layers[0].self_attn.q_proj
    expected = q.base_layer.weight + (4 / 2) * q.lora_B["default"].weight @ q.lora_A["default"].weight
    assert torch.allclose(pushed["model.layers.0.self_attn.q_proj.weight"], expected, atol=1e-6)
    assert all(torch.equal(p, before[n]) for n, p in lora.named_parameters())  # the policy itself is untouched
