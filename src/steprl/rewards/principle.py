"""PPR's Principle Process Reward Model prompt and its ``<final_score>S,M</final_score>`` reply parser
(Xu et al., 2025, the principle judge's prompt). The prompt is our paraphrase of the reference code's instructions."""
from __future__ import annotations

import math
import re

from steprl.rewards.judges import JudgeRequest, JudgeResult

__all__ = ["PRINCIPLE_TEMPLATE", "parse_final_score", "parse_principle_reply", "user_message"]

PRINCIPLE_SYSTEM = """You are a very strict evaluator. You are shown one turn (the Response) of a multi-turn \
episode of a search agent, and everything that came before it (the Query). Evaluate only the Response, given the \
Query. It is a single turn, so it may not contain a final answer.

Make up reasonable principles for judging this turn yourself and score the Response on each principle \
separately. The most important principles to consider:
(a) does the turn extract correct information from the <information> results, with respect to the query?
(b) is the <search> query correct and appropriate?
(c) is the decision to search, or not to search, correct?

Hard format rule: every piece of text in the Response must be inside <think>, <search>, <information> or \
<answer> tags. If any text is outside these tags, the score must be 0.

Reply with exactly two lines:
Analysis: your reasoning and the score of each principle
Scores: <final_score>SCORE,MAX_SCORE</final_score>
(for example <final_score>4,6</final_score>)"""

PRINCIPLE_TEMPLATE = {"system": PRINCIPLE_SYSTEM,
                      "user": "[Conversation Context]\n**Query**: {question}\n**Response**: {response}"}

_FINAL = re.compile(r"<final_score>(.*?)</final_score>", re.DOTALL)
_USER = re.compile(r"<\|im_start\|>user(.*?)<\|im_end\|>", re.DOTALL)


def parse_final_score(reply: str) -> tuple[int, int] | None:
    """``(score, max)`` from the *last* ``<final_score>S,M</final_score>`` (both integers), or None when the tag
    is missing, does not parse, ``max <= 0``, ``score < 0`` or ``score > max``."""
    found = _FINAL.findall(reply or "")
    if not found:
        return None
    parts = found[-1].split(",")
    if len(parts) != 2:
        return None
    try:
        s, m = int(parts[0].strip()), int(parts[1].strip())
    except ValueError:
        return None
    if m <= 0 or s < 0 or s > m:
        return None
    return s, m


def parse_principle_reply(reply: str, req: JudgeRequest) -> JudgeResult:
    """One score ``S/M`` for the judged turn; NaN and ``parsed=False`` when the reply is invalid."""
    p = parse_final_score(reply)
    n = max(1, len(req.steps))
    if p is None:
        return JudgeResult(step_scores=[math.nan] * n, parsed=False)
    return JudgeResult(step_scores=[p[0] / p[1]] * n, final=p[0] / p[1], parsed=True)


def user_message(prompt: str) -> str:
    """The user turn of a Qwen chat-templated prompt (the PPRM's Query starts with it); the prompt itself when it
    has no chat markup."""
    m = _USER.search(prompt)
    return m.group(1).strip() if m else prompt
