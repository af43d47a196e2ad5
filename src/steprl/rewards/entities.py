"""Entity match rate (E-GRPO, Zhao et al. 2025, Eq. 1-2): the share of a question's ground-truth entities that
appear verbatim (full phrase, exact substring) in the agent's thoughts."""
from __future__ import annotations

import re
from collections.abc import Sequence

_TOOL_OUTPUT = re.compile(r"<(information|tool_response)>.*?(</\1>|$)", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def thoughts(response: str) -> list[str]:
    """The ``<think>…</think>`` texts of a response, outside tool outputs (``<information>`` / ``<tool_response>``
    blocks: a think tag quoted inside a retrieved document is not the agent's thought)."""
    return _THINK.findall(_TOOL_OUTPUT.sub(" ", response))


def entity_match_rate(thoughts: Sequence[str], entities: Sequence[str], case_sensitive: bool = True) -> float:
    """``|{e in entities : e is a substring of some thought}| / |entities|``; 0 for an empty entity set.

    Only the thoughts count (pass the ``<think>`` texts, never tool responses or the answer): an entity merely
    seen in a retrieved document is not evidence that the agent reasoned about it.
    """
    ents = [e for e in dict.fromkeys(entities) if isinstance(e, str) and e.strip()]
    if not ents:
        return 0.0
    texts = list(thoughts) if case_sensitive else [t.lower() for t in thoughts]
    hit = sum(any((e if case_sensitive else e.lower()) in t for t in texts) for e in ents)
    return hit / len(ents)
