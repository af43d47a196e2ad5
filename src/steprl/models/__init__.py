from steprl.models.build import cache_kwarg, load_model, resolve_path, shipped_model_dir, tiny_qwen2
from steprl.models.tokenizer import build_byte_tokenizer

__all__ = ["build_byte_tokenizer", "cache_kwarg", "load_model", "resolve_path", "shipped_model_dir", "tiny_qwen2"]
