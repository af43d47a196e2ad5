"""Multi-hop question answering with a ``search`` tool (Search-R1 format) over a local corpus.

Data sources (``source=``):

* ``synthetic`` (default): a knowledge base generated from ``seed`` (people, companies, cities, countries and
  the relations between them), one short document per entity, and 1-3 hop questions whose answers follow a
  chain of relations. Each question keeps its ground-truth entity set (every entity on the chain, E-GRPO) and
  the titles of its supporting documents. Deterministic under the seed; nothing is downloaded.
* ``jsonl``: HotpotQA / NQ-style files (``train_file``, ``val_file``; one object per line with ``question``
  and ``answer`` (a string) or ``answers`` / ``golden_answers`` (a list); optional ``entities``) searched in a
  user corpus (``corpus_file``: jsonl with ``title`` and ``text``, or Search-R1's ``contents`` =
  ``"title"\\ntext``).

Scripted episodes (``Sample.solution`` of synthetic questions, what ``algo=sft`` trains the search warm start
on): for each hop the agent thinks the entity it is at and searches it, reads the returned document (the real
BM25 result of the task's index, ``topk`` documents), and after the last hop thinks and answers::

    <think>Bais Tronal</think><search>Bais Tronal</search>\n\n<information>Doc 1(Title: Bais Tronal) Bais
    Tronal was born in Stuth and works for Kraibo Corp.\n</information>\n\n<think>Stuth</think><answer>Stuth
    </answer>

so its thoughts name every entity of the chain (E-GRPO's entity match rate is 1) and it needs ``max_turns >= hops``.

Reward: exact match of the last ``<answer>…</answer>`` of the response with any gold answer after SQuAD-style
normalisation (lower case, punctuation and the articles a/an/the removed, whitespace collapsed); a response
without an answer scores 0. Steps are agent turns, set by the AgentLoop (``splitter`` is None).
"""
from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from steprl.models.tokenizer import fast_tokenizer, train_word_tokenizer
from steprl.rewards.entities import thoughts
from steprl.rollout.types import Sample
from steprl.tasks.base import SampleListDataset, Task, read_jsonl_rows
from steprl.tasks.search_tools import BM25Retriever, Document, SearchEnv

__all__ = ["SearchQATask", "KnowledgeBase", "make_knowledge_base", "normalize_answer", "exact_match",
           "extract_answer", "thoughts", "PROMPT", "SHORT_PROMPT", "load_qa_jsonl", "load_corpus_jsonl",
           "scripted_episode", "scripted_segments", "principle_judge"]

PROMPT = ("Answer the given question. Reason inside <think> and </think> every time you get new information. "
          "If you find you lack some knowledge, call the search engine with <search> query </search>; it returns "
          "the top results between <information> and </information>. You can search as many times as you want. "
          "When you have the answer, write it inside <answer> and </answer> without explanation, for example "
          "<answer> Paris </answer>. Question: {question}\n")
SHORT_PROMPT = "Question: {question}\n"


# ------------------------------------------------------------------------------------------ answers
def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def extract_answer(response: str) -> str | None:
    """The content of the last ``<answer>…</answer>`` of a response, or None."""
    found = re.findall(r"<answer>(.*?)</answer>", response, re.DOTALL)
    return found[-1].strip() if found else None


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


# ------------------------------------------------------------------------------------------ synthetic KB
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "x", "th"]


