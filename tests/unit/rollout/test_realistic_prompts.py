"""The realistic benchmark's prompts (``bench/vs_trl.py --configs realistic``): GSM8K test problems of 50-300
prompt tokens read from the repository's ``../shared/data``, and a clear stop when that file is missing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))
import vs_trl  # noqa: E402

from steprl.models.tokenizer import build_byte_tokenizer  # noqa: E402
from steprl.tasks.math import GSM8K_PROMPT, GSM8KTask  # noqa: E402

DATA = vs_trl.ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"


@pytest.mark.skipif(not DATA.is_file(), reason="needs ../shared/data/gsm8k_test.jsonl")
def test_prompts_are_gsm8k_rows_of_50_to_300_tokens(tmp_path):
    path = vs_trl.realistic_data(4, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    source = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    assert len(rows) == 4 and all(r in source for r in rows)  # raw rows of the test file
    tok = build_byte_tokenizer()
    # the byte tokenizer: one token per UTF-8 byte of the templated prompt
    lengths = [len(GSM8K_PROMPT.format(question=r["question"]).encode()) for r in rows]
    assert all(50 <= n <= 300 for n in lengths) and lengths == sorted(lengths)
    task = GSM8KTask(path=str(path), val_path=str(path))
    assert [len(tok(s.prompt, add_special_tokens=False)["input_ids"]) for s in task.train_dataset()] == lengths


def test_missing_data_stops_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(vs_trl, "ROOT", tmp_path / "repo")
    with pytest.raises(SystemExit, match=r"shared/data/gsm8k_test\.jsonl.*missing"):
        vs_trl.realistic_data(4, tmp_path)
