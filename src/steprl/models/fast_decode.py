"""A hand-written single-token decode step for plain Qwen2 / Llama causal LMs (the HF engine's fast path).

One decode step of a small model through ``model.forward`` is mostly Python: per layer a dozen modules,
decorators, the mask builder, the rotary module and SDPA (whose CPU flash kernel is slow for one query).
:class:`FastDecoder` does the same arithmetic with the model's own weights and a contiguous KV buffer:

    x = embed(token)
    per layer:  h = rmsnorm(x);  q, k, v = h Wq + bq, h Wk + bk, h Wv + bv   (one fused matmul)
                q, k = rotary(q, pos), rotary(k, pos);  K[:, :, n], V[:, :, n] = k, v
                x = x + attention(q, K[:, :, :n+1], V[:, :, :n+1]) Wo;  x = x + down(silu(gate(h')) * up(h'))
    logits = lm_head(rmsnorm(x))

It is used only where :func:`supported` says the model is one whose forward this reproduces exactly (see there);
everything else decodes through ``model.forward``. Prefill stays with ``model.forward``: the engine's
preallocated cache layers hold the prompt's keys and values, and the decoder writes after them.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

_ARCHS = ("Qwen2ForCausalLM", "LlamaForCausalLM")


# ------------------------------------------------------------------------------------------------ the math
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, computed in float32 (as HF's Qwen2/Llama RMSNorm)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the halves of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding ``x cos + rotate_half(x) sin`` (``cos``/``sin`` broadcast against ``x``)."""
    return x * cos + rotate_half(x) * sin


def rotary_table(inv_freq: torch.Tensor, positions: int, scaling: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``, ``sin`` [positions, head_dim] of default RoPE for positions ``0 .. positions-1`` (HF's formula:
    frequencies ``pos * inv_freq`` repeated over both halves, times the attention scaling)."""
    pos = torch.arange(positions, device=inv_freq.device, dtype=torch.float)
    freqs = pos[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Single-query grouped attention. ``q`` [B, Hkv, g, d] (the g query heads sharing each KV head), ``k``, ``v``
    [B, Hkv, T, d], ``mask`` [B, T] (nonzero: attend) or None -> [B, Hkv, g, d]. Softmax in float32."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, Hkv, g, T]
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v)


# ------------------------------------------------------------------------------------------------ support
def rope_type(cfg) -> str:
    """The config's RoPE type (``default`` when it names none)."""
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type", "default"))


def sliding_window(cfg) -> bool:
    """Whether any layer of the config attends through a sliding window."""
    return any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())) \
        or bool(getattr(cfg, "use_sliding_window", False))


