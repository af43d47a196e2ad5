"""Batched sampling with a KV cache on any HF causal LM: the default rollout engine.

Prompts are left-padded and encoded once; each is repeated ``n`` times so the ``n`` samples of a prompt are
adjacent rows (one group). Decoding runs a plain loop over ``model.forward`` with a ``DynamicCache``, which
keeps per-token Python overhead lower than ``generate()`` and lets the engine draw from its own
``torch.Generator`` (so rollouts are reproducible and resumable without touching the global RNG). Rows that
finished leave the decode batch (``compact``) without changing what the others sample.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56: caches made of layers
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover
    DynamicLayer = None

from steprl.models.build import cache_kwarg
from steprl.models.vision import rope_deltas, suppressed_token_ids, vision_forward_kwargs
from steprl.rollout.types import Rollouts
from steprl.utils import dist as D
from steprl.utils.fsdp import is_sharded


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
                generator: torch.Generator | None, rows: torch.Tensor | None = None,
                batch: int | None = None) -> torch.Tensor:
    """One token per row from ``logits`` [B, V] (temperature, then top-k, then top-p).

    ``rows`` (with ``batch``): ``logits`` hold only the rows ``rows`` (ascending indices) of a batch of ``batch``
    rows (a decode batch compacted as rows finish). The draw then consumes the random numbers of a draw for the
    whole batch and gives each row the ones it would have had there, so compacting leaves the samples as
    they were."""
    logits = logits.float() / temperature
    # a diverged model must not crash sampling: NaN -> -inf, and a row with nothing left samples uniformly.
    # A finite maximum in every row (the usual case) means there is nothing to repair: skip the three passes.
    if not bool(torch.isfinite(logits.amax(-1)).all()):
        logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=1e30)
        logits = torch.where(torch.isinf(logits).all(-1, keepdim=True) & (logits < 0), torch.zeros_like(logits),
                             logits)
    if 0 < top_k < logits.shape[-1]:  # 0 or -1: no top-k (vLLM / verl use -1)
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    if rows is not None:  # the whole batch's exponential variates, this subset's rows of them
        noise = probs.new_empty(batch, probs.shape[-1]).exponential_(generator=generator)
        return (probs / noise.index_select(0, rows)).argmax(-1)
    if probs.device.type != "cpu":
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    # on CPU this is torch.multinomial(probs, 1) draw for draw (its algorithm for one sample on every device:
    # exponential variates of the probs' shape, then argmax of probs / variates), without its input checks
    # (two reductions and a sync per step): probs are valid here
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(-1)


if DynamicLayer is not None:
    class _PreallocatedLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys and values are views into one buffer sized for the whole decode.

        ``DynamicLayer`` concatenates every step's new key/value onto the cache (a copy of the whole cache per
        step and layer: O(T^2) copying, a third of the decode time of a small model on CPU); this writes them in
        place. The views it returns hold exactly the values the concatenation would, so attention is unchanged.
        Past its capacity it falls back to concatenation.
        """

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity

        def lazy_initialization(self, key_states, value_states) -> None:
            b, h, _, _ = key_states.shape
            self.device = key_states.device
            self._k = key_states.new_empty(b, h, self.capacity, key_states.shape[-1])
            self._v = value_states.new_empty(b, value_states.shape[1], self.capacity, value_states.shape[-1])
            self._n = 0
            self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, k = self._n, key_states.shape[-2]
            if n + k > self.capacity or key_states.shape[0] != self._k.shape[0]:
                return super().update(key_states, value_states, *args, **kwargs)
            self._k[:, :, n:n + k].copy_(key_states)
            self._v[:, :, n:n + k].copy_(value_states)
            self._n = n + k
            self.keys, self.values = self._k[:, :, :n + k], self._v[:, :, :n + k]
            return self.keys, self.values


def _kv_cache(capacity: int) -> DynamicCache:
    """A ``DynamicCache`` whose layers are preallocated for ``capacity`` positions (where transformers allows)."""
    cache = DynamicCache()
    if DynamicLayer is not None and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer \
            and not getattr(cache, "layers", None):
        cache.layer_class_to_replicate = lambda: _PreallocatedLayer(capacity)
    return cache