class KnowledgeBase:
    """Entities by type, relations ``(subject, relation) -> object`` and one document per entity."""

    def __init__(self, entities: dict[str, list[str]], facts: dict[tuple[str, str], str]):
        self.entities, self.facts = entities, facts
        self.kind = {e: k for k, names in entities.items() for e in names}

    def document(self, e: str) -> Document:
        k, f = self.kind[e], self.facts
        if k == "person":
            text = f"{e} was born in {f[(e, 'born_in')]} and works for {f[(e, 'works_for')]}."
        elif k == "company":
            text = f"{e} is a company based in {f[(e, 'based_in')]}. It was founded by {f[(e, 'founded_by')]}."
        elif k == "city":
            text = f"{e} is a city in {f[(e, 'in_country')]}."
        else:
            text = f"{e} is a country."
        return Document(title=e, text=text, id=e)

    def corpus(self) -> list[Document]:
        return [self.document(e) for names in self.entities.values() for e in names]


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def make_knowledge_base(seed: int = 0, people: int = 40, companies: int = 15, cities: int = 20,
                        countries: int = 6, syllables: Sequence[int] = (2, 3)) -> KnowledgeBase:
    """A random knowledge base (deterministic under ``seed``): unique made-up names (each word of
    ``syllables[0]``-``syllables[1]`` syllables; a person's name is two words), each person born in a city
    and working for a company, each company based in a city and founded by a person, each city in a country."""
    lo, hi = (int(x) for x in syllables)
    if not 1 <= lo <= hi:
        raise ValueError(f"task.name_syllables must be [min, max] with 1 <= min <= max, got {list(syllables)}")
    rng = random.Random(f"search_qa-kb-{seed}")
    used: set[str] = set()  # every word of every name: no two entities share one (a search for one name
    # would also match the other's document, e.g. a company "Fen Corp" and a person "Fen Bur")

    def names(k: int, words: int, suffix: str = "") -> list[str]:
        out = []
        while len(out) < k:
            ws = [_name(rng, rng.randint(lo, hi)).capitalize() for _ in range(words)]
            if len({w.lower() for w in ws} | used) == len(used) + words:
                used.update(w.lower() for w in ws)
                out.append(" ".join(ws) + suffix)
        return out

    ent = {"country": names(countries, 1, "ia"), "city": names(cities, 1),
           "company": names(companies, 1, " Corp"), "person": names(people, 2)}
    facts: dict[tuple[str, str], str] = {}
    for c in ent["city"]:
        facts[(c, "in_country")] = rng.choice(ent["country"])
    for co in ent["company"]:
        facts[(co, "based_in")] = rng.choice(ent["city"])
        facts[(co, "founded_by")] = rng.choice(ent["person"])
    for p in ent["person"]:
        facts[(p, "born_in")] = rng.choice(ent["city"])
        facts[(p, "works_for")] = rng.choice(ent["company"])
    return KnowledgeBase(ent, facts)


# (start type, relation chain, question template)
TEMPLATES: list[tuple[str, tuple[str, ...], str]] = [
    ("person", ("born_in",), "Where was {x} born?"),
    ("person", ("works_for",), "Which company does {x} work for?"),
    ("company", ("based_in",), "In which city is {x} based?"),
    ("company", ("founded_by",), "Who founded {x}?"),
    ("city", ("in_country",), "Which country is {x} in?"),
    ("person", ("born_in", "in_country"), "In which country was {x} born?"),
    ("person", ("works_for", "based_in"), "In which city is the company that {x} works for based?"),
    ("company", ("founded_by", "born_in"), "Where was the founder of {x} born?"),
    ("company", ("based_in", "in_country"), "In which country is {x} based?"),
    ("person", ("works_for", "based_in", "in_country"), "In which country is the company that {x} works for based?"),
    ("company", ("founded_by", "born_in", "in_country"), "In which country was the founder of {x} born?"),
]


def synthetic_questions(kb: KnowledgeBase, hops: Sequence[int] = (1, 2, 3)) -> list[dict[str, Any]]:
    """Every (template, start entity) question of ``kb`` with ``len(chain)`` in ``hops``: question, answer,
    entities (the chain: start, intermediates, answer) and supporting document titles (one per hop)."""
    out = []
    for kind, chain, template in TEMPLATES:
        if len(chain) not in hops:
            continue
        for x in kb.entities[kind]:
            path = [x]
            for rel in chain:
                path.append(kb.facts[(path[-1], rel)])
            out.append({"question": template.format(x=x), "answer": path[-1], "entities": path,
                        "support": path[:-1], "hops": len(chain)})
    return out


