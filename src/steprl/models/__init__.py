from steprl.models.build import cache_kwarg, load_model, resolve_path, shipped_model_dir, tiny_qwen2
from steprl.models.lora import apply_lora, freeze_copy
from steprl.models.tokenizer import build_byte_tokenizer

__all__ = ["apply_lora", "build_byte_tokenizer", "freeze_copy", "cache_kwarg", "load_model", "resolve_path", "shipped_model_dir", "tiny_qwen2"]
