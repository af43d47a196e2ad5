"""model.tiny.tokenizer=steprl.tasks.search_qa.search_qa_tokenizer: the word tokenizer of the search warm start (model=tiny_search_qa).

It must give back every text exactly (the rollout decodes the agent's turns, the tool's documents are encoded
into the response, the reward parsers read the decoded text), end a turn on a stop tag the way the engine
checks it (the decoded text ends with the tag), and write a name with the same ids wherever it stands, so an
agent copies a name from the question or a document into its query token for token.
"""
from __future__ import annotations

import json

import pytest
import torch

from steprl.models import load_model
from steprl.models.paths import shipped_model_dir
from steprl.models.tokenizer import build_tiny_tokenizer
from steprl.rollout.agent import AgentLoop
from steprl.tasks.search_qa import SEARCH_QA_TAGS, SearchQATask, search_qa_tokenizer
from steprl.tasks.search_tools import SearchEnv
from tests.scripted import ScriptedEngine

KB = {"people": 150, "companies": 50, "cities": 50, "countries": 10}


@pytest.fixture(scope="module")
def tok():
    return search_qa_tokenizer()


@pytest.fixture(scope="module")
def task():
    return SearchQATask(seed=0, kb_size=KB, num_val=128, prompt_template="Question: {question}\n", topk=1,
                        max_turns=3)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_every_episode_and_document_round_trips(tok, task):
    samples = list(task.train_dataset()) + list(task.val_dataset())
    for s in samples:
        for text in [s.prompt, s.solution] + [t for t, _ in s.meta["solution_segments"]]:
            assert tok.decode(ids(tok, text)) == text
    for d in task.docs:
        assert tok.decode(ids(tok, d.text)) == d.text


@pytest.mark.parametrize("text", ["", " ", "  \n\t x", "Zürich – 東京 ✓", "<think></think>",
                                  "</search></search>x", "<information>Doc 1(Title: A) a.\n</information>\n\n",
                                  "a<b>c</d>e", "\x00\x7f"])
def test_any_text_round_trips(tok, text):
    assert tok.decode(ids(tok, text)) == text


def test_a_name_is_the_same_ids_after_a_space_and_after_a_tag(tok, task):
    kb = task.kb
    for name in kb.entities["person"][:20] + kb.entities["company"][:10] + kb.entities["city"][:10]:
        alone = ids(tok, name)
        words = name.split(" ")
        assert len(alone) == 2 * len(words) - 1  # one token a word, one a space between words
        in_question = ids(tok, f"Who founded {name}?")
        in_turn = ids(tok, f"<think>{name}</think><search>{name}</search>")
        assert in_question[-len(alone) - 1:-1] == alone
        tag = tok.convert_tokens_to_ids
        assert in_turn == [tag("<think>"), *alone, tag("</think>"), tag("<search>"), *alone, tag("</search>")]


def test_tags_are_single_tokens_and_no_token_runs_past_one(tok):
    for t in SEARCH_QA_TAGS:
        (i,) = ids(tok, t)
        assert tok.decode([i]) == t
    # every other token is a run of letters, a run of whitespace or one other character: no token holds a
    # tag's last character and more, so a turn's decoded text ends with the stop tag at the tag's token
    for i in range(len(tok)):
        s = tok.decode([i])
        if s in SEARCH_QA_TAGS or i in tok.all_special_ids:
            continue
        assert s.isalpha() or s.isspace() or len(s.encode()) <= 1 or len(s) == 1, repr(s)
    turn = ids(tok, "<think>so Ann Bo</think><search>Ann Bo</search>")
    assert tok.decode(turn).endswith("</search>") and not tok.decode(turn[:-1]).endswith("</search>")


def test_made_in_code_and_matches_the_shipped_warm_start(tok):
    """The recipe builds the same tokenizer every time (the shipped checkpoint's tokenizer.json is this one)."""
    shipped = json.loads((shipped_model_dir("tiny_search_qa") / "tokenizer.json").read_text())
    mine = json.loads(tok.backend_tokenizer.to_str())
    assert shipped["model"]["vocab"] == mine["model"]["vocab"] and shipped["model"]["merges"] == mine["model"]["merges"]
    assert [a["content"] for a in shipped["added_tokens"]] == [a["content"] for a in mine["added_tokens"]]
    assert len(tok) == 1736 and tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<eos>", "<bos>", "<unk>"]


def test_unknown_tokenizer_name_is_refused():
    from steprl.config import ConfigError

    for bad in ("bpe", "steprl.tasks.search_qa.no_such_builder", "steprl.no_such_module.tokenizer"):
        with pytest.raises(ConfigError, match=f"model.tiny.tokenizer='{bad}'.*search_qa_tokenizer"):
            build_tiny_tokenizer(bad)
    with pytest.raises(ValueError, match="vision-language"):
        load_model(tiny=dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                             tokenizer="steprl.tasks.search_qa.search_qa_tokenizer"), vision={})


def test_agent_loop_with_the_search_tokenizer(task):
    """A scripted agent walks a 2-hop chain through the real search tool: the response is the scripted episode,
    the turns are in the loss and the documents are not, token for token."""
    torch.set_num_threads(1)
    model, tok = load_model(tiny=dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                      intermediate_size=64, tokenizer="steprl.tasks.search_qa.search_qa_tokenizer"))
    s = next(x for x in task.val_dataset() if x.meta["hops"] == 2)
    turns = [t for t, w in s.meta["solution_segments"] if w]
    script = lambda ctx, row: turns[ctx.count("<information>")]  # noqa: E731
    loop = AgentLoop(ScriptedEngine(script, max_new_tokens=32), SearchEnv(task.retriever, topk=1), max_turns=3,
                     max_response_tokens=256)
    ro = loop.generate(model, tok, [s.prompt])
    assert ro.texts[0] == s.solution and ro.info[0]["answered"] and ro.info[0]["tool_calls"] == 2
    n = int(ro.response_mask[0].sum())
    resp = ro.response_ids[0, :n].tolist()
    trained = [i for i, m in zip(resp, ro.loss_mask[0, :n].tolist()) if m]
    assert trained == sum((ids(tok, t) for t in turns), [])
    assert ro.step_ids[0, :n].tolist().count(-1) == sum(len(ids(tok, t)) for t, w in s.meta["solution_segments"]
                                                        if not w)
    assert task.verify(s, ro.texts[0]) == 1.0
