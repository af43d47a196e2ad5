"""AgentLoop: turn-by-turn rollouts with a scripted policy that calls the BM25 search tool.

Byte tokenizer: one token per ASCII character, so token positions are character positions of the response.
"""
from __future__ import annotations

import pytest
import torch

from steprl.models import load_model
from steprl.rollout.agent import AgentLoop
from steprl.rollout.hf import HFEngine
from steprl.tasks.search_tools import INVALID_ACTION, BM25Retriever, Document, SearchEnv
from tests.scripted import ScriptedEngine

DOCS = [Document("Teluma", "Teluma is a city in Vornia."), Document("Orbex Corp", "Orbex Corp is based in Teluma."),
        Document("Kai Dro", "Kai Dro works for Orbex Corp.")]
SEARCH = "<think>who employs Kai Dro</think><search>Kai Dro</search>"
ANSWER = "<think>so Orbex Corp</think><answer>Orbex Corp</answer>"


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load_model(tiny=dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                max_position_embeddings=1024))


def env():
    return SearchEnv(BM25Retriever(DOCS), topk=1)


def script_by_prompt(ctx: str, row: int) -> str:
    """Prompt 'A': search then answer. 'B': answer at once. 'C': never a valid action. 'D': search forever."""
    prompt = ctx.split("\n")[0]
    if prompt == "B":
        return ANSWER
    if prompt == "C":
        return "I am not sure"
    if prompt == "D":
        return SEARCH
    return ANSWER if "<information>" in ctx else SEARCH


def test_search_then_answer_masks_and_steps(lm):
    model, tok = lm
    eng = ScriptedEngine(script_by_prompt, max_new_tokens=200)
    ro = AgentLoop(eng, env(), max_turns=2, max_response_tokens=1000).generate(model, tok, ["A\n", "B\n"], n=2)
    assert len(ro) == 4 and ro.group_ids.tolist() == [0, 0, 1, 1]
    obs = "\n\n<information>Doc 1(Title: Kai Dro) Kai Dro works for Orbex Corp.\n</information>\n\n"
    assert ro.texts[0] == SEARCH + obs + ANSWER
    assert ro.texts[2] == ANSWER
    n0 = len(SEARCH + obs + ANSWER)
    lm0 = ro.loss_mask[0, :n0].tolist()
    assert lm0 == [1] * len(SEARCH) + [0] * len(obs) + [1] * len(ANSWER)
    assert ro.response_mask[0].sum() == n0 and ro.loss_mask[0, n0:].sum() == 0
    assert ro.step_ids[0, :n0].tolist() == [0] * len(SEARCH) + [-1] * len(obs) + [1] * len(ANSWER)
    assert ro.step_ids[2, :len(ANSWER)].tolist() == [0] * len(ANSWER)
    # observation tokens: inside the response, never in the loss
    assert bool(((ro.response_mask == 1) & (ro.loss_mask == 0)).any(1)[0])
    assert ro.info[0] == {"turns": 2, "tool_calls": 1, "format_errors": 0, "answered": True,
                          "over_length": False, "truncated": None}
    assert ro.info[2]["turns"] == 1 and ro.info[2]["tool_calls"] == 0
    assert ro.finish_reason == ["stop"] * 4
    # batched across live episodes: 4 rows in turn 1, only the 2 still searching in turn 2
    assert eng.calls == [4, 2]


def test_observation_tokens_get_no_gradient(lm):
    """The policy-gradient loss of a rollout has zero gradient w.r.t. the logits of observation tokens."""
    from steprl import core
    model, tok = lm
    ro = AgentLoop(ScriptedEngine(script_by_prompt, 200), env(), max_turns=2).generate(model, tok, ["A\n"], n=1)
    T = ro.response_ids.shape[1]
    logits = torch.randn(1, T, len(tok), requires_grad=True)
    logp = core.logprobs_from_logits(logits, ro.response_ids)
    loss, _ = core.ppo_clip_loss(logp, logp.detach(), torch.ones_like(logp))
    core.aggregate_loss(loss, ro.loss_mask.float()).backward()
    per_tok = logits.grad.abs().sum(-1)[0]
    obs = (ro.response_mask[0] == 1) & (ro.loss_mask[0] == 0)
    assert obs.sum() > 20
    assert float(per_tok[obs].abs().max()) == 0.0
    assert bool((per_tok[ro.loss_mask[0].bool()] > 0).all())


