"""The ``search`` tool of the search environment: a BM25 index (bm25s) over a document corpus, and the
Search-R1 action protocol that turns one model turn into a tool call.

Protocol (Search-R1): the first ``<search>…</search>`` or ``<answer>…</answer>`` of a turn is its action.

* ``answer``  -> the episode ends, no observation.
* ``search``  -> the top-k documents come back as ``"\\n\\n<information>Doc 1(Title: t) text\\n…</information>\\n\\n"``
  (on the last turn tools are disabled: no observation, and the episode ends without an answer).
* anything else -> a format error; a fixed "invalid action" message is the observation and the episode goes on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from steprl.rollout.agent import Action, AgentEnv

__all__ = ["Document", "BM25Retriever", "SearchEnv", "parse_action", "format_docs", "INVALID_ACTION", "tokenize"]

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an the of in on at to for by with from is are was were be been which who whom whose what where when how "
    "does do did and or that this these those it its as into".split())
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)

INVALID_ACTION = ("\nMy previous action is invalid. To search, I should write the query between <search> and "
                  "</search>. To answer, I should write the answer between <answer> and </answer>. "
                  "Let me try again.\n")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without English stopwords (the BM25 terms of documents and queries)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    id: str = ""


class BM25Retriever:
    """Okapi BM25 (``bm25s``) over ``docs`` (title + text indexed). ``search(query, k)`` returns up to ``k``
    documents that share at least one term with the query, best first."""

    def __init__(self, docs: list[Document], k1: float = 1.5, b: float = 0.75):
        import bm25s

        if not docs:
            raise ValueError("BM25Retriever needs a non-empty corpus")
        self.docs = list(docs)
        self._index = bm25s.BM25(k1=k1, b=b)
        self._index.index([tokenize(f"{d.title} {d.text}") or ["<empty>"] for d in self.docs], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        terms = tokenize(query)
        if not terms:
            return np.zeros(len(self.docs), dtype=np.float32)
        return np.asarray(self._index.get_scores(terms), dtype=np.float32)

    def search(self, query: str, k: int = 3) -> list[Document]:
        s = self.scores(query)
        order = np.argsort(-s, kind="stable")[:k]
        return [self.docs[i] for i in order if s[i] > 0]


def format_docs(docs: list[Document]) -> str:
    return "".join(f"Doc {j + 1}(Title: {d.title}) {d.text}\n" for j, d in enumerate(docs))


def parse_action(text: str) -> tuple[str, str] | None:
    """``(kind, content)`` of the first ``<search>`` / ``<answer>`` action of a turn, or None."""
    m = _ACTION.search(text)
    return (m.group(1), m.group(2).strip()) if m else None


class SearchEnv(AgentEnv):
    """Search-R1 environment over a :class:`BM25Retriever` (``topk`` documents per search)."""

    stop = ("</search>", "</answer>")

    def __init__(self, retriever: BM25Retriever, topk: int = 3):
        self.retriever, self.topk = retriever, topk

    def step(self, text: str, final: bool) -> Action:
        act = parse_action(text)
        if act is None:
            return Action("invalid", "" if final else INVALID_ACTION, done=final, format_error=True)
        kind, content = act
        if kind == "answer":
            return Action("answer", "", done=True)
        if final:  # tools disabled on the last turn: the episode ends unanswered
            return Action("search", "", done=False)
        docs = self.retriever.search(content, self.topk)
        return Action("search", f"\n\n<information>{format_docs(docs)}</information>\n\n", tool_call=True)
