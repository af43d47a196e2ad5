"""Model builders: tiny Qwen2 models from config, the shipped warm start, and any HF causal LM."""
from __future__ import annotations

import inspect

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from steprl.config import ConfigError
from steprl.models.paths import DTYPES as _DTYPES
from steprl.models.paths import SHIPPED_PREFIX, resolve_path, shipped_model_dir  # noqa: F401  (re-exported)
from steprl.models.tokenizer import build_tiny_tokenizer

def tiny_qwen2(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
               num_kv_heads: int = 2, intermediate_size: int = 512, max_position_embeddings: int = 512,
               pad_token_id: int = 0, eos_token_id: int = 1, bos_token_id: int = 2,
               attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A randomly initialised Qwen2 causal LM of the given size (built from config, no download)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id,
        attn_implementation=attn_implementation,
    )
    return Qwen2ForCausalLM(config)


def load_model(path: str | None = None, tiny: dict | None = None, dtype: str = "float32",
               attn_implementation: str = "sdpa", revision: str | None = None,
               trust_remote_code: bool = False, gradient_checkpointing: bool = False,
               init_seed: int = 0, vision: dict | None = None,
               image_processor: dict | None = None, lora: dict | None = None,
               quantization: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)``.

    Exactly one of ``path`` (a local directory, a hub id, or ``steprl:<name>`` for a shipped checkpoint)
    and ``tiny`` (keyword arguments of :func:`tiny_qwen2`, and ``tokenizer``: a name in
    ``steprl.models.tokenizer.TINY_TOKENIZERS``, default ``bytes``) must be given.
    With ``tiny``, a ``vision`` dict builds a tiny Qwen2-VL instead (``steprl.models.vision``); a ``path`` whose
    config has a vision tower loads as an image-text-to-text model. ``image_processor`` is read by
    ``steprl.models.vision.load_processor`` (the pixel budget), not here.
    ``lora`` (r > 0): wrap in peft LoRA adapters (r, alpha, dropout, target_modules); ``quantization``
    (``4bit``): load the base in NF4 through bitsandbytes for QLoRA (GPU only, hub / local models only).
    """
    from steprl.models.lora import apply_lora, lora_enabled, quantization_config

    if quantization and not lora_enabled(lora):
        raise ConfigError(f"model.quantization={quantization} trains adapters on a frozen quantised base: "
                         f"set model.lora.r > 0")
    if quantization and tiny is not None:
        raise ConfigError("model.quantization is for pretrained models (model.path), not model.tiny")
    if (path is None) == (tiny is None):
        raise ConfigError("model: give exactly one of `model.path` (dir, hub id or steprl:<name>) "
                         "and `model.tiny` (a size for a model built from config)")
    if dtype not in _DTYPES:
        raise ConfigError(f"model.dtype={dtype!r} is not one of {sorted(_DTYPES)}")
    if tiny is not None and vision is not None:
        from steprl.models.vision import build_vl_byte_tokenizer, tiny_qwen2_vl

        tiny = dict(tiny)
        if (tiny.pop("tokenizer", None) or "bytes") != "bytes":
            raise ConfigError("model.tiny.tokenizer: a tiny vision-language model has the byte tokenizer (bytes) only")
        tokenizer = build_vl_byte_tokenizer()
        with torch.random.fork_rng():
            torch.manual_seed(init_seed)
            model = tiny_qwen2_vl(tokenizer, attn_implementation=attn_implementation, vision=dict(vision), **tiny)
        model = model.to(_DTYPES[dtype])
    elif tiny is not None:
        tiny = dict(tiny)
        tokenizer = build_tiny_tokenizer(tiny.pop("tokenizer", None) or "bytes")
        with torch.random.fork_rng():
            torch.manual_seed(init_seed)
            model = tiny_qwen2(len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                               attn_implementation=attn_implementation, **tiny)
        model = model.to(_DTYPES[dtype])
    else:
        src = resolve_path(path)
        tokenizer = AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=trust_remote_code)
        extra = {"quantization_config": quantization_config(quantization, torch.bfloat16)} if quantization else {}
        auto = AutoModelForCausalLM
        if vision is not None or _has_vision_tower(src, revision, trust_remote_code):
            from transformers import AutoModelForImageTextToText as auto
        model = auto.from_pretrained(
            src, revision=revision, trust_remote_code=trust_remote_code, dtype=_DTYPES[dtype],
            attn_implementation=attn_implementation, **extra)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = True
    if lora_enabled(lora):
        model = apply_lora(model, lora["r"], lora.get("alpha", 16), lora.get("dropout", 0.0),
                           lora.get("target_modules", "all-linear"), gradient_checkpointing, bool(quantization))
    return model, tokenizer


def _has_vision_tower(src: str, revision: str | None, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    from steprl.models.vision import is_vision_config

    return is_vision_config(AutoConfig.from_pretrained(src, revision=revision, trust_remote_code=trust_remote_code))


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument of ``model.forward`` (``cache`` in transformers 5, else ``past_key_values``)."""
    if hasattr(model, "get_base_model"):  # peft wrapper: its forward passes keyword arguments through
        model = model.get_base_model()
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
