"""task=search_qa: synthetic knowledge base, BM25 retrieval of supporting documents, the Search-R1 action
protocol, exact-match reward with SQuAD normalisation, jsonl loaders; the PPR judge parser; entity matching."""
from __future__ import annotations

import json
import math
import pickle

import pytest

from steprl.rewards.entities import entity_match_rate, thoughts
from steprl.rewards.judges import JudgeRequest
from steprl.rewards.principle import parse_final_score, parse_principle_reply, user_message
from steprl.tasks.search_qa import (SearchQATask, exact_match, extract_answer, load_corpus_jsonl, load_qa_jsonl,
                                    make_knowledge_base, normalize_answer, synthetic_questions)
from steprl.tasks.search_tools import INVALID_ACTION, BM25Retriever, Document, SearchEnv, parse_action


@pytest.fixture(scope="module")
def task():
    return SearchQATask(seed=0, num_val=16)


# ------------------------------------------------------------------------------------------ knowledge base
def test_knowledge_base_is_deterministic_and_consistent():
    a, b, c = make_knowledge_base(0), make_knowledge_base(0), make_knowledge_base(1)
    assert a.facts == b.facts and a.entities == b.entities and a.entities != c.entities
    names = [e for v in a.entities.values() for e in v]
    assert len(names) == len({n.lower() for n in names}) == 40 + 15 + 20 + 6
    qs = synthetic_questions(a)
    assert {q["hops"] for q in qs} == {1, 2, 3}
    for q in qs:  # the answer follows the chain and the entity set is the chain
        assert q["entities"][-1] == q["answer"] and len(q["entities"]) == q["hops"] + 1
        assert q["support"] == q["entities"][:-1]


def test_splits_are_disjoint_and_samples_carry_entities(task):
    val = {s.prompt for s in task.val_dataset()}
    train = {s.prompt for s in task.train_dataset()}
    assert len(val) == 16 and not val & train
    s = task.train_dataset()[0]
    assert s.meta["entities"] and s.answer == s.meta["answers"][0] and "<search>" in s.prompt
    assert SearchQATask(seed=0, num_val=16).train_dataset()[5].prompt == task.train_dataset()[5].prompt


def test_bm25_retrieves_the_supporting_document_of_every_hop(task):
    """For generated questions of 1-3 hops, searching the question retrieves the first hop's document, and
    searching each intermediate entity retrieves that hop's document (top 3)."""
    qs = [s.meta for s in [*task.train_dataset().samples, *task.val_dataset().samples]]
    assert len(qs) > 200
    hits_q = hits_hop = n_hop = 0
    for q in qs:
        hits_q += q["support"][0] in [d.title for d in task.retriever.search(q["question"], 3)]
        for ent in q["support"]:
            n_hop += 1
            hits_hop += ent in [d.title for d in task.retriever.search(ent, 3)]
    assert hits_q == len(qs)
    assert hits_hop == n_hop


def test_bm25_ranks_by_term_overlap_and_skips_unrelated():
    r = BM25Retriever([Document("A", "apples grow on trees"), Document("B", "bananas are yellow"),
                       Document("C", "apples and bananas")])
    assert [d.title for d in r.search("yellow bananas", 3)] == ["B", "C"]
    assert r.search("zebra", 3) == [] and r.search("", 3) == [] and r.search("the of", 3) == []
    with pytest.raises(ValueError, match="non-empty corpus"):
        BM25Retriever([])


# ------------------------------------------------------------------------------------------ protocol
def test_search_r1_actions():
    env = SearchEnv(BM25Retriever([Document("Teluma", "a city in Vornia")]), topk=3)
    assert parse_action("<think>x</think><search> Teluma </search><answer>y</answer>") == ("search", "Teluma")
    a = env.step("<think>x</think><search>Teluma</search>", final=False)
    assert a.kind == "search" and a.tool_call and not a.done
    assert a.observation == "\n\n<information>Doc 1(Title: Teluma) a city in Vornia\n</information>\n\n"
    a = env.step("<answer>Vornia</answer>", final=False)
    assert a.kind == "answer" and a.done and a.observation == ""
    a = env.step("I think it is Vornia", final=False)
    assert a.format_error and a.observation == INVALID_ACTION and not a.done
    assert env.step("no tags", final=True).done
    a = env.step("<search>Teluma</search>", final=True)  # tools disabled on the last turn
    assert a.observation == "" and not a.tool_call


