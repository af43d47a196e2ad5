"""The puzzle evaluation command: per-kind accuracies, standard errors and paired differences by hand, and a
run of the command on the shipped warm start (with black images and a second model)."""
from __future__ import annotations

import json
import math

import pytest

from steprl.tasks.puzzle_eval import main, paired, summarize


def test_summarize_by_hand():
    kinds = ["rotation", "rotation", "patchfit", "patchfit"]
    res = summarize(kinds, {"acc": [1, 0, 1, 1], "black": [0, 0, 1, 0]})
    r, p, a = res["rotation"], res["patchfit"], res["all"]
    assert (r["n"], r["acc"], r["black"]) == (2, 0.5, 0.0)
    assert r["acc_se"] == pytest.approx(math.sqrt(0.25 / 2)) and r["black_se"] == 0.0
    # differences 1, 0: mean 0.5, sd sqrt(0.5) (n - 1 = 1), s.e. sqrt(0.5) / sqrt(2) = 0.5
    assert r["acc_minus_black"] == 0.5 and r["acc_minus_black_se"] == pytest.approx(0.5)
    assert (p["acc"], p["black"], p["acc_minus_black"]) == (1.0, 0.5, 0.5)
    # all four: differences 1, 0, 0, 1: mean 0.5, sd sqrt(1/3), s.e. sqrt(1/3) / 2
    assert (a["n"], a["acc"], a["black"]) == (4, 0.75, 0.25)
    assert a["acc_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert a["acc_minus_black_se"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert paired([1, 1, 1], [1, 1, 1]) == (0.0, 0.0)


def test_command_on_the_shipped_warm_start(tmp_path):
    out = tmp_path / "res.json"
    res = main(["--model", "steprl:tiny_vl_puzzles", "--source", "scene", "--puzzles", "rotation", "patchfit",
                "--num-val", "6", "--black", "--other-image", "--against-model", "steprl:tiny_vl_puzzles", "--out", str(out)])
    assert res["all"]["n"] == 6 and set(res) >= {"all"} and set(res) - {"all"} <= {"rotation", "patchfit"}
    # the same model on the same puzzles: the paired difference is exactly 0 on every puzzle
    assert res["all"]["acc_minus_against"] == 0.0 and res["all"]["acc"] == res["all"]["against"]
    saved = json.loads(out.read_text())
    assert saved["per_puzzle"]["acc"] == saved["per_puzzle"]["against"] and len(saved["per_puzzle"]["black"]) == 6
    assert len(saved["per_puzzle"]["other_image"]) == 6 and "acc_minus_other_image" in res["all"]


def test_other_image_shows_the_next_puzzles_image():
    from steprl.models.vision import load_processor
    from steprl.models import load_model
    from steprl.tasks.puzzle_eval import responses
    from steprl.tasks.puzzles import PuzzleTask

    task = PuzzleTask(puzzles=["rotation"], source="scene", num_val=3, num_train=0)
    qs = [task.sample("val", i) for i in range(3)]
    model, tok = load_model(path="steprl:tiny_vl_puzzles")
    proc = load_processor(path="steprl:tiny_vl_puzzles")
    moved = responses(model, tok, proc, qs, other_image=True, max_new_tokens=72)
    # the prompt of 0 with the image of 1 etc.: the same as decoding those pairs directly
    pairs = [type(q)(prompt=q.prompt, answer=q.answer, meta=q.meta, images=qs[(i + 1) % 3].images)
             for i, q in enumerate(qs)]
    assert moved == responses(model, tok, proc, pairs, max_new_tokens=72)
