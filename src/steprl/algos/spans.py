"""Token <-> character spans of responses: each response token's text piece and its character offsets in the
decoded response, so character spans found in the text (a step, a ``<think>`` block, an answer) map back to
the tokens that carry them."""
from __future__ import annotations

from typing import Callable

import torch

from steprl import core
from steprl.rollout.types import Rollouts


def token_pieces(module) -> Callable[[int], str]:
    """``token id -> its text`` (special tokens: ''), cached on the module (the tokenizer's vocabulary)."""
    if not hasattr(module, "_piece_cache"):
        module._piece_cache = {}
    cache, tok = module._piece_cache, module.tokenizer
    special = set(tok.all_special_ids)

    def piece(t: int) -> str:
        if t not in cache:
            cache[t] = "" if t in special else tok.decode([t])
        return cache[t]
    return piece


def token_offsets(ro: Rollouts, piece: Callable[[int], str]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Per row: the response text (the concatenated pieces of its real tokens) and each token's ``(start,
    end)`` character span in it."""
    out = []
    for ids, m in zip(ro.response_ids.tolist(), ro.response_mask.tolist()):
        toks = [piece(t) for t in ids[:int(sum(m))]]
        offsets, pos = [], 0
        for p in toks:
            offsets.append((pos, pos + len(p)))
            pos += len(p)
        out.append(("".join(toks), offsets))
    return out


def token_step_ids(module, ro: Rollouts) -> torch.Tensor:
    """Step index of each response token from the task's splitter (-1 outside any step)."""
    splitter = getattr(module.task, "splitter", None)
    if splitter is None:
        return ro.step_ids
    out = torch.full_like(ro.response_ids, -1)
    for r, (text, offsets) in enumerate(token_offsets(ro, token_pieces(module))):
        n = len(offsets)
        out[r, :n] = core.char_spans_to_step_ids(offsets, splitter.split(text, tile=True), n)
    return out


def span_masks(module, ro: Rollouts, spans: list[list[tuple[int, int] | None]]) -> list[torch.Tensor]:
    """Token masks [N, T] (CPU) of per-row character spans: ``spans[i][j]`` is row i's span j (None: none);
    a token belongs to the first span it overlaps (a token of no text, e.g. a special one, to none)."""
    k = max((len(s) for s in spans), default=0)
    masks = [torch.zeros(ro.response_mask.shape) for _ in range(k)]
    for i, (_, offsets) in enumerate(token_offsets(ro, token_pieces(module))):
        for t, (s, e) in enumerate(offsets):
            if e <= s:
                continue
            for j, sp in enumerate(spans[i]):
                if sp is not None and s < sp[1] and e > sp[0]:
                    masks[j][i, t] = 1.0
                    break
    return masks
