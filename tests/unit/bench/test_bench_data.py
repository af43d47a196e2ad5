"""The raw data of the bench runs the docs report lives next to the bench script that makes it, and the script
reads it back: the league's per-step CSV (bench/league_table.py) and PRIME's sample-efficiency run
(bench/sample_efficiency.py)."""
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


def _rows(md: str) -> dict[str, list[str]]:
    out = {}
    for line in md.splitlines():
        m = re.match(r"\| `(\w+)`[^|]*((?:\|[^|]*){5})", line)
        if m:
            out[m.group(1)] = [c.strip() for c in m.group(2).split("|")[1:]]
    return out


def test_league_table_reads_its_kept_csv_by_default(tmp_path, capsys):
    lt = _load("league_table")
    assert lt.RUNS_CSV == ROOT / "bench" / "league_runs.csv" and lt.RUNS_CSV.is_file()
    lt.main(["--from-csv", "--table", str(tmp_path / "t.md")])
    table = (tmp_path / "t.md").read_text()
    league = (ROOT / "docs" / "league.md").read_text().split("## Reduced scale", 1)[1]   # the full league is above
    # the docs' league table is the one the kept data makes: algorithm, final val/acc, gain, seeds and steps of
    # every row agree (the page adds footnote marks, brackets the times of later runs and gives PROPA's tree
    # search no rollout count)
    mine, page = _rows(table), _rows(league)
    assert len(mine) == 15 and {k: v[:4] for k, v in mine.items()} == {k: page[k][:4] for k in mine}


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
