"""Padding-free (packed) training forward: the rows of a micro-batch laid end to end in one row of tokens.

A padded micro-batch of ``[prompt (left-padded), response (right-padded)]`` rows pays for every padding
position in every matrix product, forward and backward; with long responses of varied lengths that is up to
half of the update (a micro-batch is as wide as its longest row). Here the real tokens only go through the
model, as one row of ``N`` tokens:

* each sequence's position ids restart at 0 (rotary positions are those of the padded forward);
* attention is restricted to each sequence: query *segments* ``cu_q`` attend causally to key segments
  ``cu_k`` (lower-right aligned when a segment has more keys than queries), through a variable-length
  attention (:func:`packed_attention`: flash-attention's varlen kernel on a GPU in half precision when the
  ``flash_attn`` package is installed; otherwise one exact causal SDPA call per segment);
* with ``share_prompt`` the G responses of a prompt share the prompt's tokens: the prompt is one segment,
  each response a segment whose keys are the prompt's followed by its own (the shared-prompt forward of
  :mod:`steprl.models.shared_prefix` without padding);
* a response's last token predicts nothing that is scored, so it is left out; the logits are computed only
  at the positions that predict a response token (``logit_index``) and scattered back to the padded
  ``[B, T]`` layout the losses use (0 at padding).

Same log-probs and gradients as the padded forward up to float rounding (other matrix shapes, other sums).
Used only for the plain full-attention decoders :func:`steprl.models.shared_prefix.supported` accepts.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTN_NAME = "steprl_packed"


@dataclass
class Packed:
    """One packed micro-batch. ``N`` packed tokens, ``S`` attention segments, ``K`` scored positions."""

    input_ids: torch.Tensor      # [1, N]
    position_ids: torch.Tensor   # [1, N] restarting at 0 for each sequence (continuing after a shared prompt)
    cu_q: torch.Tensor           # [S + 1] int32: query segment s is packed tokens cu_q[s]:cu_q[s+1]
    cu_k: torch.Tensor           # [S + 1] int32: its keys are k_index[cu_k[s]:cu_k[s+1]]
    k_index: torch.Tensor | None  # [Nk] packed positions of the keys, segment after segment; None: keys = queries
    max_q: int
    max_k: int
    logit_index: torch.Tensor    # [K] packed positions whose logits predict a response token
    rows: torch.Tensor           # [K] the row of the response token each predicts
    cols: torch.Tensor           # [K] its column in the padded response

    def buckets(self) -> list[tuple[torch.Tensor | int, torch.Tensor | int, int, int, int]]:
        """The segments grouped by shape: per distinct (queries, keys) lengths ``(lq, lk)``, ``(q_idx, k_idx, n,
        lq, lk)``: the packed positions [n, lq] of the n segments' queries and [n, lk] of their keys, or, where those
        positions are one run, its first position (an int: a view instead of a gather). Built once per layout
        on the CPU, so the layers' attention calls do not synchronise with a GPU."""
        if getattr(self, "_buckets", None) is None:
            cq, ck = self.cu_q.tolist(), self.cu_k.tolist()
            shapes: dict[tuple[int, int], list[int]] = {}
            for s in range(len(cq) - 1):
                shapes.setdefault((cq[s + 1] - cq[s], ck[s + 1] - ck[s]), []).append(s)
            dev = self.cu_q.device
            k_index = None if self.k_index is None else self.k_index.cpu()

            def run_or_index(idx: torch.Tensor):
                flat = idx.flatten()
                if bool((flat[1:] - flat[:-1] == 1).all()):
                    return int(flat[0])
                return idx.to(dev)

            out, order = [], []
            for (lq, lk), segs in shapes.items():
                q_idx = torch.tensor([cq[s] for s in segs])[:, None] + torch.arange(lq)
                k_idx = torch.tensor([ck[s] for s in segs])[:, None] + torch.arange(lk)
                if k_index is not None:  # positions in the packed row
                    k_idx = k_index[k_idx]
                out.append((run_or_index(q_idx), run_or_index(k_idx), len(segs), lq, lk))
                order.append(q_idx.flatten())
            self._buckets = out
            order = torch.cat(order)
            self._inverse = None  # None: the buckets' outputs are already in packed order
            if not torch.equal(order, torch.arange(len(order))):
                inverse = torch.empty_like(order)
                inverse[order] = torch.arange(len(order))
                self._inverse = inverse.to(dev)
        return self._buckets

    def bucket_inverse(self) -> torch.Tensor | None:
        """Where each packed position's output is in the buckets' concatenated outputs (None: in place)."""
        self.buckets()
        return self._inverse


