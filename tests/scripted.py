"""A scripted policy for agent tests: an engine whose turns come from a script instead of a model.

Tiny models rarely call tools, so the AgentLoop and the agent algorithms are tested with this test double of
the *model* (the engine interface: ``continue_ids``, ``generate``, ``max_new_tokens``, ``temperature``).
``script(context_text, row)`` returns the text of the next turn for a row whose prompt + response so far is
``context_text``; the engine tokenizes it and applies the stop strings, EOS and the token limit exactly like
``HFEngine`` (the response runs up to and including the first stop string; a cut turn finishes ``length``).
"""
from __future__ import annotations

from collections.abc import Callable


class ScriptedEngine:
    def __init__(self, script: Callable[[str, int], str], max_new_tokens: int = 64, temperature: float = 1.0):
        self.script, self.max_new_tokens, self.temperature = script, max_new_tokens, temperature
        self.calls: list[int] = []  # rows per continue_ids call (batching across live episodes)

    def continue_ids(self, model, tokenizer, contexts, max_new_tokens=None, greedy=False, generator=None, stop=()):
        limit = max_new_tokens or self.max_new_tokens
        self.calls.append(len(contexts))
        tokens, finish = [], []
        for row, ctx in enumerate(contexts):
            text = self.script(tokenizer.decode(ctx, skip_special_tokens=True), row)
            cut = [text.index(s) + len(s) for s in stop if s in text]
            stopped = bool(cut)
            if cut:
                text = text[:min(cut)]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not stopped:  # a turn without a stop string ends with EOS, as a model's would
                ids = ids + [tokenizer.eos_token_id]
                stopped = True
            if len(ids) > limit:
                ids, stopped = ids[:limit], False
            tokens.append(ids)
            finish.append("stop" if stopped else "length")
        return tokens, finish
