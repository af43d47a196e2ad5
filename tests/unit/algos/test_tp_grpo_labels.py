"""TP-GRPO Stage I plumbing (spec §2.9 case 8): a scripted GenPRM behind the TP-GRPO prompt labels hand-written
traces from intrinsic signals (a "Wait, " reflection marks the step before it incorrect; in a wrong solution the
steps that contain the wrong answer are matched); labels -> thoughts -> token advantages; then one clipped update of
a 2-layer toy LM with those per-token advantages moves its log-probs the advantages' way."""
from __future__ import annotations

import math
import re

import torch

from steprl import core
from steprl.algos.tp_grpo import step_bad_flags
from steprl.core.tp_grpo import (
    thought_ids_from_steps,
    tp_grpo_direct_advantages,
    tp_grpo_outcome,
    tp_grpo_thought_rewards,
    tp_grpo_token_rewards,
)
from steprl.models.build import tiny_qwen2
from steprl.rewards.judges import TEMPLATES, JudgeRequest, JudgeResult, PromptedJudge, ScriptedBackend


def fake_genprm(messages) -> str:
    """Reads the TP-GRPO prompt; answers in its JSON schema."""
    user = messages[-1]["content"]
    steps = re.findall(r"^Step (\d+): (.*)$", user, re.MULTILINE)
    correct = "The final answer is correct." in user
    labels = {}
    if correct:
        for k, text in steps:
            labels[int(k)] = "correct"
        for k, text in steps:
            if text.startswith("Wait, ") and int(k) > 1:
                labels[int(k) - 1] = "incorrect"
    else:
        final = re.findall(r"-?\d+", steps[-1][1])[-1]
        for k, text in steps:
            labels[int(k)] = "matched" if re.search(rf"(?<!\d){final}(?!\d)", text) else "unmatched"
    return "Analysis: ...\n" + str([{"step": k, "label": v} for k, v in sorted(labels.items())]).replace("'", '"')


TRACES = [  # (steps, correct)
    (["3+4 is 7.", "7*2 is 15.", "Wait, 7*2 is 14.", "So the answer is 14."], True),
    (["3+4 is 8.", "Try 8*2.", "8*2 is 16.", "So the answer is 16."], False),
]


def test_scripted_genprm_labels_to_advantages():
    tmpl, parser = TEMPLATES["tp_grpo"]
    judge = PromptedJudge(ScriptedBackend(fake_genprm), tmpl, parser)
    reqs = [JudgeRequest("q", " ".join(s), s, meta={"fields": {"verdict": "correct" if c else "wrong"}})
            for s, c in TRACES]
    res = judge.score(reqs)
    assert res[0].labels == ["C", "I", "C", "C"]
    assert res[1].labels == ["U", "U", "M", "M"]  # "Try 8*2." does not carry 16
    bad = torch.tensor([step_bad_flags(r, 4, c, answer_from=3) for r, (_, c) in zip(res, TRACES)])
    assert bad.tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]
    # two tokens per step; a group of these two solutions: r^o = [1, -1] -> r̂ = ±1/(sqrt(2)+1e-4), acc = 1/2
    step_ids = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]] * 2)
    mask = torch.ones(2, 8)
    correct = torch.tensor([1.0, 0.0])
    rhat, r_c = tp_grpo_outcome(correct, torch.zeros(2, dtype=torch.long))
    h = 1 / (math.sqrt(2) + 1e-4)
    assert torch.allclose(rhat, torch.tensor([h, -h])) and torch.allclose(r_c, torch.tensor([0.5, 0.5]))
    tids, tbad, num = thought_ids_from_steps(step_ids, bad)
    assert num.tolist() == [3, 2]
    rew = tp_grpo_thought_rewards(tbad, num, correct, rhat, r_c)
    adv = core.discounted_returns(tp_grpo_token_rewards(tids, rew, rhat, mask), mask)
    want = torch.tensor([[h, h, h - 0.5, h - 0.5, h, h, h, h], [0] * 4 + [-h] * 4])
    assert torch.allclose(adv, want, atol=1e-6)
    assert torch.allclose(adv, tp_grpo_direct_advantages(tids, tbad, correct, rhat, r_c, mask), atol=1e-6)

    # one clipped policy-gradient step on a toy LM with these per-token advantages
    torch.manual_seed(0)
    lm = tiny_qwen2(vocab_size=32, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    ids = torch.randint(4, 32, (2, 9))

    def logp():
        logits = lm(input_ids=ids).logits[:, :-1]
        return core.logprobs_from_logits(logits, ids[:, 1:])

    opt = torch.optim.SGD(lm.parameters(), lr=0.5)
    before = logp().detach()
    loss, _ = core.ppo_clip_loss(logp(), before, adv)
    core.aggregate_loss(loss, mask).backward()
    opt.step()
    moved = (logp().detach() - before) * adv.sign()
    assert float((moved * (adv != 0)).sum()) > 0  # log-probs rise where A > 0 and fall where A < 0


def test_step_bad_flags_rules():
    scores = JudgeResult(step_scores=[1.0, 0.0, 1.0, 1.0, 0.0])
    assert step_bad_flags(scores, 5, True, 4) == [0, 1, 0, 0, 0]                 # correct: I where wrong, answer C
    assert step_bad_flags(scores, 5, False, 4) == [0, 1, 1, 1, 1]                # wrong: M from the first error on
    assert step_bad_flags(scores, 5, False, 4, "direct") == [0, 1, 0, 0, 1]
    assert step_bad_flags(JudgeResult([math.nan] * 3, parsed=False), 3, False, 2) == [0, 0, 1]  # no penalty
    labels = JudgeResult([math.nan] * 3, labels=["I", None, "C"])
    assert step_bad_flags(labels, 3, True, 2) == [1, 0, 0]                       # unlabelled step: C
    assert step_bad_flags(JudgeResult([1.0, 1.0]), 2, True, 5) == [0, 0]         # no answer step inside range