def packable(att: torch.Tensor, n_prompt: int) -> str | None:
    """Why rows with attention mask ``att`` = [prompt (``n_prompt`` columns), response] cannot be packed (None:
    they can): each row must be one run of tokens, prompt left-padded and response right-padded, and a row with
    a response needs a prompt token (it predicts the first response token)."""
    p, r = att[:, :n_prompt].bool(), att[:, n_prompt:].bool()
    if n_prompt == 0:
        return "no prompt columns"
    if bool((p[:, 1:] < p[:, :-1]).any()):
        return "a prompt mask that is not left padding"
    if r.shape[1] > 1 and bool((r[:, 1:] > r[:, :-1]).any()):
        return "a response mask with a gap (not one run of tokens)"
    if bool((r.any(1) & ~p[:, -1]).any()):
        return "a response without a prompt token"
    return None


def pack(ids: torch.Tensor, att: torch.Tensor, n_prompt: int, share_prompt: bool = False) -> Packed:
    """Pack rows ``ids`` [B, L] = [prompt (``n_prompt`` columns, left-padded), response (right-padded)] with
    attention mask ``att`` (see :func:`packable`). ``share_prompt``: rows with equal prompt ids and mask share
    one copy of the prompt (if no two rows do, the plain layout)."""
    why = packable(att, n_prompt)
    if why is not None:
        raise ValueError(f"pack: cannot pack these rows: {why}")
    dev = ids.device
    B = ids.shape[0]
    att = att.bool()
    p_len = att[:, :n_prompt].sum(1).tolist()
    r_len = att[:, n_prompt:].sum(1).tolist()
    groups: list[tuple[int, list[int]]]  # (row whose prompt is used, rows sharing it)
    if share_prompt:
        from steprl.models.shared_prefix import prompt_groups

        first, inverse = prompt_groups(ids[:, :n_prompt], att[:, :n_prompt].long())
        if len(first) == B:
            share_prompt = False
        else:
            members: list[list[int]] = [[] for _ in range(len(first))]
            for i, u in enumerate(inverse.tolist()):
                members[u].append(i)
            groups = [(int(f), m) for f, m in zip(first.tolist(), members)]
    tok, pos, cu_q, k_idx, cu_k = [], [], [0], [], [0]
    li, rows, cols = [], [], []
    n = 0

    def segment(q_start: int, q_len: int, prefix: range = range(0)) -> None:
        """A query segment; its keys (with ``share_prompt``): ``prefix``, then its own positions."""
        cu_q.append(cu_q[-1] + q_len)
        if share_prompt:
            k_idx.append(torch.arange(prefix.start, prefix.stop))
            k_idx.append(torch.arange(q_start, q_start + q_len))
            cu_k.append(cu_k[-1] + len(prefix) + q_len)

    if not share_prompt:
        for i in range(B):
            P, R = p_len[i], r_len[i]
            L = P + max(R - 1, 0)  # the last response token predicts nothing scored
            if L == 0:
                continue
            tok.append(ids[i, n_prompt - P:n_prompt + max(R - 1, 0)])
            pos.append(torch.arange(L))
            segment(n, L)
            li.append(torch.arange(n + P - 1, n + P - 1 + R))
            rows += [i] * R
            cols += range(R)
            n += L
    else:
        for f, members in groups:
            P = p_len[f]
            if P == 0:
                continue  # only rows without a response have an empty prompt (packable)
            tok.append(ids[f, n_prompt - P:n_prompt])
            pos.append(torch.arange(P))
            segment(n, P)
            prompt = range(n, n + P)
            n += P
            for i in members:
                R = r_len[i]
                if R == 0:
                    continue
                li.append(torch.tensor([prompt.stop - 1]))  # the prompt's last token predicts response token 0
                if R > 1:
                    tok.append(ids[i, n_prompt:n_prompt + R - 1])
                    pos.append(torch.arange(P, P + R - 1))
                    segment(n, R - 1, prompt)
                    li.append(torch.arange(n, n + R - 1))
                    n += R - 1
                rows += [i] * R
                cols += range(R)
    if n == 0:
        raise ValueError("pack: no tokens to pack (every row is empty)")
    q_lens = [b - a for a, b in zip(cu_q[:-1], cu_q[1:])]
    k_index, max_k = None, max(q_lens)
    if share_prompt:
        k_index = torch.cat(k_idx).to(dev)
        max_k = max(b - a for a, b in zip(cu_k[:-1], cu_k[1:]))
    return Packed(
        input_ids=torch.cat(tok)[None], position_ids=torch.cat(pos).to(dev)[None],
        cu_q=torch.tensor(cu_q, dtype=torch.int32, device=dev),
        cu_k=torch.tensor(cu_k if share_prompt else cu_q, dtype=torch.int32, device=dev),
        k_index=k_index, max_q=max(q_lens), max_k=max_k,
        logit_index=torch.cat(li).to(dev) if li else torch.zeros(0, dtype=torch.long, device=dev),
        rows=torch.tensor(rows, dtype=torch.long, device=dev), cols=torch.tensor(cols, dtype=torch.long, device=dev))