def scripted_segments(env: SearchEnv, entities: Sequence[str]) -> list[tuple[str, bool]]:
    """The worked episode of a question whose chain is ``entities`` (start, intermediates, answer) as
    ``(text, written)`` segments: one think + search turn per hop (written by the agent) followed by ``env``'s
    real observation (written by the tool), then think + answer (see the module docstring). ``algo=sft`` trains
    on the written segments only, as RL trains on the agent's turns and never on the tool's observations."""
    if len(entities) < 2:
        raise ValueError(f"a scripted episode needs a chain of at least 2 entities, got {list(entities)}")
    segs: list[tuple[str, bool]] = []
    for e in entities[:-1]:
        turn = f"<think>{e}</think><search>{e}</search>"
        segs += [(turn, True), (env.step(turn, final=False).observation, False)]
    return segs + [(f"<think>{entities[-1]}</think><answer>{entities[-1]}</answer>", True)]


def scripted_episode(env: SearchEnv, entities: Sequence[str]) -> str:
    """The worked episode of :func:`scripted_segments` as one text."""
    return "".join(t for t, _ in scripted_segments(env, entities))


_TAGGED = re.compile(r"<(think|search|information|answer)>(.*?)</\1>", re.DOTALL)
_TITLES = re.compile(r"\(Title: (.*?)\)")


def principle_judge(prompt: str | list[dict]) -> str:
    """A rule-based stand-in for PPR's principle judge on search episodes (``judge=scripted`` with
    ``judge.scripted.fn=steprl.tasks.search_qa.principle_judge``), for CPU runs without a judge model.

    It reads PPR's prompt (``steprl.rewards.principle.PRINCIPLE_TEMPLATE``: the Query = question + earlier
    turns, the Response = the judged turn with its observation) and scores the turn on the prompt's three
    principles, each 0 or 1, after its hard format rule (text outside ``<think>``, ``<search>``,
    ``<information>``, ``<answer>`` tags: score 0):

    (a) extraction: the turn's ``<think>`` names something the Query contains (the question or a retrieved
        document), i.e. it reasons from what it was given;
    (b) query: the ``<search>`` query is grounded (it appears in the Query) and was not searched before;
    (c) decision: the search returned a document not retrieved earlier in the episode.

    Reply: ``"Analysis: a=<0|1> b=<0|1> c=<0|1>\nScores: <final_score>S,3</final_score>"``.
    """
    if isinstance(prompt, list):
        prompt = next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), "")
    context, sep, turn = str(prompt).rpartition("\n**Response**: ")
    if not sep:
        return "Analysis: no Response in the prompt\nScores: <final_score>0,3</final_score>"
    context = context.partition("**Query**: ")[2] or context
    if _TAGGED.sub("", turn).strip():
        return "Analysis: text outside the tags\nScores: <final_score>0,3</final_score>"
    parts: dict[str, list[str]] = {}
    for tag, body in _TAGGED.findall(turn):
        parts.setdefault(tag, []).append(body.strip())
    ctx = context.lower()
    thought = " ".join(parts.get("think", [])).lower()
    a = int(bool(thought) and thought in ctx)
    query = (parts.get("search") or [""])[0].lower()
    b = int(bool(query) and query in ctx and f"<search>{query}</search>" not in ctx.replace("<search> ", "<search>")
            .replace(" </search>", "</search>"))
    seen = {t.lower() for t in _TITLES.findall(context)}
    new = [t for t in _TITLES.findall(" ".join(parts.get("information", []))) if t.lower() not in seen]
    c = int(bool(query) and bool(new))
    return f"Analysis: a={a} b={b} c={c}\nScores: <final_score>{a + b + c},3</final_score>"


# ------------------------------------------------------------------------------------------ jsonl loaders
# ------------------------------------------------------------------ the search warm start's word tokenizer
SEARCH_QA_TAGS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
                  "<answer>", "</answer>")
SEARCH_QA_VOCAB = 2048