def unsupported_reason(model) -> str | None:
    """Why :class:`FastDecoder` cannot reproduce ``model``'s forward (None: it can).

    Supported: an unwrapped ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` (no peft adapters, no FSDP sharding,
    no quantisation, no accelerate hooks) with default RoPE, SiLU MLP, full attention in every layer (no
    sliding window) and tied or untied embeddings, q/k/v/o and MLP biases as its modules have them."""
    name = type(model).__name__
    if name not in _ARCHS:
        return f"architecture {name} (fast decode knows {', '.join(_ARCHS)})"
    cfg = model.config
    if hasattr(model, "peft_config") or getattr(model, "is_quantized", False) \
            or getattr(cfg, "quantization_config", None) is not None:
        return "peft / quantised model"
    from steprl.utils.fsdp import is_sharded

    if is_sharded(model):
        return "FSDP-sharded model"
    if any(hasattr(m, "_hf_hook") for m in model.modules()):
        return "accelerate hooks (device map / offload)"
    if rope_type(cfg) != "default":
        return f"rope type {rope_type(cfg)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act}"
    if sliding_window(cfg):
        return "sliding-window attention"
    if (getattr(cfg, "pretraining_tp", 1) or 1) > 1:
        return "pretraining_tp > 1"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        return "unexpected module layout"
    for layer in inner.layers:
        a = getattr(layer, "self_attn", None)
        mlp = getattr(layer, "mlp", None)
        if a is None or mlp is None or not all(hasattr(a, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) \
                or not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            return "unexpected module layout"
        if any(type(getattr(a, p)) is not torch.nn.Linear for p in ("q_proj", "k_proj", "v_proj", "o_proj")) \
                or any(type(getattr(mlp, p)) is not torch.nn.Linear for p in ("gate_proj", "up_proj", "down_proj")):
            return "projections are not plain nn.Linear (adapters / quantised layers)"
    if type(model.lm_head) is not torch.nn.Linear:
        return "lm_head is not a plain nn.Linear"
    return None


def supported(model) -> bool:
    return unsupported_reason(model) is None


# ------------------------------------------------------------------------------------------------ decoder
def _linears(h: torch.Tensor, pairs: list, sizes: list[int]) -> list[torch.Tensor]:
    """``h`` through the projections ``pairs`` [(weight, bias)]: one fused matrix split into ``sizes``, or one
    matrix per output."""
    if len(pairs) == 1:
        return list(F.linear(h, *pairs[0]).split(sizes, -1))
    return [F.linear(h, w, b) for w, b in pairs]


class FastDecoder:
    """Decode steps of ``model`` over key/value buffers ``kv`` (one ``(K, V)`` pair [B, Hkv, capacity, d] per
    layer) that already hold ``n`` positions (the prompt). ``fuse``: q/k/v and gate/up as one matrix each (fewer,
    larger matmuls: faster on CPU, but a copy of most of the weights); without it the model's own weights are
    used as they are. Build one per decode: after an optimiser step fused copies are stale."""

    def __init__(self, model, kv: list[tuple[torch.Tensor, torch.Tensor]], n: int, fuse: bool = True):
        cfg, inner = model.config, model.model
        self.n, self.kv = n, kv
        self.eps = cfg.rms_norm_eps
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        a0 = inner.layers[0].self_attn
        self.head_dim = a0.head_dim
        self.scale = a0.scaling
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.lm_bias = model.lm_head.bias
        capacity = kv[0][0].shape[2]
        rot = inner.rotary_emb
        self.cos, self.sin = rotary_table(rot.inv_freq, capacity, float(getattr(rot, "attention_scaling", 1.0)),
                                          self.embed.dtype)

        def proj(*ls):  # [(weight, bias)]: one fused pair, or the modules' own
            if not fuse:
                return [(l.weight, l.bias) for l in ls]
            bias = None if all(l.bias is None for l in ls) else torch.cat(
                [l.bias if l.bias is not None else l.weight.new_zeros(l.out_features) for l in ls])
            return [(torch.cat([l.weight for l in ls]), bias)]

        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon,
                proj(a.q_proj, a.k_proj, a.v_proj), a.o_proj.weight, a.o_proj.bias,
                layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon,
                proj(m.gate_proj, m.up_proj), m.down_proj.weight, m.down_proj.bias,
            ))

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, write, attend) -> torch.Tensor:
        """Logits [B, V] of one step; ``write(K, V, k, v)`` stores the step's keys/values [B, Hkv, d] and
        ``attend(q, K, V)`` [B, Hkv, g, d] -> [B, Hkv, g, d] attends over the buffers."""
        B = tokens.shape[0]
        H, Hkv, d = self.heads, self.kv_heads, self.head_dim
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]  # [B, 1, d]
        for (ln1, eps1, qkv, w_o, b_o, ln2, eps2, gu, w_down, b_down), (K, V) in zip(self.layers, self.kv):
            q, k, v = _linears(rms_norm(x, ln1, eps1), qkv, [H * d, Hkv * d, Hkv * d])
            q = apply_rotary(q.view(B, H, d), cos, sin)
            write(K, V, apply_rotary(k.view(B, Hkv, d), cos, sin), v.view(B, Hkv, d))
            o = attend(q.view(B, Hkv, H // Hkv, d), K, V)
            x = x + F.linear(o.reshape(B, H * d), w_o, b_o)
            gate, up = _linears(rms_norm(x, ln2, eps2), gu, [w_down.shape[1]] * 2)
            x = x + F.linear(F.silu(gate) * up, w_down, b_down)
        return F.linear(rms_norm(x, self.norm, self.eps), self.lm_head, self.lm_bias)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, V] for ``tokens`` [B] at ``positions`` [B]; appends their keys/values to the buffers.
        ``mask`` [B, n+1] (nonzero: attend) over all positions so far, this one included, or None (attend all)."""
        n = self.n

        def write(K, V, k, v):
            K[:, :, n], V[:, :, n] = k, v

        out = self._forward(tokens, positions, write,
                            lambda q, K, V: decode_attention(q, K[:, :, :n + 1], V[:, :, :n + 1], self.scale, mask))
        self.n = n + 1
        return out

    def static_step(self, tokens: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor,
                    mask: torch.Tensor, length: int) -> torch.Tensor:
        """:meth:`step` with every shape fixed (what a CUDA graph can replay): writes the keys/values at
        ``slot`` (a 1-element long tensor) and attends over the buffers' first ``length`` positions under
        ``mask[:, :length]`` (``mask`` [B, capacity], nonzero: attend; zero past the current position). Buffer
        positions past the prompt must hold finite values (:class:`CUDAGraphStep` zeroes them): a masked
        position's probability is exactly 0, and 0 x (inf or NaN) would not be. Does not advance ``n``."""
        def write(K, V, k, v):
            K.index_copy_(2, slot, k[:, :, None])
            V.index_copy_(2, slot, v[:, :, None])

        return self._forward(tokens, positions, write, lambda q, K, V: decode_attention(
            q, K[:, :, :length], V[:, :, :length], self.scale, mask[:, :length]))


def attended_length(slot: int, capacity: int, bucket: int) -> int:
    """Positions a graphed step attends over when it writes ``slot``: ``slot + 1`` rounded up to a multiple of
    ``bucket``, at most ``capacity`` (so one graph serves every slot of a bucket)."""
    return min(capacity, -(-(slot + 1) // bucket) * bucket)


class CUDAGraphStep:
    """A :class:`FastDecoder`'s step captured as CUDA graphs and replayed for every later token.

    A decode step of a small model on a GPU is hundreds of tiny kernel launches, which the CPU issues more slowly
    than the GPU runs them; a replay is one launch. A graph records :meth:`FastDecoder.static_step` on fixed
    input buffers (tokens, positions, the cache slot) and on ``mask`` [B, capacity], the engine's attention-mask
    buffer, which the engine updates in place before each step. Attention runs over a fixed number of positions,
    the current one rounded up to a multiple of ``bucket`` (one graph per such length, captured when first
    reached, all in one memory pool), with the positions not yet written masked out (their probability is exactly
    0): the same arithmetic as the eager step, at most ``bucket - 1`` masked positions more per step. A capture
    warms up on a side stream first. The returned logits live in a graph's output buffer, overwritten when that
    graph is replayed again."""

    def __init__(self, decoder: FastDecoder, mask: torch.Tensor, bucket: int = 256):
        self.dec, self.mask, self.bucket = decoder, mask, bucket
        B, dev = mask.shape[0], mask.device
        self.tokens = torch.zeros(B, dtype=torch.long, device=dev)
        self.positions = torch.zeros(B, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        for K, V in decoder.kv:  # the buffers past the prompt were allocated uninitialised
            K[:, :, decoder.n:].zero_()
            V[:, :, decoder.n:].zero_()
        self.graphs: dict[int, tuple] = {}  # attended length -> (graph, its output logits)
        self.pool = None
        self.failed = False

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`FastDecoder.step`; ``mask`` is ignored (the graph reads the full mask buffer)."""
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.slot.fill_(self.dec.n)
        length = attended_length(self.dec.n, self.mask.shape[1], self.bucket)
        run = lambda: self.dec.static_step(self.tokens, self.positions, self.slot, self.mask, length)  # noqa: E731
        if not self.failed and length not in self.graphs:
            self._capture(length, run)
        if self.failed:
            out = run()
        else:
            graph, out = self.graphs[length]
            graph.replay()
        self.dec.n += 1
        return out

    def _capture(self, length: int, run) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (library handles, allocator); writes the slot the replay rewrites
            run()
        torch.cuda.current_stream().wait_stream(side)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = run()
            self.pool = self.pool or graph.pool()
            self.graphs[length] = (graph, out)
        except RuntimeError as e:  # the same arithmetic without a graph: slower, not wrong
            warnings.warn(f"rollout: CUDA graph capture of the decode step failed ({e}); decoding without it "
                          "(rollout.cuda_graph=false skips the attempt)", stacklevel=3)
            self.failed = True