def unpack(values: torch.Tensor, packed: Packed, shape: tuple[int, int]) -> torch.Tensor:
    """Per-position ``values`` [K] (in ``logit_index`` order) -> the padded ``shape`` = [B, T] layout, 0 where
    no response token is (differentiable: a scatter of the values)."""
    out = values.new_zeros(shape)
    return out.index_put((packed.rows, packed.cols), values)


# ------------------------------------------------------------------------------------------------ attention
def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def _segments(x: torch.Tensor, idx: torch.Tensor | int, n: int, length: int) -> torch.Tensor:
    """``x`` [H, N, D] at the positions ``idx`` [n, length] (an int: the run of ``n * length`` positions from
    there) -> [n, H, length, D]."""
    if isinstance(idx, int):
        return x[:, idx:idx + n * length].unflatten(1, (n, length)).transpose(0, 1)
    return x[:, idx].transpose(0, 1)


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packed=None, **kwargs):
    """A transformers attention function (registered as ``"steprl_packed"``) for one packed row: query
    ``[1, H, N, D]``, key / value ``[1, H_kv, N, D]``; each segment of ``packed`` attends causally within its
    keys. Returns ``[1, N, H, D]`` and no weights."""
    if packed is None:
        raise RuntimeError("steprl_packed attention called without a Packed layout (use packed_forward)")
    if query.shape[0] != 1:
        raise ValueError(f"steprl_packed attention expects one packed row, got a batch of {query.shape[0]}")
    dropout = dropout if module.training else 0.0
    varlen = _flash_varlen() if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) else None
    if varlen is not None:
        if packed.k_index is not None:
            key, value = key[:, :, packed.k_index], value[:, :, packed.k_index]
        out = varlen(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1),
                     packed.cu_q, packed.cu_k, packed.max_q, packed.max_k, dropout_p=dropout,
                     softmax_scale=scaling, causal=True)  # lower-right causal when keys outnumber queries
        return out[None], None
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for q_idx, k_idx, n, lq, lk in packed.buckets():  # segments of one shape go through SDPA together
        q, k, v = _segments(query[0], q_idx, n, lq), _segments(key[0], k_idx, n, lk), _segments(value[0], k_idx, n, lk)
        if lq == lk:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                               enable_gqa=gqa)
        else:  # the queries are the last lq of lk positions: lower-right causal
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                               enable_gqa=gqa)
        outs.append(o.transpose(0, 1).flatten(1, 2))  # [H, n * lq, D]
    out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    if packed.bucket_inverse() is not None:
        out = out[:, packed.bucket_inverse()]  # back to packed order
    return out[None].transpose(1, 2).contiguous(), None


