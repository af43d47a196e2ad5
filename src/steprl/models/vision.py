"""Vision-language models: a tiny Qwen2-VL built from config, hub Qwen2-VL / Qwen2.5-VL models, and the image
side of prompt encoding.

A prompt with images carries one placeholder string per image (``IMAGE_PLACEHOLDER``: vision-start, one
image-pad token, vision-end, as in the Qwen-VL chat format). :class:`VisionProcessor` turns each image into the
patch rows the vision tower reads (``pixel_values``, ``image_grid_thw``, via the model's own image processor)
and repeats the image-pad token once per merged patch, so the prompt has exactly as many image tokens as the
vision tower produces embeddings. Everything is kept per prompt row (a list of tensors), so the ``n`` samples of
one prompt share one tensor and selecting / concatenating rows of :class:`~steprl.rollout.types.Rollouts` is
list picking.

Qwen2-VL places tokens with multimodal RoPE (3 position rows: time, height, width). We never build those
positions ourselves: the forward pass gets ``input_ids``, ``attention_mask``, ``image_grid_thw`` and
``mm_token_type_ids`` and the model computes them (``get_rope_index``); during cached decoding the engine adds the
model's own ``rope_deltas`` to the text position, which is what ``generate()`` does.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
IMAGE_TOKEN = "<|image_pad|>"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


def build_vl_byte_tokenizer():
    """The byte tokenizer (``steprl.models.tokenizer``) with the four Qwen-VL vision special tokens appended
    (ids 260..263); every text id is unchanged."""
    from steprl.models.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    return tok


def tiny_qwen2_vl(tokenizer, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                  intermediate_size: int = 128, max_position_embeddings: int = 2048,
                  attn_implementation: str = "sdpa", vision: dict | None = None):
    """A randomly initialised Qwen2-VL of the given size (text decoder + ViT), built from config.

    ``vision``: depth, embed_dim, num_heads, mlp_ratio, patch_size, spatial_merge_size, temporal_patch_size
    (image-processor keys such as min_pixels / max_pixels are ignored here)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    v = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
         "temporal_patch_size": 2}
    v.update({k: val for k, val in (vision or {}).items() if k in v})
    head_dim = hidden_size // num_heads
    if head_dim % 2:
        raise ValueError(f"model.tiny: hidden_size/num_heads = {head_dim} must be even for rotary embeddings")
    half = head_dim // 2  # mrope splits the rotary frequencies into (time, height, width) sections
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_kv_heads, max_position_embeddings=max_position_embeddings,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id),
        vision_config=dict(hidden_size=hidden_size, **v),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, attn_implementation=attn_implementation)
    return Qwen2VLForConditionalGeneration(config)


def is_vision_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def is_vision_model(model) -> bool:
    return is_vision_config(getattr(model, "config", None))


