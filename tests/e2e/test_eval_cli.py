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