def tokenizer_corpus() -> list[str]:
    """The text the search tokenizer is trained on, made in code: task=search_qa_tiny's knowledge base
    (seed 0, its kb_size and name_syllables) — every document, every question and every scripted episode."""
    task = SearchQATask(seed=0, kb_size={"people": 150, "companies": 50, "cities": 50, "countries": 10},
                        num_val=128, prompt_template="Question: {question}\n", topk=1, max_turns=3)
    samples = list(task.val_dataset()) + list(task.train_dataset())
    return [d.text for d in task.docs] + [s.prompt + s.solution for s in samples]


@functools.lru_cache(maxsize=2)
def _search_qa_tokenizer_json(vocab_size: int) -> str:
    return train_word_tokenizer(tokenizer_corpus(), SEARCH_QA_TAGS, vocab_size)  # cached: the corpus takes seconds


def search_qa_tokenizer(vocab_size: int = SEARCH_QA_VOCAB):
    """``model.tiny.tokenizer=steprl.tasks.search_qa.search_qa_tokenizer``: the word tokenizer of the search warm
    start (model=tiny_search_qa), trained on :func:`tokenizer_corpus` — every word of the knowledge base one token
    (1736 entries in all), the 8 Search-R1 tags single tokens, any text encoded and decoded exactly."""
    return fast_tokenizer(_search_qa_tokenizer_json(vocab_size))


def load_qa_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """HotpotQA / NQ-style questions: ``question`` and ``answer`` | ``answers`` | ``golden_answers``."""
    out = []
    for n, (_, r) in enumerate(read_jsonl_rows(path, "search_qa: question file"), 1):
        q = r.get("question")
        golds = r.get("golden_answers", r.get("answers", r.get("answer")))
        if isinstance(golds, str):
            golds = [golds]
        if not isinstance(q, str) or not golds or not all(isinstance(g, str) for g in golds):
            raise ValueError(f"search_qa: question file {str(path)!r} row {n} needs a string `question` and an "
                             f"`answer` string or `answers` / `golden_answers` list of strings")
        out.append({"question": q, "answers": list(golds), "entities": list(r.get("entities") or []),
                    "id": str(r.get("id", r.get("_id", n)))})
    return out


def load_corpus_jsonl(path: str | Path) -> list[Document]:
    """Documents with ``title`` + ``text``, or Search-R1's ``contents`` (first line the quoted title)."""
    docs = []
    for n, (_, r) in enumerate(read_jsonl_rows(path, "search_qa: corpus file"), 1):
        if "contents" in r:
            title, _, text = str(r["contents"]).partition("\n")
            docs.append(Document(title.strip().strip('"'), text.strip(), str(r.get("id", n))))
        elif "text" in r:
            docs.append(Document(str(r.get("title", "")), str(r["text"]), str(r.get("id", n))))
        else:
            raise ValueError(f"search_qa: corpus file {str(path)!r} row {n} needs `text` (and `title`) or `contents`")
    return docs


