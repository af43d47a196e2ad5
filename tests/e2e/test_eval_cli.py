"""The per-slice evaluation commands as a user runs them: ``python -m steprl.tasks.arith_eval`` and
``python -m steprl.tasks.search_eval`` print their table and write the per-slice JSON, with each accuracy's
standard error sqrt(p (1 - p) / n)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def run(module: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_arith_eval_per_length(tmp_path):
    out = tmp_path / "arith.json"
    table = run("steprl.tasks.arith_eval", "--model", "steprl:tiny_arith_long", "--num-terms", "2", "3",
                "--num-val", "8", "--max-new-tokens", "64", "--out", str(out))
    res = json.loads(out.read_text())
    assert sum(r["n"] for r in res.values()) == 8 and set(res) <= {"2", "3"}
    for r in res.values():
        assert r["final_se"] == pytest.approx(math.sqrt(r["final"] * (1 - r["final"]) / r["n"]))
    assert table.splitlines()[0].startswith("| terms |") and table.splitlines()[-1].startswith("| all | 8 |")


def test_search_eval_per_hops(tmp_path):
    out = tmp_path / "search.json"
    table = run("steprl.tasks.search_eval", "--model", "steprl:tiny_search_qa", "--limit", "4", "--batch-size", "4",
                "--out", str(out))
    res = json.loads(out.read_text())
    assert sum(r["n"] for r in res.values()) == 4
    for r in res.values():
        assert r["acc_se"] == pytest.approx(math.sqrt(r["acc"] * (1 - r["acc"]) / r["n"]))
        assert 0.0 <= r["answered"] <= 1.0
    assert table.splitlines()[0].startswith("| hops |") and table.splitlines()[-1].startswith("| all | 4 |")


def eval_cli(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """``python src/eval.py`` as a user runs it (no MLflow, verifiers inline, output under ``tmp_path``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(ROOT / "src" / "eval.py"), *overrides, "mlflow.enabled=false",
                           "reward=inline", "torch_threads=1", f"hydra.run.dir={tmp_path}"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def run_eval(tmp_path, *overrides: str) -> tuple[float, list[dict]]:
    """The printed accuracy and the saved predictions of a successful ``python src/eval.py``."""
    proc = eval_cli(tmp_path, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    return float(proc.stdout.strip().splitlines()[-1].split("=")[1]), rows


def test_eval_rolls_out_a_search_agent_through_its_tool(tmp_path):
    """src/eval.py on a tool-using task runs the multi-turn AgentLoop, as training and validation do: every greedy
    episode holds the search tool's documents, and the warm start gets the 12 of the first 16 held-out questions
    right that its training-time validation gets (test_warm_start.py). Without the loop it answered none."""
    acc, rows = run_eval(tmp_path, "model=tiny_search_qa", "task=search_qa_tiny", "eval.limit=16", "eval.n=2",
                         "eval.k=[1,2]")
    assert len(rows) == 16 and all("<information>" in r["response"] for r in rows)
    assert all("<information>" in t for r in rows for t in r["responses"])
    assert acc == 12 / 16


def test_eval_shows_a_vision_model_the_puzzle_images(tmp_path):
    """src/eval.py on task=puzzles passes each puzzle's image through the model's image processor: the puzzle warm
    start reads Rotation over scenes at ~0.6 (docs/vision.md; 0.22 shown another puzzle's image). Without the
    images it answered none of them."""
    acc, rows = run_eval(tmp_path, "model=tiny_vl_puzzles", "task=puzzles", "task.puzzles=[rotation]",
                         "task.source=scene", "task.num_val=64", "rollout.max_new_tokens=68")
    assert len(rows) == 64 and acc >= 0.45


def test_eval_of_a_text_model_on_image_puzzles_says_so(tmp_path):
    proc = eval_cli(tmp_path, "model=tiny_arith", "task=puzzles", "task.num_val=4")
    assert proc.returncode != 0
    assert "task 'puzzles' shows images but the model has no image processor" in proc.stderr
