"""Evaluation bookkeeping: metrics per data source by hand, predictions files and their errors."""
from __future__ import annotations


import pytest

from steprl.eval import ProblemResult, compute_metrics, headline, load_predictions


def test_compute_metrics_by_hand():
    results = [
        ProblemResult("p1", "a", "x", True, ["1", "2", "1"], [1, 0, 1], [True, False, True], ["1", "2", "1"]),
        ProblemResult("p2", "a", "y", False, ["3", "3", "4"], [0, 0, 1], [False, False, True], ["3", "3", "4"]),
        ProblemResult("p3", "b", "z", False, ["5", None, "5"], [0, 0, 0], [False, False, False], ["5", None, "5"]),
    ]
    m = compute_metrics(results, ks=[1, 2, 3, 5])
    assert set(m) == {"all", "a", "b"}
    a = m["a"]
    assert a["problems"] == 2 and a["samples"] == 3 and a["greedy"] == 0.5
    assert a["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert a["pass@2"] == pytest.approx(((1 - 0 / 3) + (1 - 1 / 3)) / 2)  # p1: C(1,2)=0; p2: 1 - C(2,2)/C(3,2)
    assert a["pass@3"] == 1.0
    assert a["maj@3"] == 0.5           # p1 votes "1" (correct), p2 votes "3" (wrong)
    assert a["maj@1"] == 0.5
    assert a["mean@3"] == pytest.approx(0.5)
    assert "pass@5" not in a           # k > n is skipped
    assert m["b"]["pass@3"] == 0.0 and m["b"]["maj@3"] == 0.0
    # pass@k over the problems greedy got wrong: source a's p2 only (1 right of 3), source b's p3 (0 of 3)
    assert a["miss_pass@1"] == pytest.approx(1 / 3) and a["miss_pass@2"] == pytest.approx(2 / 3)
    assert m["b"]["miss_pass@2"] == 0.0
    assert m["all"]["miss_pass@2"] == pytest.approx((2 / 3 + 0) / 2)   # p2 and p3; p1 (greedy right) left out
    assert "miss_pass@5" not in a
    assert m["all"]["greedy"] == pytest.approx(1 / 3)
    assert headline(m) == pytest.approx(1 / 3)
    only_samples = compute_metrics([ProblemResult("q", "s", responses=["a"] * 4, correct=[True, False, False, True],
                                                  answers=[None] * 4)], ks=[2])
    assert "maj@2" not in only_samples["all"] and headline(only_samples) == 0.5  # mean@n without a greedy pass
    assert not any(k.startswith("miss_pass") for k in only_samples["all"])   # no greedy pass: no misses to read


def test_load_predictions(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"response": "a"}\n\n{"responses": ["b", null]}\n{"response": null}\n')
    assert load_predictions(p, 3) == [["a"], ["b", ""], [""]]
    with pytest.raises(ValueError, match="3 predictions for 4 problems"):
        load_predictions(p, 4)
    bad = {"not valid JSON": "{oops\n", "no `response` field": '{"text": "a"}\n',
           "must be a string": '{"response": 3}\n', "JSON object": '["a"]\n'}
    for msg, text in bad.items():
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            load_predictions(p, 1)
    with pytest.raises(FileNotFoundError):
        load_predictions(tmp_path / "nope.jsonl", 1)