# ------------------------------------------------------------------------------------------ the task
class SearchQATask(Task):
    """Search-R1 style QA with a BM25 ``search`` tool. See the module docstring.

    Agent settings (the AgentLoop): ``max_turns`` (tool-enabled turns, then one final turn without tools),
    ``max_turn_tokens`` (new tokens per turn; None: the rollout engine's ``max_new_tokens``),
    ``max_response_tokens`` (turns + observations), ``max_obs_tokens``; ``topk`` documents per search.
    ``hops_in_source``: synthetic samples' source is ``"<name>_<h>hop"`` (validation logs ``val/acc/<source>``
    per number of hops). ``name_syllables``: ``[min, max]`` syllables per word of the synthetic entity names.
    """

    name = "search_qa"

    def __init__(self, source: str = "synthetic", seed: int = 0, hops: Sequence[int] = (1, 2, 3),
                 kb_size: dict | None = None, num_val: int = 64, train_file: str | None = None,
                 val_file: str | None = None, corpus_file: str | None = None, prompt_template: str | None = None,
                 topk: int = 3, max_turns: int = 2, max_turn_tokens: int | None = None,
                 max_response_tokens: int = 1024, max_obs_tokens: int | None = 500, hops_in_source: bool = False,
                 name_syllables: Sequence[int] = (2, 3)):
        super().__init__()
        self.splitter = None  # steps are agent turns: the AgentLoop writes step_ids
        prompt_template = PROMPT if prompt_template is None else prompt_template
        if "{question}" not in prompt_template:
            raise ValueError(f"task.prompt_template must contain a {{question}} field, got {prompt_template!r}")
        if source not in ("synthetic", "jsonl"):
            raise ValueError(f"task.source={source!r} is not one of ['synthetic', 'jsonl']")
        bad = [h for h in hops if h not in (1, 2, 3)]
        if bad or not hops:
            raise ValueError(f"task.hops must be a non-empty subset of [1, 2, 3], got {list(hops)}")
        self.source, self.seed, self.prompt_template, self.topk = source, seed, prompt_template, topk
        self.hops_in_source = bool(hops_in_source)
        self.agent_cfg = {"max_turns": max_turns, "max_turn_tokens": max_turn_tokens,
                          "max_response_tokens": max_response_tokens, "max_obs_tokens": max_obs_tokens}
        self._retriever: BM25Retriever | None = None
        if source == "synthetic":
            if len(name_syllables) != 2:
                raise ValueError(f"task.name_syllables must be [min, max], got {list(name_syllables)}")
            self.kb = make_knowledge_base(seed, **dict(kb_size or {}), syllables=tuple(name_syllables))
            self.docs = self.kb.corpus()
            qs = synthetic_questions(self.kb, tuple(hops))
            random.Random(f"search_qa-split-{seed}").shuffle(qs)
            if not 0 < num_val < len(qs):
                raise ValueError(f"task.num_val={num_val} must be in [1, {len(qs) - 1}] "
                                 f"(the knowledge base has {len(qs)} questions)")
            self._val = [self._sample(q, "val", i) for i, q in enumerate(qs[:num_val])]
            self._train = [self._sample(q, "train", i) for i, q in enumerate(qs[num_val:])]
        else:
            for key, v in (("train_file", train_file), ("val_file", val_file), ("corpus_file", corpus_file)):
                if not v:
                    raise ValueError(f"task.source=jsonl needs task.{key}")
            self.kb = None
            self.docs = load_corpus_jsonl(corpus_file)
            self._train = [self._sample(q, "train", i) for i, q in enumerate(load_qa_jsonl(train_file))]
            self._val = [self._sample(q, "val", i) for i, q in enumerate(load_qa_jsonl(val_file))]

    def _sample(self, q: dict, split: str, i: int) -> Sample:
        golds = q.get("answers") or [q["answer"]]
        meta = {"answers": list(golds), "entities": list(q.get("entities") or []),
                "question": q["question"]}
        solution = None
        if "support" in q:
            meta["support"], meta["hops"] = q["support"], q["hops"]
            segments = scripted_segments(self.make_env(), q["entities"])
            solution = "".join(t for t, _ in segments)
            meta["solution_segments"] = segments  # algo=sft: loss on the agent's turns, not the documents
        return Sample(prompt=self.prompt_template.format(question=q["question"]), answer=golds[0],
                      solution=solution, uid=f"{self.name}-{split}-{q.get('id', i)}",
                      source=f"{self.name}_{q['hops']}hop" if self.hops_in_source and "hops" in q else self.name,
                      meta=meta)

    def __getstate__(self) -> dict[str, Any]:  # verifier workers need no corpus, index or questions
        state = dict(self.__dict__)
        state.update(kb=None, docs=[], _train=[], _val=[], _retriever=None)
        return state

    @property
    def retriever(self) -> BM25Retriever:
        if self._retriever is None:
            self._retriever = BM25Retriever(self.docs)
        return self._retriever

    def make_env(self) -> SearchEnv:
        return SearchEnv(self.retriever, self.topk)

    def train_dataset(self) -> Dataset:
        return SampleListDataset(self._train)

    def val_dataset(self) -> Dataset:
        return SampleListDataset(self._val)

    def _extract_answer(self, response: str) -> str | None:
        return extract_answer(response)

    def _verify(self, sample: Sample, response: str) -> float:
        return exact_match(extract_answer(response), sample.meta.get("answers") or [sample.answer])
