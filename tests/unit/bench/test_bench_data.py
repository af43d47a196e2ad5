"""The raw data of a bench run the docs report lives next to the bench script that makes it, and the script
reads it back: PRIME's sample-efficiency run (bench/sample_efficiency.py). (The league's and the claims' kept runs
have their own tests: test_league.py, test_claims.py.)"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_efficiency_redraws_the_kept_run(tmp_path, capsys):
    se = _load("sample_efficiency")
    assert se.KEPT.is_file()
    se.main(["--from-results", "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0
    doc = (ROOT / "docs" / "prime_oreal.md").read_text()
    nums = lambda md: {r.split("|")[1].strip(): [float(x) for x in re.findall(r"\d\.\d{3}", r)]  # noqa: E731
                       for r in md.splitlines() if re.match(r"\| \d+ \|", r)}
    mine, page = nums(table), nums(doc)
    # the page's table is this one (means and stds agree to the printed digits, up to the rounding of a half)
    assert sorted(mine, key=int) == sorted(page, key=int) and len(mine) == 6
    assert all(mine[k] == pytest.approx(page[k], abs=1.01e-3) for k in mine)
