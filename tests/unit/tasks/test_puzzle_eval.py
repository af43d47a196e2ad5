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
                "--num-val", "6", "--black", "--against-model", "steprl:tiny_vl_puzzles", "--out", str(out)])
    assert res["all"]["n"] == 6 and set(res) >= {"all"} and set(res) - {"all"} <= {"rotation", "patchfit"}
    # the same model on the same puzzles: the paired difference is exactly 0 on every puzzle
    assert res["all"]["acc_minus_against"] == 0.0 and res["all"]["acc"] == res["all"]["against"]
    saved = json.loads(out.read_text())
    assert saved["per_puzzle"]["acc"] == saved["per_puzzle"]["against"] and len(saved["per_puzzle"]["black"]) == 6
