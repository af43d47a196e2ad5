"""Training forward with each distinct prompt computed once: the G samples of a group share their prompt.

A GRPO micro-batch holds several responses to each prompt; a plain forward over ``[prompt, response]`` rows
computes every prompt's hidden states once per response. Here the distinct prompts go through the model
once (keeping their keys/values), the keys/values are gathered back to the rows (a differentiable index, so
the gradient of a shared prompt is the sum over its rows, exactly as with repeated prompts), and the responses
run on top of them. Same logits up to float rounding; on the benchmark's shapes (41-token prompts, 64-token
responses, G = 8) about a third fewer token-forwards (and backwards) in the update.

Used only for plain full-attention decoder LMs (see :func:`unsupported_reason`), where attention over a cache
is the same as attention over the concatenated sequence.
"""
from __future__ import annotations

import torch

from steprl.models.fast_decode import rope_type, sliding_window

_ARCHS = ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot run the shared-prompt forward (None: it can). Supported: Qwen2 / Qwen3 / Llama /
    Mistral causal LMs (optionally peft-wrapped) with full attention in every layer, a RoPE whose frequencies do
    not depend on the sequence length, no gradient checkpointing (which turns the cache off), not FSDP-sharded
    (ranks must run the same forward calls)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    if name not in _ARCHS:
        return f"architecture {name}"
    cfg = base.config
    ckpt = getattr(base, "is_activation_checkpointing", None)  # transformers >= 5; older: is_gradient_checkpointing
    if ckpt if ckpt is not None else getattr(base, "is_gradient_checkpointing", False):
        return "gradient checkpointing"
    if sliding_window(cfg) or (name == "MistralForCausalLM" and getattr(cfg, "sliding_window", None) is not None):
        return "sliding-window attention"
    if rope_type(cfg) in ("dynamic", "longrope"):
        return "sequence-length dependent RoPE"
    from steprl.utils.fsdp import is_sharded

    if is_sharded(model):
        return "FSDP-sharded model"
    return None


def supported(model) -> bool:
    return unsupported_reason(model) is None


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct prompt rows (ids and mask both equal) -> ``(first, inverse)``: ``first`` [U] a row index of each
    distinct prompt, ``inverse`` [N] the distinct prompt of each row (``first[inverse]`` rows equal the rows)."""
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], 1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), -1, dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(key), device=key.device), "amin", include_self=False)
    return first, inverse


def shared_prompt_logits(model, ids: torch.Tensor, att: torch.Tensor, pos: torch.Tensor, n_prompt: int,
                         cache_kwarg: str = "cache") -> torch.Tensor | None:
    """Logits predicting the response tokens, [N, T, V], for rows ``ids`` = [prompt (``n_prompt`` columns,
    left-padded), response (T columns, right-padded)] with attention mask ``att`` and positions ``pos``; or None
    when no two rows share a prompt or a prompt is empty (then a plain forward is cheaper or needed).
    Row i's logits at response column t predict response token t (the first from the prompt's last position)."""
    from transformers import DynamicCache

    p_ids, p_mask = ids[:, :n_prompt], att[:, :n_prompt]
    if n_prompt == 0 or not bool(p_mask[:, -1].all()):
        return None
    first, inverse = prompt_groups(p_ids, p_mask)
    if len(first) == len(ids):
        return None
    u_mask = p_mask[first]
    cache = DynamicCache()
    head = model(input_ids=p_ids[first], attention_mask=None if bool(u_mask.all()) else u_mask,
                 position_ids=pos[first, :n_prompt], use_cache=True, logits_to_keep=1,
                 **{cache_kwarg: cache}).logits[inverse]  # [N, 1, V]: predicts response token 0
    T = ids.shape[1] - n_prompt
    if T == 1:
        return head
    cache.batch_select_indices(inverse)
    tail = model(input_ids=ids[:, n_prompt:-1], attention_mask=att[:, :-1], position_ids=pos[:, n_prompt:-1],
                 use_cache=True, **{cache_kwarg: cache}).logits  # [N, T-1, V]
    return torch.cat([head, tail], 1)