def test_format_errors_turn_budget_and_token_budget(lm):
    model, tok = lm
    ro = AgentLoop(ScriptedEngine(script_by_prompt, 200), env(), max_turns=2, max_response_tokens=2000).generate(
        model, tok, ["C\n", "D\n"], n=1)
    # C: invalid every turn -> the invalid-action message after turns 1 and 2, a format error on all 3 turns
    assert ro.info[0]["format_errors"] == 3 and ro.info[0]["turns"] == 3 and not ro.info[0]["answered"]
    assert ro.texts[0].count(INVALID_ACTION.strip()) == 2
    assert not ro.info[0]["over_length"]
    # D: searches on the last (tool-less) turn too -> ends unanswered, over the turn budget
    assert ro.info[1]["tool_calls"] == 2 and ro.info[1]["truncated"] == "turns" and ro.finish_reason[1] == "length"
    # a token budget that ends inside the second turn
    budget = len(SEARCH) + 30
    ro = AgentLoop(ScriptedEngine(script_by_prompt, 200), env(), max_turns=2, max_response_tokens=budget).generate(
        model, tok, ["A\n"], n=1)
    assert int(ro.response_mask.sum()) == budget
    assert ro.info[0]["truncated"] == "tokens" and ro.info[0]["over_length"] and ro.finish_reason[0] == "length"
    # observations are cut to max_obs_tokens (so the script never sees <information> and searches twice)
    ro = AgentLoop(ScriptedEngine(script_by_prompt, 200), env(), max_turns=2, max_obs_tokens=5).generate(
        model, tok, ["A\n"], n=1)
    assert ro.info[0]["tool_calls"] == 2
    assert int(((ro.response_mask == 1) & (ro.loss_mask == 0)).sum()) == 2 * 5


def test_turn_token_limit_cuts_a_turn(lm):
    model, tok = lm
    ro = AgentLoop(ScriptedEngine(script_by_prompt, 200), env(), max_turns=1, max_turn_tokens=10).generate(
        model, tok, ["B\n"], n=1)
    # each turn is cut at 10 tokens -> no action -> format error, invalid-action message, then the final turn
    assert ro.info[0]["format_errors"] == 2 and ro.loss_mask[0].sum() == 20


def test_real_hf_engine_continues_from_ids(lm):
    """The HF engine's continue_ids on a real tiny model: rows of different lengths, stop strings."""
    model, tok = lm
    eng = HFEngine(max_new_tokens=8, temperature=1.0)
    ctx = [tok("hello", add_special_tokens=False)["input_ids"], tok("a", add_special_tokens=False)["input_ids"]]
    g = torch.Generator().manual_seed(0)
    new, fin = eng.continue_ids(model, tok, ctx, generator=g)
    assert len(new) == 2 and all(1 <= len(t) <= 8 for t in new) and set(fin) <= {"stop", "length"}
    # same contexts one at a time (no padding) give the same greedy continuation as the batch
    a, _ = eng.continue_ids(model, tok, ctx, greedy=True)
    b = [eng.continue_ids(model, tok, [c], greedy=True)[0][0] for c in ctx]
    assert a == b
    # the multi-turn loop on the real engine runs and keeps masks consistent
    ro = AgentLoop(eng, env(), max_turns=1, max_response_tokens=24).generate(model, tok, ["Q\n"], n=2, generator=g)
    assert bool((ro.loss_mask <= ro.response_mask).all())
    assert bool(((ro.step_ids >= 0) == ro.loss_mask.bool()).all())