@dataclass
class Sampling:
    """Sampling settings every rollout engine takes (HF and vLLM), checked once here.
    ``batch_size`` caps the sequences decoded at once (None: all)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    max_prompt_tokens: int | None = None
    batch_size: int | None = None
    min_new_tokens: int = 0  # EOS and stop strings are ignored before this many tokens (benchmarks: fixed length)
    tis_cap: float | None = None   # truncated importance sampling cap C against engine_logp (null: off)

    def check_sampling(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"rollout.min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], "
                             f"got {self.min_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"rollout.temperature must be > 0 (use greedy for argmax), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"rollout.tis_cap must be > 0 or null, got {self.tis_cap}")
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


@dataclass
class HFEngine(Sampling):
    """The HF engine: its own KV-cache decode loop over a transformers model."""

    # decode Qwen2 / Llama models with steprl.models.fast_decode (same math, less overhead): true (default)
    # wherever supported, "cpu" on CPU models only, false never (model.forward)
    fast_decode: bool | str = True
    # on a GPU the fast decode step is captured as CUDA graphs and replayed per token (false: eager launches)
    cuda_graph: bool = True
    # drop finished rows from the decode batch (KV cache, mask, positions) once they are >= 1/8 of it; the
    # samples stay the same (see _decode). Not with CUDA graphs, which are recorded for one batch size.
    compact: bool = True
    return_logprobs: bool = False  # also return the sampling log-probs of the drawn tokens (Rollouts.engine_logp)
    probe_tol: float | None = None  # start-up check: max mean |logp_trainer - logp_engine| on a fixed prompt

    def __post_init__(self):
        self.check_sampling()
        if self.fast_decode not in (True, False, "cpu"):
            raise ValueError(f"rollout.fast_decode must be true, false or cpu, got {self.fast_decode!r}")
        self._stop_window = max([16] + [4 * len(x) for x in self.stop])

    def generate(self, model, tokenizer, prompts: list[str], n: int = 1, greedy: bool = False,
                 generator: torch.Generator | None = None, max_new_tokens: int | None = None,
                 images: list | None = None, processor=None) -> Rollouts:
        """Sample ``n`` responses for each prompt; rows ``i*n .. i*n+n-1`` answer prompt ``i``.

        ``images`` (one list per prompt) go through ``processor`` (a ``steprl.models.vision.VisionProcessor``)
        and the rollouts carry the rows' ``pixel_values`` / ``image_grid_thw``."""
        with _grad_off(model):
            return self._generate(model, tokenizer, prompts, n, greedy, generator, max_new_tokens, images, processor)

    def _generate(self, model, tokenizer, prompts, n, greedy, generator, max_new_tokens, images,
                  processor) -> Rollouts:
        device = next(model.parameters()).device
        pix = grids = None
        if images is not None and any(len(ims or ()) for ims in images):
            if processor is None:
                raise ValueError("the prompts have images but the model has no image processor: use a "
                                 "vision-language model (e.g. model=tiny_vl or model=qwen2_5_vl_3b)")
            enc = processor.encode(tokenizer, list(prompts), images)
            if self.max_prompt_tokens is not None and enc["input_ids"].shape[1] > self.max_prompt_tokens:
                raise ValueError(f"rollout.max_prompt_tokens={self.max_prompt_tokens} is shorter than a prompt with "
                                 f"its image tokens ({enc['input_ids'].shape[1]}); image prompts are not truncated")
            pix = [enc["pixel_values"][i] for i in range(len(prompts)) for _ in range(n)]
            grids = [enc["image_grid_thw"][i] for i in range(len(prompts)) for _ in range(n)]
        else:
            side, tokenizer.truncation_side = tokenizer.truncation_side, "left"  # keep the end of a long prompt
            try:
                enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False,
                                truncation=self.max_prompt_tokens is not None, max_length=self.max_prompt_tokens)
            finally:
                tokenizer.truncation_side = side
        prompt_ids = enc["input_ids"].repeat_interleave(n, 0).to(device)
        prompt_mask = enc["attention_mask"].repeat_interleave(n, 0).to(device)
        limit = max_new_tokens or self.max_new_tokens
        step = self.batch_size or prompt_ids.shape[0]
        logps: list[torch.Tensor] | None = [] if self.return_logprobs else None
        parts = [self._decode(model, tokenizer, prompt_ids[i:i + step], prompt_mask[i:i + step], limit,
                              greedy, generator,
                              vision=None if pix is None else (pix[i:i + step], grids[i:i + step]), logps=logps,
                              group=n if step % n == 0 else 1)
                 for i in range(0, prompt_ids.shape[0], step)]
        width = max(p[0].shape[1] for p in parts)
        pad = tokenizer.pad_token_id
        response_ids = torch.cat([torch.nn.functional.pad(p[0], (0, width - p[0].shape[1]), value=pad)
                                  for p in parts])
        response_mask = torch.cat([torch.nn.functional.pad(p[1], (0, width - p[1].shape[1])) for p in parts])
        finish = [r for p in parts for r in p[2]]
        texts = self.decode_texts(tokenizer, response_ids, response_mask)
        n_rows = response_ids.shape[0]
        engine_logp = None if logps is None else torch.cat(
            [torch.nn.functional.pad(lp, (0, width - lp.shape[1])) for lp in logps]) * response_mask
        return Rollouts(engine_logp=engine_logp,
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
            response_mask=response_mask, loss_mask=response_mask.clone(),
            step_ids=torch.full_like(response_ids, -1),
            group_ids=torch.arange(n_rows, device=device) // n,
            sample_idx=torch.arange(n_rows, device=device) // n,
            texts=texts, finish_reason=finish, pixel_values=pix, image_grid_thw=grids)

    def continue_ids(self, model, tokenizer, contexts: list[list[int]], max_new_tokens: int | None = None,
                     greedy: bool = False, generator: torch.Generator | None = None,
                     stop: tuple[str, ...] | list[str] = ()) -> tuple[list[list[int]], list[str]]:
        """Continue each token-id context (one row each; used by the multi-turn AgentLoop).

        Returns the new tokens of each row, up to and including its first EOS or stop string (``stop`` is
        added to the engine's own), and its finish reason (``stop`` | ``length``).
        """
        with _grad_off(model):
            return self._continue_ids(model, tokenizer, contexts, max_new_tokens, greedy, generator, stop)

    def _continue_ids(self, model, tokenizer, contexts, max_new_tokens, greedy, generator, stop):
        engine = dataclasses.replace(self, stop=tuple(dict.fromkeys((*self.stop, *stop)))) if stop else self
        device = next(model.parameters()).device
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, c in enumerate(contexts):
            if c:
                ids[r, width - len(c):] = torch.as_tensor(c, dtype=torch.long)
                mask[r, width - len(c):] = 1
        limit = max_new_tokens or self.max_new_tokens
        step = self.batch_size or len(contexts)
        tokens, finish = [], []
        for i in range(0, len(contexts), step):
            toks, m, fin = engine._decode(model, tokenizer, ids[i:i + step].to(device), mask[i:i + step].to(device),
                                          limit, greedy, generator)
            tokens += [t[k.bool()].tolist() for t, k in zip(toks.cpu(), m.cpu())]
            finish += fin
        return tokens, finish

    @staticmethod
    def decode_texts(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
        """Response texts without padding and special tokens (EOS dropped)."""
        rows = [ids[m.bool()].tolist() for ids, m in zip(response_ids.cpu(), response_mask.cpu())]
        return tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _decode(self, model, tokenizer, prompt_ids, prompt_mask, limit, greedy, generator, vision=None,
                logps: list | None = None, group: int = 1):
        """Decode all rows. ``group`` > 1: rows ``i*group .. i*group+group-1`` hold the same prompt (prefilled once)."""
        rows = prompt_ids.shape[0]
        device = prompt_ids.device
        eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)
        pad = tokenizer.pad_token_id
        P = prompt_ids.shape[1]
        cache = _kv_cache(P + limit)
        kw = cache_kwarg(model)
        # an FSDP-sharded model all-gathers its parameters in every forward: all ranks must decode equally long
        sync = D.is_distributed() and is_sharded(model)
        position = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.zeros(rows, P + limit, dtype=torch.long, device=device)  # written in place, no cat
        full_mask[:, :P] = prompt_mask
        mask = full_mask[:, :P]
        vis = vision_forward_kwargs(model, prompt_ids, *vision) if vision is not None else {}
        # Prompts without left padding need no attention mask at all: rows never attend to each other, and a
        # finished row's later positions only affect that row's discarded tokens. Without one, attention skips
        # building and applying a mask at every step.
        unpadded = not vis and bool(prompt_mask.all())
        banned = suppressed_token_ids(model, device)
        if vis:  # a VL model places the prompt with its own multimodal positions (see steprl.models.vision)
            out = model(input_ids=prompt_ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **vis,
                        **{kw: cache})
            next_pos = position[:, -1:] + 1 + rope_deltas(model).to(device)
            logits = out.logits[:, -1]
        else:
            # rows come in groups of `group` copies of one prompt: prefill each prompt once, then copy its cache
            g = group
            out = model(input_ids=prompt_ids[::g], attention_mask=None if unpadded else mask[::g],
                        position_ids=position[::g], use_cache=True, logits_to_keep=1, **{kw: cache})
            logits = out.logits[:, -1]
            if g > 1:
                _repeat_rows(cache, g)
                logits = logits.repeat_interleave(g, 0)
            next_pos = position[:, -1:] + 1
        use_fast = self.fast_decode is True or (self.fast_decode == "cpu" and device.type == "cpu")
        # CUDA graphs only outside autocast (a pure-dtype model): replaying casts under autocast's weight cache
        # has not been checked on a GPU; under autocast (hardware=gpu's bf16-mixed) the fast step runs eagerly
        graph = self.cuda_graph and device.type == "cuda" and not torch.is_autocast_enabled("cuda")
        fast = None if vis or sync or not use_fast else _fast_decoder(model, cache, P, full_mask if graph else None)
        tokens = torch.full((rows, limit), pad, dtype=torch.long, device=device)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=device)
        length = 0
        tok_lp = torch.zeros(rows, limit, device=device) if logps is not None else None
        # Compaction: `act` lists the rows (of `rows`) still in the decode batch, in order; None: all of them.
        # Logits, positions, the mask and the KV cache hold only those rows; tokens, done, stopped and the
        # log-probs stay full-size. Each row's draw uses the random numbers it would get in the full batch
        # (sample_next's `rows`), so the samples are the uncompacted ones (a row's logits may differ in the last
        # float bits: matrix products of another batch size can round differently).
        from steprl.models.fast_decode import CUDAGraphStep

        compact = self.compact and not isinstance(fast, CUDAGraphStep)
        act = None
        for t in range(limit):
            if banned is not None:  # a VL model must not write image placeholders (they need pixel rows)
                logits = logits.index_fill(-1, banned, float("-inf"))
            if t < self.min_new_tokens:
                logits = logits.index_fill(-1, eos, float("-inf"))
            nxt = logits.argmax(-1) if greedy else sample_next(
                logits, self.temperature, self.top_p, self.top_k, generator,
                rows=act, batch=None if act is None else rows)
            was_done = done if act is None else done[act]
            nxt = torch.where(was_done, torch.full_like(nxt, pad), nxt)
            at = slice(None) if act is None else act
            tokens[at, t] = nxt
            if logps is not None:  # the sampling distribution's log-prob (temperature applied, as vLLM's)
                lp = torch.log_softmax(logits.float() / self.temperature, -1).gather(-1, nxt[:, None])[:, 0]
                tok_lp[at, t] = lp
            length = t + 1
            hit = ~was_done & torch.isin(nxt, eos)
            if self.stop and length >= self.min_new_tokens:
                hit |= ~was_done & self._stop_hit(tokenizer, tokens[at, :length])
            stopped[at] = stopped[at] | hit
            now_done = was_done | hit
            done[at] = now_done
            # rows dropped from the batch had finished, so all rows are done when the batch's rows are (one sync)
            dead = int(now_done.sum())
            finished = dead == now_done.shape[0]
            if t == limit - 1 or (D.all_ranks(finished) if sync else finished):
                break
            full_mask[:, P + t] = ~was_done
            if compact and dead and not finished and 8 * dead >= now_done.shape[0]:
                keep = torch.nonzero(~now_done).flatten()
                act = keep if act is None else act[keep]
                nxt, next_pos, full_mask = nxt[keep], next_pos[keep], full_mask[keep]
                _select_rows(cache, keep, P + t)
                if fast is not None:
                    fast.kv = [(x._k, x._v) for x in cache.layers]
            mask = full_mask[:, :P + t + 1]
            if fast is not None:
                logits = fast.step(nxt, next_pos[:, 0], None if unpadded else mask)
            else:
                out = model(input_ids=nxt[:, None], attention_mask=None if unpadded else mask, use_cache=True,
                            **{kw: cache},
                            position_ids=next_pos[None].expand(3, -1, -1) if vis else next_pos)
                logits = out.logits[:, -1]
            next_pos = next_pos + 1
        tokens = tokens[:, :length]
        # a row's response runs up to and including its first EOS / stop token
        is_end = torch.isin(tokens, eos)
        if self.stop:
            is_end = is_end | self._stop_positions(tokenizer, tokens, stopped)
        first_end = torch.where(is_end.any(-1), is_end.float().argmax(-1), torch.full_like(done, length,
                                                                                         dtype=torch.long))
        response_mask = torch.arange(length, device=device)[None, :] <= first_end[:, None]
        tokens = tokens.masked_fill(~response_mask, pad)
        finish = ["stop" if s else "length" for s in stopped.tolist()]
        if logps is not None:
            logps.append(tok_lp[:, :length].masked_fill(~response_mask, 0.0))
        return tokens, response_mask.long(), finish

    def _stop_hit(self, tokenizer, tokens: torch.Tensor) -> torch.Tensor:
        tail = tokenizer.batch_decode(tokens[:, -self._stop_window:].tolist(), skip_special_tokens=True)
        return torch.tensor([any(t.endswith(s) for s in self.stop) for t in tail], device=tokens.device)

    def _stop_positions(self, tokenizer, tokens: torch.Tensor, stopped: torch.Tensor) -> torch.Tensor:
        """Marks, for each stopped row, the token at which a stop string first completed."""
        marks = torch.zeros_like(tokens, dtype=torch.bool)
        for r in torch.nonzero(stopped).flatten().tolist():
            ids = tokens[r].tolist()
            for t in range(max(0, self.min_new_tokens - 1), len(ids)):
                text = tokenizer.decode(ids[max(0, t - self._stop_window + 1):t + 1], skip_special_tokens=True)
                if any(text.endswith(s) for s in self.stop):
                    marks[r, t] = True
                    break
        return marks