_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_NAME, packed_attention)
        _registered = True


@contextlib.contextmanager
def _attention(model):
    """``model`` (a peft wrapper or not) runs its attention through :func:`packed_attention` inside."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    before = cfg._attn_implementation
    cfg._attn_implementation = ATTN_NAME
    try:
        yield
    finally:
        cfg._attn_implementation = before


def packed_forward(model, packed: Packed) -> torch.Tensor:
    """The logits at ``packed.logit_index``, [K, V], from one packed forward of ``model``."""
    _register()
    with _attention(model):
        out = model(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=None,
                    use_cache=False, logits_to_keep=packed.logit_index, packed=packed)
    return out.logits[0]


def token_budget_chunks(tokens: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` ranges of rows whose ``tokens`` sum to at most ``budget`` (a row longer
    than the budget alone), greedily in order: the micro-batches of a token budget."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    return _greedy_cut(tokens, budget)


def _greedy_cut(tokens: list[int], cap: int) -> list[tuple[int, int]]:
    out, start, used = [], 0, 0
    for i, t in enumerate(tokens):
        if i > start and used + t > cap:
            out.append((start, i))
            start, used = i, 0
        used += t
    if start < len(tokens):
        out.append((start, len(tokens)))
    return out


# ------------------------------------------------------------------------------------ the update's entry points
def usable(model, att: torch.Tensor, n_prompt: int, pixel_values=None) -> bool:
    """Whether the packed forward applies: a text-only micro-batch of packable rows on a supported model."""
    from steprl.models.shared_prefix import supported

    return pixel_values is None and supported(model) and packable(att, n_prompt) is None


def packed_logp(model, ids: torch.Tensor, att: torch.Tensor, n_prompt: int, targets: torch.Tensor, width: int,
                temperature: float, entropy=False, share_prompt: bool = True):
    """Log-probs (and entropies) of ``targets`` [B, t] (the response columns of ``ids``) under ``model``, from
    one packed forward, in the padded layout [B, ``width``] (0 at padding): what ``RLModule.forward_logp``
    returns. ``entropy``: False, True, or ``"detached"`` (without autograd)."""
    from steprl import core

    packed = pack(ids, att, n_prompt, share_prompt=share_prompt)
    logits = packed_forward(model, packed).float() / temperature  # [K, V]
    logp = core.logprobs_from_logits(logits, targets[packed.rows, packed.cols])
    shape = (ids.shape[0], width)
    ent = None
    if entropy == "detached":
        with torch.no_grad():
            ent = unpack(core.entropy_from_logits(logits.detach()), packed, shape)
    elif entropy:
        ent = unpack(core.entropy_from_logits(logits), packed, shape)
    return unpack(logp, packed, shape), ent


def split_to_count(chunks: list[tuple[int, int]], tokens: list[int], count: int) -> list[tuple[int, int]]:
    """Split ``chunks`` (consecutive ``[start, end)`` row ranges, ``tokens`` per row) until there are ``count``:
    each time the chunk with the most tokens among those of two rows or more (the first on a tie) is cut at the
    row boundary that leaves the smaller larger half (the first such boundary). Stops early when no chunk has
    two rows. Splitting never exceeds a token budget the chunks kept, and evens out the micro-batches."""
    out = list(chunks)
    while len(out) < count:
        sizes = [(sum(tokens[a:b]), i) for i, (a, b) in enumerate(out) if b - a > 1]
        if not sizes:
            break
        _, i = max(sizes, key=lambda x: (x[0], -x[1]))
        a, b = out[i]
        cut = min(range(a + 1, b), key=lambda c: (max(sum(tokens[a:c]), sum(tokens[c:b])), c))
        out[i:i + 1] = [(a, cut), (cut, b)]
    return out


def balanced_chunks(tokens: list[int], count: int) -> list[tuple[int, int]]:
    """``count`` consecutive ``[start, end)`` row ranges (fewer only with fewer rows) whose largest token sum is
    as small as it can be: the smallest cap whose greedy cut (:func:`token_budget_chunks`) needs at most
    ``count`` ranges (a binary search over the cap), then :func:`split_to_count` up to ``count``."""
    if count < 1:
        raise ValueError(f"balanced_chunks: count must be >= 1, got {count}")
    if not tokens:
        return []
    lo, hi = max(tokens), sum(tokens)  # the greedy cut at cap c has the fewest ranges with none over c
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(_greedy_cut(tokens, mid)) <= count else (mid + 1, hi)
    out = _greedy_cut(tokens, lo)
    return split_to_count(out, tokens, count)


def agreed_chunks(tokens: list[int], budget: int) -> list[tuple[int, int] | None]:
    """The micro-batches of a token budget, as many on every rank of a process group: the budget's greedy cut
    (:func:`token_budget_chunks`) gives this rank's count; the ranks agree on the largest (an all-reduce MAX, a
    collective every rank must call; the identity in one process); each rank then cuts its rows into that many
    micro-batches with the smallest largest one (:func:`balanced_chunks`: never over the budget, and even, so no
    rank waits long on another at a micro-batch's collective). A rank with fewer rows than the count pads with
    ``None``: a micro-batch to run with zero weight, so that it still joins the collectives of a forward and
    backward (DDP's gradient all-reduce, FSDP2's all-gather and reduce-scatter)."""
    from steprl.utils import dist as D

    count = len(token_budget_chunks(tokens, budget))
    if D.is_distributed():
        count = int(D.all_reduce([float(count)], "max")[0])
    if count == 0:  # no rows on any rank
        return []
    chunks = balanced_chunks(tokens, count)
    return [*chunks, *[None] * (count - len(chunks))]


def micro_batches(idx: torch.Tensor, tokens: torch.Tensor, rows: int, token_budget: int | None) -> list[torch.Tensor]:
    """Cut the rows ``idx`` of a minibatch into micro-batches: ``rows`` rows each, or with ``token_budget``
    consecutive rows of at most that many real tokens (``tokens``: each row's prompt + response tokens).

    With a token budget under several ranks this is a collective (:func:`agreed_chunks`): every rank gets the
    same number of micro-batches; an empty one (``idx[:0]``) stands for a zero-weight pass. Row micro-batches
    need no agreement: every rank holds the same number of rows (``pad_to_global``)."""
    if token_budget is None:
        return [idx[m:m + rows] for m in range(0, len(idx), rows)]
    chunks = agreed_chunks(tokens[idx.to(tokens.device)].tolist(), int(token_budget))
    return [idx[:0] if c is None else idx[c[0]:c[1]] for c in chunks]


def zero_weight_row(idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The row of ``idx`` with the fewest real tokens, as a one-row index: the cheapest input for a
    zero-weight pass (an empty micro-batch of :func:`micro_batches`)."""
    if len(idx) == 0:
        raise ValueError("zero_weight_row: a rank with no rows cannot join its ranks' micro-batches")
    return idx[int(tokens[idx.to(tokens.device)].argmin())].reshape(1)
