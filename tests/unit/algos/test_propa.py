"""PROPA module pieces on the tiny arith model: step prompts, tree -> sibling GRPO rollouts, gold-step SFT, the PRM
regression and PRM-guided step-wise best-of-k."""
from __future__ import annotations

import pytest
import torch

from steprl.algos.step import Step
from steprl.core import grpo_advantage
from steprl.core.mcts import Node, log_boost, prm_examples
from steprl.rollout.types import Sample
from steprl.train import build
from tests.helpers import compose_train


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    cfg = compose_train(["experiment=propa_tiny", "logger=none", "callbacks.progress_bar=null"],
                        tmp_path_factory.mktemp("propa"))
    return build(cfg)[0]


Q = Sample(prompt="3+4-2=\n", answer="5", solution="3+4-2=7-2\n7-2=5\n#### 5", meta={"expression": "3+4-2"})


def _tree():
    """root -> a (Q=1/2: one correct leaf below), b (Q=0), c, d (unvisited)."""
    root = Node()
    a = root.add("3+4-2=7-2", completion="3+4-2=7-2\n")
    b = root.add("3+4-2=3+2", completion="3+4-2=3+2\n")
    root.add("3+4-2=1", completion="3+4-2=1\n")
    root.add("#### 9", completion="#### 9", eos=True)
    a1 = a.add("7-2=5", completion="7-2=5\n")
    a2 = a.add("7-2=4", completion="7-2=4\n")
    for n, (N, W) in {root: (3, 1.0), a: (2, 1.0), a1: (1, 1.0), a2: (1, 0.0), b: (1, 0.0)}.items():
        n.N, n.W = N, W
    return root


def test_step_prompt_formats(m):
    assert m.step_prompt(Q, []) == "3+4-2=\n"
    assert m.step_prompt(Q, ["3+4-2=7-2", "7-2=5"]) == "3+4-2=\n3+4-2=7-2\n7-2=5\n"
    m.mcts_cfg["step_format"] = "propa"
    try:
        assert m.step_prompt(Q, []) == "3+4-2=\n First step:"
        assert m.step_prompt(Q, ["s1", "s2"]) == "3+4-2=\n Existing steps: s1 s2 Next step:"
    finally:
        m.mcts_cfg["step_format"] = "continue"


def test_tree_batch_makes_sibling_groups(m):
    ro, rw = m.tree_batch([(Q, _tree())])
    # two groups: the root's 4 children and a's 2 children (b has no children; a2 leaf)
    assert ro.group_ids.tolist() == [0, 0, 0, 0, 1, 1]
    assert rw.outcome.tolist() == pytest.approx([log_boost(0.5), 0.0, 0.0, 0.0, 1.0, 0.0], abs=1e-6)
    tok = m.tokenizer
    prompts = [tok.decode(p[pm.bool()].tolist()) for p, pm in zip(ro.prompt_ids, ro.prompt_mask)]
    assert prompts[:4] == ["3+4-2=\n"] * 4 and prompts[4:] == ["3+4-2=\n3+4-2=7-2\n"] * 2
    assert ro.texts[0] == "3+4-2=7-2\n" and ro.texts[4] == "7-2=5\n"
    last = int(ro.response_mask[3].sum()) - 1
    assert int(ro.response_ids[3, last]) == tok.eos_token_id  # "#### 9" ended the solution: EOS replayed
    assert int(ro.response_ids[0, int(ro.response_mask[0].sum()) - 1]) != tok.eos_token_id
    assert torch.equal(ro.loss_mask, ro.response_mask)
    adv, _ = m.advantages(Step([], ro, rw))
    want = grpo_advantage(rw.outcome, ro.group_ids, eps=1e-4)
    assert torch.allclose(adv[:, 0], want, atol=1e-6)


def test_unsolved_tree_gives_no_groups(m):
    root = _tree()
    for n in root.walk():
        n.W = 0.0
    ro, rw = m.tree_batch([(Q, root)])
    assert len(ro) == 0 and rw.outcome.numel() == 0


def test_sft_examples_and_phase(m):
    prompts, comps, eos = m.sft_examples([Q])
    assert prompts == ["3+4-2=\n", "3+4-2=\n3+4-2=7-2\n", "3+4-2=\n3+4-2=7-2\n7-2=5\n"]
    assert comps == ["3+4-2=7-2\n", "7-2=5\n", "#### 5"] and eos == [False, False, True]
    before = [p.detach().clone() for p in m.policy.parameters()]
    out = m.sft_phase([Q, Q, Q])  # 9 examples, micro-batch 8: 2 steps (the first, warm-up, at lr 0)
    assert out["propa/sft_examples"] == 9 and out["propa/sft_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, m.policy.parameters()))
    assert all(p.grad is None for p in m.policy.parameters())
    with torch.no_grad():
        for p, b in zip(m.policy.parameters(), before):
            p.copy_(b)


def test_prm_regression_and_best_of_k(m):
    data = prm_examples(_tree())
    texts, y = [m.prm_text(Q, s) for s, _ in data], torch.tensor([v for _, v in data])
    with torch.no_grad():
        mse0 = float(((m.prm_scores(texts) - y) ** 2).mean())
    m.prm_cfg["epochs"] = 5
    out = m.prm_phase([(Q, _tree())])
    with torch.no_grad():
        mse1 = float(((m.prm_scores(texts) - y) ** 2).mean())
    assert out["propa/prm_examples"] == len(texts) == 6 and mse1 < mse0
    sols, traces = m.best_of_k([Q], k=3, max_steps=2)
    assert len(sols) == 1 and 1 <= len(traces[0]) <= 2
    for cands, scores, best in traces[0]:
        assert len(cands) == 3 and best == max(range(3), key=lambda j: scores[j])
    assert sols[0].split("\n") == [cands[best] for cands, _, best in traces[0]]