def _repeat_rows(cache, g: int) -> None:
    """Repeat every row of a prefilled cache ``g`` times in place (row i -> rows i*g .. i*g+g-1)."""
    layers = getattr(cache, "layers", None)
    if layers is None:  # pragma: no cover - transformers without cache layers
        cache.batch_repeat_interleave(g)
        return
    for layer in layers:
        if DynamicLayer is not None and isinstance(layer, _PreallocatedLayer) and layer.is_initialized:
            layer._k, layer._v = layer._k.repeat_interleave(g, 0), layer._v.repeat_interleave(g, 0)
            layer.keys, layer.values = layer._k[:, :, :layer._n], layer._v[:, :, :layer._n]
        else:
            layer.batch_repeat_interleave(g)


def _select_rows(cache, keep: torch.Tensor, n: int) -> None:
    """Keep only the rows ``keep`` of a cache whose first ``n`` positions are written, in place. A preallocated
    layer gets new buffers of the same capacity with the kept rows' first ``n`` positions copied in (the rest is
    never read). ``n`` is the caller's count: the fast decoder writes into the buffers without advancing the
    layer's own."""
    for layer in getattr(cache, "layers", None) or ():
        if DynamicLayer is not None and isinstance(layer, _PreallocatedLayer) and layer.is_initialized:
            k = layer._k.new_empty(keep.numel(), *layer._k.shape[1:])
            v = layer._v.new_empty(keep.numel(), *layer._v.shape[1:])
            k[:, :, :n] = layer._k[keep, :, :n]
            v[:, :, :n] = layer._v[keep, :, :n]
            layer._k, layer._v = k, v
            layer.keys, layer.values = k[:, :, :layer._n], v[:, :, :layer._n]
        else:
            layer.batch_select_indices(keep)
    if getattr(cache, "layers", None) is None:  # pragma: no cover - transformers without cache layers
        cache.batch_select_indices(keep)