# ------------------------------------------------------------------------------------------ reward
def test_normalisation_and_exact_match(task):
    assert normalize_answer("  The Eiffel-Tower! ") == "eiffeltower"  # SQuAD deletes punctuation
    assert normalize_answer("An apple, a day") == "apple day"
    assert exact_match("the Paris.", ["paris"]) == 1.0 and exact_match("Paris France", ["Paris"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert extract_answer("<answer>a</answer> then <answer> b </answer>") == "b"
    s = task.val_dataset()[0]
    assert task.verify(s, f"<think>..</think><answer> {s.answer.upper()} </answer>") == 1.0
    assert task.verify(s, f"{s.answer}") == 0.0  # no answer tag
    assert task.verify(s, "<answer>nobody</answer>") == 0.0
    assert task.verify(s, None) == 0.0


def test_task_pickles_small_and_still_verifies(task):
    task.retriever  # noqa: B018 - build the index
    blob = pickle.dumps(task)
    clone = pickle.loads(blob)
    s = task.val_dataset()[0]
    assert clone.verify(s, f"<answer>{s.answer}</answer>") == 1.0
    assert len(blob) < 20_000


def test_jsonl_loaders(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Who?", "answer": "Kai"}, {"question": "Where?", "golden_answers": ["Teluma", "teluma city"]},
        {"question": "What?", "answers": ["x"], "entities": ["Kai", "x"], "id": "q3"}]) + "\n")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"contents": '"Teluma"\nTeluma is a city.'}) + "\n"
                      + json.dumps({"title": "Kai", "text": "Kai lives in Teluma."}) + "\n")
    rows = load_qa_jsonl(qa)
    assert rows[1]["answers"] == ["Teluma", "teluma city"] and rows[2]["entities"] == ["Kai", "x"]
    docs = load_corpus_jsonl(corpus)
    assert docs[0] == Document("Teluma", "Teluma is a city.", "1")
    t = SearchQATask(source="jsonl", train_file=str(qa), val_file=str(qa), corpus_file=str(corpus))
    assert len(t.train_dataset()) == 3 and t.train_dataset()[2].meta["entities"] == ["Kai", "x"]
    assert t.verify(t.train_dataset()[1], "<answer>Teluma City</answer>") == 1.0
    assert t.make_env().step("<search>Teluma</search>", False).observation.count("Doc ") == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="row 1 needs a string `question`"):
        load_qa_jsonl(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: line is not valid JSON"):
        load_qa_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="task.corpus_file"):
        SearchQATask(source="jsonl", train_file=str(qa), val_file=str(qa))


def test_bad_task_config_names_the_key():
    with pytest.raises(ValueError, match="task.hops"):
        SearchQATask(hops=[4])
    with pytest.raises(ValueError, match="task.num_val"):
        SearchQATask(num_val=100000)
    with pytest.raises(ValueError, match="prompt_template"):
        SearchQATask(prompt_template="no field")
    with pytest.raises(ValueError, match="task.source"):
        SearchQATask(source="web")


# ------------------------------------------------------------------------------------------ PPR judge parser
def test_final_score_parser_spec_case_3():
    assert parse_final_score("a <final_score>3,5</final_score> b <final_score>4,6</final_score>") == (4, 6)
    for bad in ("<final_score>7,6</final_score>", "<final_score>1,0</final_score>",
                "<final_score>-1,5</final_score>", "<final_score>a,b</final_score>", "Scores: 4,6",
                "<final_score>4</final_score>", "<final_score>1.5,3</final_score>", ""):
        assert parse_final_score(bad) is None, bad
    assert parse_final_score("<final_score> 0 , 6 </final_score>") == (0, 6)
    req = JudgeRequest(question="q", response="r", steps=["r"])
    ok = parse_principle_reply("Analysis: x\nScores: <final_score>4,6</final_score>", req)
    assert ok.parsed and ok.step_scores == [pytest.approx(4 / 6)]
    bad = parse_principle_reply("<final_score>7,6</final_score>", req)
    assert not bad.parsed and math.isnan(bad.step_scores[0])


def test_user_message_of_a_chat_prompt():
    chat = "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nWho is Kai?<|im_end|>\n<|im_start|>assistant\n"
    assert user_message(chat) == "Who is Kai?"
    assert user_message("Question: who?\n") == "Question: who?\n"


# ------------------------------------------------------------------------------------------ E-GRPO matching
def test_entity_match_rate_spec_case_1():
    ents = ["Tegetthoff", "International Polar Year", "Royal Geographical Society's Founder's Medal"]
    resp = ("<think>The ship Tegetthoff sailed during the International Polar Year.</think>"
            "<search>medal</search><information>Royal Geographical Society's Founder's Medal ...</information>"
            "<think>so</think><answer>Royal Geographical Society's Founder's Medal</answer>")
    assert entity_match_rate(thoughts(resp), ents) == pytest.approx(2 / 3)
    # only in a tool response / only in the answer: no match
    assert entity_match_rate(thoughts("<information><think>Tegetthoff</think></information>"), ents) == 0.0
    assert entity_match_rate(thoughts("<tool_response>Tegetthoff</tool_response><think>x</think>"), ents) == 0
    assert entity_match_rate(thoughts("<answer>Tegetthoff</answer>"), ents) == 0.0
    # exact, case-sensitive by default; configurable
    assert entity_match_rate(["tegetthoff"], ents) == 0.0
    assert entity_match_rate(["tegetthoff"], ents, case_sensitive=False) == pytest.approx(1 / 3)
    assert entity_match_rate(["anything"], []) == 0.0
