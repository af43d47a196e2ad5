"""PROPA on images (experiment=propa_puzzles_tiny with a randomly initialised tiny Qwen2-VL, short steps): the search generates from the image prompts,
the sibling-group rollouts / SFT rows / PRM inputs carry each question's pixel rows, the images reach the update
pass and the PRM, and whatever the model writes scores 0 rather than crashing."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from steprl.algos.step import Step
from steprl.algos.propa.parts import EngineStepPolicy, clean_step
from steprl.core import grpo_advantage
from steprl.core.mcts import Node, log_boost, prm_examples
from steprl.models.vision import IMAGE_TOKEN
from steprl.train import build
from tests.helpers import compose_train


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    torch.manual_seed(0)
    cfg = compose_train(["experiment=propa_puzzles_tiny", "model=tiny_vl", "task.puzzles=[rotation,jigsaw,patchfit]",
                         "algo.mcts.iterations=3", "algo.mcts.step_max_tokens=12", "algo.mcts.simulate_max_tokens=24",
                         "logger=none", "callbacks.progress_bar=null"], tmp_path_factory.mktemp("propa_vl"))
    return build(cfg)[0]


def _samples(m, kind, n=2):
    out = [m.task.sample("train", i) for i in range(200)]
    return [s for s in out if s.meta["puzzle"] == kind][:n]


def _tree(s):
    """root -> a (Q = 1/2), b (Q = 0), c, d unvisited; a -> a1 (the right answer, Q = 1), a2 (Q = 0)."""
    root = Node()
    a = root.add("<think>It is upright.</think>", completion="<think>It is upright.</think>\n")
    b = root.add("<think>x</think>", completion="<think>x</think>\n")
    root.add("<think>y</think>", completion="<think>y</think>\n")
    root.add("<answer>nope</answer>", completion="<answer>nope</answer>", eos=True)
    a1 = a.add(f"<answer>{s.answer}</answer>", completion=f"<answer>{s.answer}</answer>", eos=True)
    a2 = a.add("<answer>7</answer>", completion="<answer>7</answer>", eos=True)
    for n, (N, W) in {root: (3, 1.0), a: (2, 1.0), a1: (1, 1.0), a2: (1, 0.0), b: (1, 0.0)}.items():
        n.N, n.W = N, W
    return root


def _image_tokens(m, ro, row):
    ids = ro.prompt_ids[row][ro.prompt_mask[row].bool()]
    return int((ids == m.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum())


def test_step_prompts_keep_the_image_placeholder(m):
    s = _samples(m, "rotation", 1)[0]
    p = m.step_prompt(s, ["<think>It is upright.</think>"])
    assert p == s.prompt + "<think>It is upright.</think>\n" and p.count(IMAGE_TOKEN) == 1 == len(s.images)


def test_search_generates_from_the_image_prompts(m):
    qs = _samples(m, "rotation", 1) + _samples(m, "patchfit", 1)
    pol = EngineStepPolicy(m, qs)
    short = dataclasses.replace(pol.simulator, max_new_tokens=4)
    ro = pol._gen(short, [m.step_prompt(s, []) for s in qs], 2, greedy=True, trees=[0, 1])
    assert pol.image_prompts == pol.prompts == 2
    assert len(ro.pixel_values) == len(ro.image_grid_thw) == len(ro) == 4
    for row in range(4):
        pv, grid = m.processor.images(qs[row // 2].images)
        assert torch.equal(ro.pixel_values[row], pv) and torch.equal(ro.image_grid_thw[row], grid)
        assert _image_tokens(m, ro, row) == int(grid.prod()) // 4  # one token per 2x2 merged patch
    assert ro.texts[0] == ro.texts[1]  # greedy: same image, same text
    m.mcts_cfg["iterations"] = 1
    try:
        roots, stats = m.search(qs)
    finally:
        m.mcts_cfg["iterations"] = 3
    # one iteration: each root expanded into k children, its first child simulated (2 expansion + <= 2 rollouts)
    assert stats["image_prompts"] == stats["prompts"] and 2 <= stats["prompts"] <= 4
    assert stats["expansions"] == 2 and all(len(r.children) == 4 for r in roots)


def test_tree_batch_carries_each_questions_pixels(m):
    qs = _samples(m, "rotation", 2)
    ro, rw = m.tree_batch([(q, _tree(q)) for q in qs])
    # per tree: the root's 4 children and a's 2 children (b has no children)
    assert ro.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3]
    assert ro.sample_idx.tolist() == [0] * 6 + [1] * 6
    assert rw.outcome.tolist() == pytest.approx([log_boost(0.5), 0, 0, 0, 1, 0] * 2, abs=1e-6)
    assert len(ro.pixel_values) == len(ro.image_grid_thw) == len(ro) == 12
    for row in range(12):
        pv, grid = m.processor.images(qs[row // 6].images)
        assert torch.equal(ro.pixel_values[row], pv) and torch.equal(ro.image_grid_thw[row], grid)
        assert ro.pixel_values[row] is ro.pixel_values[6 * (row // 6)]  # one tensor per question
        assert _image_tokens(m, ro, row) == int(grid.prod()) // 4 == 16  # 112x112: 8x8 patches -> 16 tokens
    assert not torch.equal(ro.pixel_values[0], ro.pixel_values[6])
    adv, _ = m.advantages(Step([], ro, rw))
    assert torch.allclose(adv[:, 0], grpo_advantage(rw.outcome, ro.group_ids, eps=1e-4), atol=1e-6)
    # the update pass reads the images: the same rows with the other question's pixels give other log-probs
    logp = m.forward_logp(m.policy, ro.to(m.device))[0]
    swapped = ro.select(torch.arange(12))
    swapped.pixel_values = ro.pixel_values[6:] + ro.pixel_values[:6]
    other = m.forward_logp(m.policy, swapped)[0]
    assert torch.isfinite(logp).all() and (logp * ro.response_mask).sum() < 0
    assert (logp - other).abs().max() > 1e-6


def test_sft_rows_and_phase_on_images(m):
    s = _samples(m, "jigsaw", 1)[0]
    rows = s.meta["grid"][0]
    prompts, comps, eos, images = m.sft_rows([s])
    steps = s.solution.split("\n")
    assert comps == [x + "\n" for x in steps[:-1]] + [steps[-1]] and eos == [False] * rows + [True]
    assert prompts[0] == s.prompt and prompts[-1] == s.prompt + "".join(x + "\n" for x in steps[:-1])
    assert all(ims is s.images for ims in images)
    pid, pm, rid, rm, pix, grids = m.encode_pairs(prompts, comps, eos, images)
    assert len(pix) == len(grids) == pid.shape[0] == rows + 1
    before = [p.detach().clone() for p in m.policy.parameters()]
    mbs, m.sft_cfg["micro_batch_size"] = m.sft_cfg["micro_batch_size"], 1  # several steps: the warm-up's first has lr 0
    try:
        out = m.sft_phase([s])
    finally:
        m.sft_cfg["micro_batch_size"] = mbs
    assert out["propa/sft_examples"] == rows + 1 and math.isfinite(out["propa/sft_loss"])
    changed = [not torch.equal(a, b) for a, b in zip(before, m.policy.parameters())]
    vis = [not torch.equal(a, b) for (n, _), a, b in zip(m.policy.named_parameters(), before, m.policy.parameters())
           if "visual" in n]
    assert any(changed) and any(vis)  # the vision tower got gradient: the images were in the SFT forward
    with torch.no_grad():
        for p, b in zip(m.policy.parameters(), before):
            p.copy_(b)


def test_prm_reads_the_image_and_regresses(m):
    q = _samples(m, "rotation", 2)
    data = prm_examples(_tree(q[0]))
    texts, y = [m.prm_text(q[0], s) for s, _ in data], torch.tensor([v for _, v in data])
    ims = [q[0].images] * len(texts)
    assert all(t.count(IMAGE_TOKEN) == 1 for t in texts)
    with torch.no_grad():
        mse0 = float(((m.prm_scores(texts, ims) - y) ** 2).mean())
    m.prm_cfg["epochs"] = 5
    out = m.prm_phase([(q[0], _tree(q[0]))])
    with torch.no_grad():
        mse1 = float(((m.prm_scores(texts, ims) - y) ** 2).mean())
        other = m.prm_scores(texts, [q[1].images] * len(texts))
        mine = m.prm_scores(texts, ims)
    assert out["propa/prm_examples"] == len(texts) == 6 and mse1 < mse0
    assert (mine - other).abs().max() > 1e-6  # the PRM's trunk sees the image
    assert m.prm.vision and any("visual" in n for n, _ in m.prm.named_parameters())
    sols, traces = m.best_of_k(q[:1], k=3, max_steps=1)
    [(cands, scores, best)] = traces[0]
    assert len(cands) == 3 and best == max(range(3), key=lambda j: scores[j]) and sols == [cands[best]]


@pytest.mark.parametrize("text", ["", "garbage \x00 ))) <answer>", "<answer></answer>", "<answer>91</answer>",
                                  "<think>no answer tag</think>", "<answer>" + "9" * 5000 + "</answer>"])
def test_bad_outputs_score_zero(m, text):
    s = _samples(m, "rotation", 1)[0]
    pol = EngineStepPolicy(m, [s])
    assert pol.is_correct(0, [text]) is False
    assert pol.is_correct(0, ["<think>a</think>", f"<answer>{s.answer}</answer>"]) is True


def test_vision_token_text_is_removed_from_steps(m):
    assert clean_step("a<|image_pad|>b<|vision_start|>c<|vision_end|><|video_pad|>") == "abc"
    s = _samples(m, "rotation", 1)[0]
    root = _tree(s)
    root.children[1].state = clean_step("<|image_pad|>x")
    ro, _ = m.tree_batch([(s, root)])
    assert all(_image_tokens(m, ro, r) == 16 for r in range(len(ro)))