def _fast_decoder(model, cache, n: int, graph_mask: torch.Tensor | None = None):
    """A :class:`~steprl.models.fast_decode.FastDecoder` over ``cache``'s preallocated buffers (which hold ``n``
    prompt positions), or None where the model or the cache is not one it handles (decode via ``model.forward``).
    With ``graph_mask`` (the decode's [rows, capacity] attention-mask buffer, CUDA only) its step is replayed as
    a CUDA graph. Fused q/k/v and gate/up copies on CPU only (measured faster there); on a GPU they would be a
    transient copy of most of the weights."""
    from steprl.models.fast_decode import CUDAGraphStep, FastDecoder, supported

    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or not layers or not supported(model) \
            or len(layers) != model.config.num_hidden_layers \
            or not all(isinstance(x, _PreallocatedLayer) and x.is_initialized and x._n == n for x in layers):
        return None
    dec = FastDecoder(model, [(x._k, x._v) for x in layers], n, fuse=layers[0]._k.device.type == "cpu")
    if graph_mask is None:
        return dec
    assert graph_mask.shape == (layers[0]._k.shape[0], layers[0]._k.shape[2]), "mask buffer != cache shape"
    return CUDAGraphStep(dec, graph_mask)


def _grad_off(model):
    """``inference_mode`` for decoding; ``no_grad`` for an FSDP2-sharded model, whose all-gather buffers are
    reused in training and must not become inference tensors."""
    return torch.no_grad() if is_sharded(model) else torch.inference_mode()


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(cfg_eos)
    ids.discard(None)
    return ids