# ------------------------------------------------------------------------------------------------ images
def to_pil(image: Any):
    """A PIL RGB image from a PIL image, an HxWx3 (or HxW) uint8 array / tensor, or a file path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (HxWx3), got {image.dtype}")
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"cannot use {type(image).__name__} as an image (give a PIL image, a uint8 array or a path)")


class VisionProcessor:
    """Encodes prompts with images for a Qwen-VL model: pixel rows per prompt and expanded image tokens.

    ``image_processor`` is the model's HF image processor (``Qwen2VLImageProcessorPil`` for the tiny model;
    ``AutoImageProcessor.from_pretrained`` for hub models); ``merge_size`` patches per side merge into one token.
    """

    def __init__(self, image_processor, image_token: str = IMAGE_TOKEN, placeholder: str = IMAGE_PLACEHOLDER):
        self.image_processor = image_processor
        self.image_token = image_token
        self.placeholder = placeholder
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    def images(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values [patches, D], image_grid_thw [k, 3])`` of one prompt's ``k`` images."""
        if not images:
            return torch.zeros(0, 0), torch.zeros(0, 3, dtype=torch.long)
        out = self.image_processor(images=[to_pil(im) for im in images], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"].long()

    def expand(self, prompt: str, grid: torch.Tensor) -> str:
        """``prompt`` with its i-th image token repeated once per merged patch of image i."""
        parts = prompt.split(self.image_token)
        if len(parts) - 1 != grid.shape[0]:
            raise ValueError(f"prompt has {len(parts) - 1} image placeholder(s) ({self.image_token!r}) but "
                             f"{grid.shape[0]} image(s) were given: {prompt[:120]!r}")
        counts = (grid.prod(-1) // self.merge_size ** 2).tolist()
        return parts[0] + "".join(self.image_token * int(c) + p for c, p in zip(counts, parts[1:]))

    def encode(self, tokenizer, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """Token ids / mask of the expanded prompts (padded on the tokenizer's side) and per-prompt lists of
        ``pixel_values`` and ``image_grid_thw``."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        pix, grids, texts = [], [], []
        for p, ims in zip(prompts, images):
            pv, g = self.images(list(ims or []))
            pix.append(pv)
            grids.append(g)
            texts.append(self.expand(p, g))
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pixel_values": pix,
                "image_grid_thw": grids}


def vision_forward_kwargs(model, input_ids: torch.Tensor, pixel_values: Sequence[torch.Tensor] | None,
                          image_grid_thw: Sequence[torch.Tensor] | None,
                          response_from: int | None = None) -> dict[str, torch.Tensor]:
    """The extra forward arguments of a VL model for these rows (``{}`` when no row has an image): the rows'
    pixel values and grids concatenated, and ``mm_token_type_ids`` (1 on image tokens) from which the model
    computes its multimodal positions.

    ``response_from``: columns from there on are generated text. An image token there (a response from an
    engine that does not suppress them) would not match any image; it is replaced by the pad id in the
    returned ``input_ids`` (the log-prob of the generated id is still read from the logits)."""
    if pixel_values is None or image_grid_thw is None:
        return {}
    grids = [g for g in image_grid_thw if g.numel()]
    if not grids:
        return {}
    device = input_ids.device
    dtype = next(model.parameters()).dtype
    pix = torch.cat([p for p in pixel_values if p.numel()]).to(device=device, dtype=dtype)
    out = {}
    if response_from is not None:
        tail = input_ids[:, response_from:]
        bad = torch.isin(tail, torch.tensor(_vision_pad_ids(model), device=device))
        if bool(bad.any()):
            input_ids = input_ids.clone()
            pad = getattr(model.config, "pad_token_id", None)
            pad = getattr(getattr(model.config, "text_config", None), "pad_token_id", pad) or 0
            input_ids[:, response_from:] = tail.masked_fill(bad, pad)
            out["input_ids"] = input_ids
    image_id = model.config.image_token_id
    out.update({"pixel_values": pix, "image_grid_thw": torch.cat(grids).to(device),
                "mm_token_type_ids": (input_ids == image_id).int()})
    return out


def _vision_pad_ids(model) -> list[int]:
    cfg = model.config
    return [i for i in (getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None)) if i is not None]


def suppressed_token_ids(model, device=None) -> torch.Tensor | None:
    """Token ids a VL model must never sample (its image / video placeholders), ``None`` for a text model."""
    if not is_vision_model(model):
        return None
    ids = _vision_pad_ids(model)
    return torch.tensor(ids, device=device) if ids else None


def rope_deltas(model) -> torch.Tensor | None:
    """The model's multimodal position offsets [B, 1] from its last prefill (``None`` for text models)."""
    inner = getattr(model, "model", None)
    return getattr(inner, "rope_deltas", None)


# ------------------------------------------------------------------------------------------------ loading
def build_image_processor(min_pixels: int = 56 * 56, max_pixels: int = 112 * 112, patch_size: int = 14,
                          merge_size: int = 2, temporal_patch_size: int = 2):
    """The Qwen2-VL image processor (PIL backend, no torchvision needed) with the given pixel budget."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size,
                                    merge_size=merge_size, temporal_patch_size=temporal_patch_size)


def load_processor(path: str | None = None, tiny: dict | None = None, vision: dict | None = None,
                   image_processor: dict | None = None, revision: str | None = None,
                   trust_remote_code: bool = False, **_) -> VisionProcessor | None:
    """The :class:`VisionProcessor` of a model config (the same keys as ``load_model``), ``None`` for a text
    model. ``image_processor``: overrides such as ``{min_pixels, max_pixels}`` (the vision-token budget)."""
    overrides = dict(image_processor or {})
    if tiny is not None:
        if vision is None:
            return None
        v = dict(vision)
        return VisionProcessor(build_image_processor(
            patch_size=v.get("patch_size", 14), merge_size=v.get("spatial_merge_size", 2),
            temporal_patch_size=v.get("temporal_patch_size", 2), **overrides))
    from transformers import AutoConfig, AutoImageProcessor

    from steprl.models.paths import resolve_path

    src = resolve_path(path)
    config = AutoConfig.from_pretrained(src, revision=revision, trust_remote_code=trust_remote_code)
    if not is_vision_config(config):
        return None
    # min_pixels / max_pixels go to the processor's constructor, which turns them into its size budget
    proc = AutoImageProcessor.from_pretrained(src, revision=revision, trust_remote_code=trust_remote_code,
                                              **overrides)
    return VisionProcessor(proc)
