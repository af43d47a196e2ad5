"""experiment=propa_puzzles_tiny: PROPA on the vision puzzles with the tiny Qwen2-VL runs 2 RL steps on CPU; the
search is built from the image prompts, the unsolved questions go to the SFT on their gold steps and the PRM
regresses on the nodes; the recipe composes with the VL model and the puzzle step format."""
from __future__ import annotations

import math

import torch

from steprl.config import check_config
from steprl.models.vision import IMAGE_TOKEN
from tests.e2e.test_train import run
from tests.helpers import compose_train


def test_recipe_composes(tmp_path):
    cfg = compose_train(["experiment=propa_puzzles_tiny", "logger=none"], tmp_path)
    assert check_config(cfg)["rollouts_per_step"] == 8
    assert cfg.algo._target_ == "steprl.algos.propa.PROPA" and cfg.task._target_ == "steprl.tasks.PuzzleTask"
    assert cfg.model.vision is not None and cfg.algo.mcts.terminal_regex == "<answer>"
    assert cfg.model.path == "steprl:tiny_vl_puzzles" and cfg.model.tiny is None


def test_propa_puzzles_tiny_runs_two_steps(tmp_path):
    """From the shipped warm start (it writes the answer format and reads the image) the search solves trees, so
    the GRPO update runs on sibling groups whose rows carry their question's pixels; a step whose trees found no
    correct path sends both questions to the SFT instead."""
    rows, m, out = run(["experiment=propa_puzzles_tiny", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
                        "trainer.val_check_interval=100"], tmp_path, outputs=True)
    trees = out["step"].extras["trees"]
    assert len(rows) == 2
    for r in rows:
        assert r["propa/image_prompts"] == 1.0  # every expansion / simulation prompt showed its image
        assert r["propa/expansions"] >= 2 and r["propa/tree_nodes"] > 1
        assert r["propa/sft_questions"] == 2 * (1 - r["propa/solved_frac"])
        assert r["propa/prm_examples"] > 0 and math.isfinite(r["propa/prm_loss"])
        if r["propa/sft_questions"]:
            assert r["propa/sft_examples"] >= 2 * r["propa/sft_questions"] and math.isfinite(r["propa/sft_loss"])
        if r["propa/solved_frac"] == 0:  # no tree found a correct path: no sibling group, the SFT takes both
            assert r["propa/groups"] == 0 and r["propa/sft_questions"] == 2 and r["train/reward"] == 0
        else:
            assert r["propa/groups"] >= 1 and math.isfinite(r["train/loss"]) and 0 < r["train/reward"] < 1
    assert max(r["propa/groups"] for r in rows) >= 1  # the GRPO update ran on image rows at least once
    for s, root in trees:  # the last step's trees: image questions, expanded k = 4 wide
        assert len(s.images) == 1 and s.prompt.count(IMAGE_TOKEN) == 1 and len(root.children) == 4
        assert all(0 <= n.W <= n.N for n in root.walk())
    ro, rw = out["step"].unfiltered
    assert len(ro) == rw.outcome.numel() == 4 * int(rows[-1]["propa/groups"]) > 0
    assert len(ro.pixel_values) == len(ro.image_grid_thw) == len(ro)
    for row, q in enumerate(ro.sample_idx.tolist()):  # each row carries its own question's image
        pv, grid = m.processor.images(trees[q][0].images)
        assert torch.equal(ro.pixel_values[row].cpu(), pv) and torch.equal(ro.image_grid_thw[row].cpu(), grid)


def test_shipped_vl_warm_start_writes_the_answer_format():
    """model=tiny_vl_puzzles (tiny_vl after experiment=sft_tiny_vl_puzzles) closes an <answer> tag on most of
    the Rotation puzzles over upright scenes it was made for, and answers more of them right with their image than
    with a black one; the same architecture from a random init never closes the tag."""
    from steprl.models import load_model
    from steprl.models.vision import load_processor
    from steprl.rollout.hf import HFEngine
    from steprl.tasks.puzzles import PuzzleTask, answer_text

    from PIL import Image

    task = PuzzleTask(puzzles=["rotation"], source="scene", num_val=8)
    qs = [task.sample("val", i) for i in range(8)]
    cfg = compose_train(["model=tiny_vl"]).model
    formatted = {}
    for name, kw in {"warm": {"path": "steprl:tiny_vl_puzzles"}, "fresh": {"tiny": dict(cfg.tiny)}}.items():
        model, tok = load_model(vision=dict(cfg.vision), **kw)
        proc = load_processor(vision=dict(cfg.vision), image_processor=dict(cfg.image_processor), **kw)
        assert sum(p.numel() for p in model.parameters()) < 300_000
        ro = HFEngine(max_new_tokens=72).generate(model, tok, [q.prompt for q in qs], greedy=True,
                                                  images=[q.images for q in qs], processor=proc)
        formatted[name] = sum(answer_text(t) is not None for t in ro.texts)
        if name == "warm":
            black = HFEngine(max_new_tokens=72).generate(
                model, tok, [q.prompt for q in qs], greedy=True, processor=proc,
                images=[[Image.new("RGB", im.size) for im in q.images] for q in qs])
            right = [sum(task.verify(q, t) for q, t in zip(qs, r.texts)) for r in (ro, black)]
    assert formatted["warm"] >= 5 and formatted["fresh"] == 0
    assert right[0] >= right[1] + 2, right
