"""``read_jsonl_rows``: the one JSON-lines reader of task files, predictions files and search corpora."""
from __future__ import annotations

import gzip

import pytest

from steprl.tasks.base import parse_json_object, read_jsonl_rows


def test_rows_with_their_locations(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"a": 1}\n\n   \n{"b": [2]}\n', encoding="utf-8")
    assert read_jsonl_rows(p) == [(f"{p}:1", {"a": 1}), (f"{p}:4", {"b": [2]})]  # blank lines skipped
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"c": "\xc3\xa9"}\n'))
    assert read_jsonl_rows(gz) == [(f"{gz}:1", {"c": "é"})]


@pytest.mark.parametrize("text,message", [
    ('{"a": 1}\n{"a": 2\n', r"bad.jsonl:2: line is not valid JSON \(Expecting"),  # bad JSON: file and line
    ('{"a": 1}\n\n[1, 2]\n', r"bad.jsonl:3: line must be a JSON object, got list"),
    ('"just a string"\n', r"bad.jsonl:1: line must be a JSON object, got str"),
    ("", r"bad.jsonl: no rows \(the file is empty\)"),
    ("\n  \n", r"bad.jsonl: no rows"),
])
def test_errors_name_the_file_and_line(tmp_path, text, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_jsonl_rows(p)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file .*nope.jsonl does not exist"):
        read_jsonl_rows(tmp_path / "nope.jsonl", "predictions file")
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    with pytest.raises(ValueError, match="latin1.jsonl:2: not valid UTF-8"):
        read_jsonl_rows(p)
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="x.jsonl.gz: cannot read file"):
        read_jsonl_rows(gz)


def test_parse_json_object_names_the_place():
    assert parse_json_object('{"inputs": []}', "t.jsonl:3", "`input_output`") == {"inputs": []}
    with pytest.raises(ValueError, match=r"t.jsonl:3: `input_output` is not valid JSON \(Expecting"):
        parse_json_object("{oops", "t.jsonl:3", "`input_output`")
    with pytest.raises(ValueError, match="t.jsonl:3: `input_output` must be a JSON object, got list"):
        parse_json_object("[1]", "t.jsonl:3", "`input_output`")
