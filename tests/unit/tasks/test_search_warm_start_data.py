"""search_qa's scripted episodes (what the search warm start is trained on), per-hop sources, and the rule-based
stand-in for PPR's principle judge, on hand-made turns."""
from __future__ import annotations

import pytest

from steprl.rewards.entities import entity_match_rate, thoughts
from steprl.rewards.principle import PRINCIPLE_TEMPLATE, parse_final_score
from steprl.tasks.search_qa import SearchQATask, extract_answer, principle_judge, scripted_episode
from steprl.tasks.search_tools import Document, SearchEnv, parse_action


class _OneDoc:
    """A retriever over a fixed list: search(query) returns the document titled ``query`` (if any)."""

    def __init__(self, docs):
        self.docs = {d.title: d for d in docs}

    def search(self, query, k=3):
        return [self.docs[query]] if query in self.docs else []


DOCS = [Document("Ann Bo", "Ann Bo was born in Tova and works for Zed Corp."), Document("Tova", "Tova is a city in Rulia.")]


def test_scripted_episode_by_hand():
    env = SearchEnv(_OneDoc(DOCS), topk=1)
    text = scripted_episode(env, ["Ann Bo", "Tova", "Rulia"])
    assert text == ("<think>Ann Bo</think><search>Ann Bo</search>\n\n<information>Doc 1(Title: Ann Bo) Ann Bo was "
                    "born in Tova and works for Zed Corp.\n</information>\n\n"
                    "<think>Tova</think><search>Tova</search>\n\n<information>Doc 1(Title: Tova) Tova is a city in "
                    "Rulia.\n</information>\n\n<think>Rulia</think><answer>Rulia</answer>")
    assert extract_answer(text) == "Rulia"
    assert entity_match_rate(thoughts(text), ["Ann Bo", "Tova", "Rulia"]) == 1.0
    with pytest.raises(ValueError, match="at least 2 entities"):
        scripted_episode(env, ["Ann Bo"])


@pytest.fixture(scope="module")
def task():
    return SearchQATask(seed=0, num_val=16, topk=1, max_turns=3, hops_in_source=True)


def test_synthetic_samples_carry_a_correct_scripted_episode(task):
    for s in list(task.train_dataset())[:40] + list(task.val_dataset()):
        assert task.verify(s, s.solution) == 1.0
        acts = [parse_action(t) for t in s.solution.split("</information>")]
        assert [a[0] for a in acts] == ["search"] * s.meta["hops"] + ["answer"]
        assert [a[1] for a in acts[:-1]] == s.meta["entities"][:-1]  # one search per hop, the chain in order
        assert s.source == f"search_qa_{s.meta['hops']}hop"
    assert SearchQATask(seed=0, num_val=16).val_dataset()[0].source == "search_qa"


def _ask(query: str, turn: str) -> tuple[int, int]:
    user = PRINCIPLE_TEMPLATE["user"].format(question=query, response=turn)
    reply = principle_judge([{"role": "system", "content": "..."}, {"role": "user", "content": user}])
    return parse_final_score(reply)


Q = "Question: In which country was Ann Bo born?\n"
T1 = ("<think>Ann Bo</think><search>Ann Bo</search>\n\n<information>Doc 1(Title: Ann Bo) Ann Bo was born in Tova "
      "and works for Zed Corp.\n</information>\n\n")
T2 = "<think>Tova</think><search>Tova</search>\n\n<information>Doc 1(Title: Tova) Tova is a city in Rulia.\n</information>\n\n"


@pytest.mark.parametrize("query,turn,score", [
    (Q, T1, (3, 3)),                      # grounded thought and query, a new document
    (Q + T1, T2, (3, 3)),                 # the second hop reads Tova from the first document
    (Q, T2, (1, 3)),                      # Tova is not in the question yet: ungrounded thought and query, new doc
    (Q + T1, T1, (1, 3)),                 # a repeated search: thought grounded, query repeated, nothing new
    (Q, "Let me see. " + T1, (0, 3)),     # text outside the tags breaks the hard format rule
    (Q, "<think>Ann Bo</think>", (1, 3)),  # no search: only the thought counts
])
def test_principle_judge_on_hand_made_turns(query, turn, score):
    assert _ask(query, turn) == score


def test_short_names_keep_every_search_on_its_own_document():
    """task.name_syllables=[1, 2] (task=search_qa_tiny): words of 1-2 syllables, no word shared by two entities,
    so each scripted search returns the searched entity's own document; [2, 1] or [0, 2] is refused."""
    import re

    from steprl.tasks.search_qa import make_knowledge_base

    kb = make_knowledge_base(0, people=150, companies=50, cities=50, countries=10, syllables=(1, 2))
    words = [w.lower() for names in kb.entities.values() for n in names for w in n.removesuffix(" Corp").split()]
    assert len(words) == len(set(words)) == 150 * 2 + 50 + 50 + 10
    # a syllable is onset + vowel + coda, 2 to 2 + 2 + 2 characters: a word of 1-2 syllables has 2-12
    assert all(2 <= len(w) <= 12 for w in words)  # [2, 3] syllables would allow up to 18
    t = SearchQATask(seed=0, kb_size={"people": 150, "companies": 50, "cities": 50, "countries": 10}, num_val=16,
                     topk=1, max_turns=3, name_syllables=[1, 2])
    for s in list(t.train_dataset())[:200]:
        assert re.findall(r"\(Title: (.*?)\)", s.solution) == s.meta["entities"][:-1]
    for bad in ([2, 1], [0, 2], [1, 2, 3]):
        with pytest.raises(ValueError, match="name_syllables"):
            SearchQATask(seed=0, name_syllables=bad)


def test_search_qa_tiny_keeps_the_warm_starts_knowledge_base_under_any_run_seed(tmp_path):
    """The run's seed varies data order and sampling; task=search_qa_tiny's knowledge base and held-out split stay
    those the shipped warm start (and its tokenizer) were made from, so seed=3 validates on the same questions."""
    from hydra.utils import instantiate

    from tests.helpers import compose_train

    def held_out(task):
        return [task.val_dataset()[i].prompt for i in range(len(task.val_dataset()))]

    tasks = {}
    for seed in (0, 3):
        cfg = compose_train(["experiment=e_grpo_tiny", f"seed={seed}"], out_dir=tmp_path)
        assert cfg.seed == seed and cfg.task.seed == 0
        tasks[seed] = instantiate(cfg.task)
    assert len(held_out(tasks[0])) == 128 and held_out(tasks[3]) == held_out(tasks[0])
    # under another knowledge base (task.seed=3, as before the pin) the held-out questions are other questions
    other = instantiate(compose_train(["experiment=e_grpo_tiny", "task.seed=3"], out_dir=tmp_path).task)
    assert held_out(other) != held_out(tasks[0])
