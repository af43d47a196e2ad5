"""LoRA / QLoRA adapters (peft) and frozen copies of models (reference policy, PRM, judge)."""
from __future__ import annotations

import copy

import torch


def lora_enabled(lora: dict | None) -> bool:
    return bool(lora) and int(lora.get("r") or 0) > 0


def apply_lora(model, r: int, alpha: float = 16, dropout: float = 0.0, target_modules="all-linear",
               gradient_checkpointing: bool = False, quantized: bool = False):
    """Wrap ``model`` in a peft ``PeftModel`` with LoRA adapters; only the adapters train.

    The reference policy of a LoRA run is the same model with its adapters disabled
    (``with model.disable_adapter(): ...``): no second copy of the base weights.
    """
    try:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    except ImportError as e:
        raise ImportError("model.lora needs peft: pip install peft (or pip install 'steprl[lora]')") from e
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def quantization_config(kind: str, compute_dtype: torch.dtype = torch.bfloat16):
    """bitsandbytes config of a frozen quantised base (QLoRA: NF4 with double quantisation)."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"model.quantization={kind} (bitsandbytes) needs a CUDA GPU; on CPU use "
                           f"model.quantization=null (LoRA alone works on CPU)")
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"model.quantization={kind!r} is not one of [null, '4bit', '8bit']")


def freeze_copy(model: torch.nn.Module, device: torch.device | str | None = None,
                dtype: torch.dtype | str | None = None) -> torch.nn.Module:
    """A frozen, eval-mode copy of ``model`` (reference policy, PRM, judge), optionally on another device
    (e.g. ``"cpu"`` to keep GPU memory for the policy) or in another dtype (e.g. ``torch.bfloat16``).

    A copy kept on another device than the LightningModule's should be held outside the module tree
    (``self.__dict__["ref"] = freeze_copy(...)``) or Lightning moves it along with the policy; feed it inputs
    on its own device (``next(copy.parameters()).device``).
    """
    if isinstance(dtype, str):
        from steprl.models.paths import DTYPES

        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    out = copy.deepcopy(model).eval().requires_grad_(False)
    if device is not None or dtype is not None:
        out = out.to(device=device, dtype=dtype)
    return out
