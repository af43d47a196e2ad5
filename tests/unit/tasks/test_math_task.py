"""MathTask / GSM8KTask: loaders, held-out split, errors, and math-verify grading on the shared benchmark files."""
from __future__ import annotations

import gzip
import json
import pickle
import random
import re
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from steprl.rollout.types import Sample
from steprl.tasks import GSM8KTask, MathTask, extract_math_answer, grade_answer

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
FILES = ["math500_test.jsonl", "gsm8k_test.jsonl", "aime24_test.jsonl", "amc23_test.jsonl"]


def need_data(name: str) -> Path:
    p = DATA / name
    if not p.exists():
        pytest.skip(f"shared benchmark data not found at {p} (expected <repo>/../shared/data)")
    return p


def write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def all_samples(task: MathTask) -> list[Sample]:
    return list(task.train_dataset()) + list(task.val_dataset())


def wrong_answers(answer: str) -> list[str]:
    out = ["123456789"]
    if re.fullmatch(r"-?\d+(\.\d+)?", answer.replace(",", "")):
        out.append(str(float(answer.replace(",", "")) + 1).removesuffix(".0"))
    return out


# ----- grading on every shared benchmark file ------------------------------------------------------------------
@pytest.mark.parametrize("fname, cls, n_rows", [
    ("math500_test.jsonl", MathTask, 500),
    ("gsm8k_test.jsonl", GSM8KTask, 1319),
    ("aime24_test.jsonl", MathTask, 30),
    ("amc23_test.jsonl", MathTask, 40),
])
def test_reference_answers_grade_correct_and_wrong_ones_do_not(fname, cls, n_rows):
    task = cls(path=need_data(fname))
    samples = all_samples(task)
    assert len(samples) == n_rows
    assert len({s.uid for s in samples}) == n_rows
    if n_rows > 200:  # a seeded sample of the big files keeps this test fast
        samples = random.Random(0).sample(samples, 150)
    for s in samples:
        assert s.answer, s.uid
        right = f"Some reasoning.\n\nSo the final answer is $\\boxed{{{s.answer}}}$."
        assert task.verify(s, right) == 1.0, (s.uid, s.answer)
        for w in wrong_answers(s.answer):
            assert task.verify(s, f"Reasoning... \\boxed{{{w}}}") == 0.0, (s.uid, s.answer, w)
        assert task.score_steps(s, right) is None
    if cls is GSM8KTask:  # GSM8K-style "#### x" answers and the solutions themselves
        for s in samples[:50]:
            assert task.verify(s, f"blah\n#### {s.answer}") == 1.0
            assert task.verify(s, s.solution) == 1.0
            assert "<<" not in s.solution and s.solution.endswith(f"#### {s.answer}")


def test_math500_solutions_self_grade():
    task = MathTask(path=need_data("math500_test.jsonl"))
    for s in all_samples(task)[:60]:
        assert task.verify(s, s.solution) == 1.0, s.uid


def test_shared_formats_parsed():
    m = MathTask(path=need_data("math500_test.jsonl"))
    s = next(s for s in all_samples(m) if s.uid == "math-test/precalculus/807.json")
    assert s.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert s.prompt.startswith("Convert the point $(0,3)$")
    assert s.prompt.endswith("Please reason step by step, and put your final answer within \\boxed{}.\n")
    assert s.meta["subject"] == "Precalculus" and s.meta["level"] == 2
    g = GSM8KTask(path=need_data("gsm8k_test.jsonl"))
    s = next(s for s in all_samples(g) if s.meta["row"] == 0)
    assert s.answer == "18"
    assert s.solution == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer’s market.\n#### 18"
    )
    assert s.prompt.endswith('output the final answer after "####".\n')
    a = MathTask(path=need_data("amc23_test.jsonl"))
    assert {s.answer for s in all_samples(a)} >= {"27", "3159", "-1"}
    aime = MathTask(path=need_data("aime24_test.jsonl"))
    s = next(s for s in all_samples(aime) if s.answer == "025")
    assert aime.verify(s, "\\boxed{25}") == 1.0


# ----- held-out split -----------------------------------------------------------------------------------------
def _rows(n: int) -> list[dict]:
    return [{"problem": f"What is {i}+1?", "answer": str(i + 1)} for i in range(n)]


def test_holdout_deterministic_and_disjoint(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", _rows(100))
    a, b, c = MathTask(path=p, seed=0), MathTask(path=p, seed=0), MathTask(path=p, seed=1)
    assert len(a.val_dataset()) == 10 and len(a.train_dataset()) == 90  # min(200, 10%)
    assert [s.uid for s in a.val_dataset()] == [s.uid for s in b.val_dataset()]
    assert [s.uid for s in a.val_dataset()] != [s.uid for s in c.val_dataset()]
    assert not {s.uid for s in a.val_dataset()} & {s.uid for s in a.train_dataset()}
    assert len(MathTask(path=p, num_val=0).val_dataset()) == 0
    assert len(MathTask(path=p, num_val=7).val_dataset()) == 7
    big = write_jsonl(tmp_path / "big.jsonl", _rows(5000))
    assert len(MathTask(path=big).val_dataset()) == 200
    with pytest.raises(ValueError, match="num_val"):
        MathTask(path=p, num_val=100)


def test_val_path_and_eval_only(tmp_path):
    tr = write_jsonl(tmp_path / "tr.jsonl", _rows(20))
    va = write_jsonl(tmp_path / "va.jsonl", _rows(50))
    t = MathTask(path=tr, val_path=va)
    assert len(t.train_dataset()) == 20 and len(t.val_dataset()) == 50
    t = MathTask(path=tr, val_path=va, num_val=8, seed=3)
    assert len(t.val_dataset()) == 8
    assert [s.uid for s in t.val_dataset()] == [s.uid for s in MathTask(path=tr, val_path=va, num_val=8, seed=3).val_dataset()]
    ev = MathTask(val_path=va)
    assert len(ev.val_dataset()) == 50
    with pytest.raises(ValueError, match="evaluation-only"):
        ev.train_dataset()
    with pytest.raises(ValueError):
        MathTask()
    with pytest.raises(ValueError, match="not both"):
        MathTask(path=tr, hf_name="x/y")


# ----- file formats ---------------------------------------------------------------------------------------------
def test_jsonl_gz_json_and_parquet(tmp_path):
    rows = [
        {"question": "Q1", "answer": "Step.\n#### 1,000"},
        {"problem": "Q2", "solution": "So it is $\\boxed{\\frac{1}{2}}$."},  # MATH without an answer column
        {"query": "Q3", "final_answer": 3.0, "id": "x3", "nested": {"a": 1}},
    ]
    expect = ["1,000", "\\frac{1}{2}", "3"]
    paths = [write_jsonl(tmp_path / "a.jsonl", rows), write_jsonl(tmp_path / "a.jsonl.gz", rows, gz=True)]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    paths.append(tmp_path / "a.json")
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [{"problem": f"Q{i}", "answer": a} for i, a in enumerate(expect)]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "a.parquet")
    for p in paths + [tmp_path / "a.parquet"]:
        t = MathTask(path=p, num_val=0)
        got = list(t.train_dataset())
        assert [s.answer for s in got] == expect, p
        assert [t.verify(s, f"\\boxed{{{a}}}") for s, a in zip(got, ["1000", "0.5", "3"])] == [1.0] * 3
    s = list(MathTask(path=paths[0], num_val=0).train_dataset())
    assert s[0].solution == "Step.\n#### 1,000" and s[2].uid == "math-x3" and "nested" not in s[2].meta


def test_explicit_keys_and_template(tmp_path):
    p = write_jsonl(tmp_path / "k.jsonl", [{"instr": "Add {1,2}", "gold": "3", "answer": "wrong"}] * 3)
    t = MathTask(path=p, question_key="instr", answer_key="gold", num_val=0,
                 prompt_template="Q: {question}\nA:")
    s = t.train_dataset()[0]
    assert s.prompt == "Q: Add {1,2}\nA:" and s.answer == "3"
    with pytest.raises(ValueError, match="question"):
        MathTask(path=p, prompt_template="no field")
    with pytest.raises(ValueError, match="template"):
        MathTask(path=p, prompt_template="{question} \\boxed{}")


# ----- errors -------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "x.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        MathTask(path=missing)
    ok = write_jsonl(tmp_path / "ok.jsonl", _rows(20))
    with pytest.raises(FileNotFoundError, match="val.jsonl"):
        MathTask(path=ok, val_path=tmp_path / "val.jsonl")


def test_malformed_json_line(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [_rows(1)[0], "", '{"problem": "x", "answer": ', _rows(1)[0]])
    with pytest.raises(ValueError, match=re.escape(f"{p}:3")):
        MathTask(path=p)
    p2 = write_jsonl(tmp_path / "list.jsonl", [_rows(1)[0], "[1, 2]"])
    with pytest.raises(ValueError, match=re.escape(f"{p2}:2") + ".*JSON object"):
        MathTask(path=p2)
    p3 = tmp_path / "bin.jsonl"
    p3.write_bytes(json.dumps(_rows(1)[0]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=re.escape(f"{p3}:2")):
        MathTask(path=p3)
    p4 = tmp_path / "x.csv"
    p4.write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported"):
        MathTask(path=p4)
    p5 = tmp_path / "x.jsonl.gz"
    p5.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="x.jsonl.gz"):
        MathTask(path=p5)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        MathTask(path=empty)


def test_unrecognised_keys(tmp_path):
    p = write_jsonl(tmp_path / "keys.jsonl", _rows(3) + [{"task": "x", "result": "y"}])
    with pytest.raises(ValueError) as e:
        MathTask(path=p)
    msg = str(e.value)
    assert f"{p}:4" in msg and "question" in msg and "['result', 'task']" in msg
    p = write_jsonl(tmp_path / "noans.jsonl", [{"problem": "x", "solution": "no box here"}])
    with pytest.raises(ValueError, match=re.escape(f"{p}:1") + ".*answer.*keys found: \\['problem', 'solution'\\]"):
        MathTask(path=p)
    p = write_jsonl(tmp_path / "ek.jsonl", _rows(3))
    with pytest.raises(ValueError, match="answer"):
        MathTask(path=p, answer_key="gold")
    humaneval = DATA / "humaneval.jsonl.gz"
    if humaneval.exists():
        with pytest.raises(ValueError, match="humaneval.jsonl.gz:1.*canonical_solution"):
            MathTask(path=humaneval)


# ----- HF hub path (faked: no network in tests) -----------------------------------------------------------------
def test_hf_dataset_loaded_lazily(monkeypatch):
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        n = 30 if split == "train" else 5
        return [{"question": f"{split} q{i}", "answer": f"r\n#### {i}"} for i in range(n)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    t = GSM8KTask(hf_name="openai/gsm8k", hf_val_split="test")
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert len(t.train_dataset()) == 30 and len(t.val_dataset()) == 5
    assert t.val_dataset()[4].answer == "4"
    t = MathTask(hf_name="some/ds", hf_split="train")
    assert len(t.train_dataset()) == 27 and len(t.val_dataset()) == 3


# ----- grading details ------------------------------------------------------------------------------------------
def test_extraction():
    assert extract_math_answer("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert extract_math_answer("\\boxed{1}\n#### 2") == "2"  # the later one wins
    assert extract_math_answer("#### 2\nso \\boxed{3}") == "3"
    assert extract_math_answer("#### $1,000.\n") == "1,000"
    assert extract_math_answer("\\boxed 7") == "7"
    assert extract_math_answer("\\fbox{x^2}") == "x^2"
    assert extract_math_answer("\\boxed{\\text{a{b}c}}") == "\\text{a{b}c}"
    for none in ["", "no answer", "\\boxed{", "\\boxed{}", "####  ", "\\boxed"]:
        assert extract_math_answer(none) is None, none


def test_grade_answer_equivalences():
    assert grade_answer("0.5", "\\frac{1}{2}")
    assert grade_answer("\\dfrac12", "\\frac{1}{2}")
    assert grade_answer("1000", "1,000")
    assert grade_answer("25", "025")
    assert grade_answer("\\text{Evelyn}", "\\text{Evelyn}")
    assert not grade_answer("\\text{Bob}", "\\text{Evelyn}")
    assert not grade_answer("3", "-3")
    assert not grade_answer(None, "1") and not grade_answer("1", None)
    assert not grade_answer("x" * 5000, "1")


def _garbage() -> list[str]:
    rng = random.Random(1)
    return [
        "",
        "\\boxed{",
        "\\boxed{}}}}}",
        "}" * 1000 + "{" * 1000,
        "\\boxed{" + "{" * 5000,
        "\\boxed{" + "\\frac{" * 300 + "}" * 300 + "}",
        "\\boxed{" + "9" * 900 + "}",
        "\\boxed{" + "x^" * 400 + "x}",
        "\\boxed{\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}}",
        "\\boxed{\x00\x01\xff}",
        "\\boxed{🙂}",
        "#### " + "🙂" * 100,
        "\\boxed{1/0}",
        "\\boxed{\\infty - \\infty}",
        "\\boxed{x=}",
        "\\boxed{\\sqrt{}}",
        "$" * 3000,
        "\\boxed{" + "1" * 10 + "}" + "a" * 2_000_000,
        "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(3000)),
        "\\boxed{" + "".join(rng.choice("\\{}^_$()[]x1+-*/=,.") for _ in range(300)) + "}",
    ]


def test_garbage_never_raises_nor_hangs():
    task = MathTask(val_path=need_data("math500_test.jsonl"), num_val=1, timeout_s=1)
    samples = list(task.val_dataset()) + [Sample(prompt="p", answer=None), Sample(prompt="p", answer="\\boxed{")]
    for g in _garbage():
        for s in samples:
            t0, cpu0 = time.monotonic(), time.process_time()
            assert task.verify(s, g) in (0.0, 1.0)
            # math-verify's timeouts (1 s each) stop its work: bounded in CPU time, which a loaded machine does
            # not stretch (wall time did: 1.95 s for 0.47 s of CPU beside other jobs on 2 cores); a generous wall
            # bound still catches a call that blocks without working
            assert time.process_time() - cpu0 < 4.0, g[:80]
            assert time.monotonic() - t0 < 60.0, g[:80]
            assert task.score_steps(s, g) is None
        task.extract_answer(g)
    assert task.verify(samples[0], None) == 0.0  # type: ignore[arg-type]


def test_pickle_is_cheap_and_works(tmp_path):
    task = GSM8KTask(path=need_data("gsm8k_test.jsonl"))
    blob = pickle.dumps(task)
    assert len(blob) < 5000
    t2 = pickle.loads(blob)
    s = task.val_dataset()[0]
    assert t2.verify(s, f"#### {s.answer}") == 1.0
    assert [x.uid for x in t2.val_dataset()] == [x.uid for x in task.val_dataset()]


def test_grading_in_a_thread_and_outer_alarm_kept():
    task = MathTask(val_path=need_data("amc23_test.jsonl"))
    s = task.val_dataset()[0]
    results = []
    th = threading.Thread(target=lambda: results.append(
        (task.verify(s, f"\\boxed{{{s.answer}}}"), task.verify(s, "\\boxed{-7}"))))
    th.start()
    th.join(30)
    assert results == [(1.0, 0.0)]
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        fired = []
        old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
        try:
            signal.setitimer(signal.ITIMER_REAL, 100.0)
            assert task.verify(s, f"\\boxed{{{s.answer}}}") == 1.0
            remaining, _ = signal.getitimer(signal.ITIMER_REAL)
            assert 90.0 < remaining <= 100.0  # math-verify's alarm(0) would have cancelled it
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert not fired


# ----- percentages, grader timeouts counted, CPU-time (not wall-time) limit ------------------------------------
@pytest.mark.parametrize("pred, gold, same", [
    ("50\\%", "50", True), ("50 \\%", "50\\%", True), ("50", "50\\%", True), ("50%", "50", True),
    ("50\\,\\%", "50", True), ("50\\text{\\%}", "50", True), ("12.5\\%", "12.5", True), ("50 percent", "50", True),
    ("51\\%", "50", False), ("50\\%", "51\\%", False), ("0.5", "50\\%", False),
])
def test_a_percentage_grades_as_its_number(pred, gold, same):
    assert grade_answer(pred, gold) is same


_SLOW_PRED, _SLOW_GOLD = "\\sum_{n=1}^{\\infty} 1/n^2", "\\pi^2/6"  # ~1 s of sympy on this machine


def test_grading_past_its_cpu_limit_is_counted_in_reward_timeouts(tmp_path):
    from steprl.rewards import RewardPipeline
    from steprl.tasks.math import GradingTimeout
    from steprl.rewards.pool import reporting_timeouts

    assert grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=None) is True
    assert grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=0.05) is False  # called directly: graded 0, no raise
    with reporting_timeouts(), pytest.raises(GradingTimeout, match="CPU time"):
        grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=0.05)
    task = MathTask(path=write_jsonl(tmp_path / "t.jsonl", [{"problem": "p", "answer": _SLOW_GOLD},
                                                            {"problem": "q", "answer": "7"}]),
                    num_val=0, timeout_s=0.05)
    s1, s2 = sorted(task.train_dataset(), key=lambda s: s.answer)
    assert task.verify(s2, f"\\boxed{{{_SLOW_PRED}}}") == 0.0  # direct calls still never raise
    with RewardPipeline(task.verify, num_workers=0, timeout_s=60.0) as pipe:
        res = pipe([s2, s1], [f"\\boxed{{{_SLOW_PRED}}}", "\\boxed{7}"])
    assert res.timeouts == 1 and res.errors == 0 and res.outcome.tolist() == [0.0, 1.0]
    assert RewardPipeline.metrics(res)["reward/timeouts"] == 1.0


def test_grading_limit_is_cpu_time_so_load_does_not_change_the_verdict():
    """Five busy processes share this process's CPU: a comparison that costs c seconds of CPU takes ~6c of wall
    time, past a limit of 2c + 0.1 s, but its CPU time stays ~c, inside it. With a wall-clock limit (math-verify's
    signal.alarm) it was graded 0. The limit follows this machine's own c (measured unloaded first), so the test
    holds on a fast or a slow machine."""
    import os
    import subprocess

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs os.sched_setaffinity (Linux)")
    assert grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=None)  # warm the imports and caches
    c0 = time.process_time()
    assert grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=None)
    limit = 2 * (time.process_time() - c0) + 0.1
    saved = os.sched_getaffinity(0)
    cpu = min(saved)
    hogs = [subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
            for _ in range(5)]
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.2)
        t0, c0 = time.monotonic(), time.process_time()
        verdict = grade_answer(_SLOW_PRED, _SLOW_GOLD, timeout_s=limit)
        wall, cpu_s = time.monotonic() - t0, time.process_time() - c0
    finally:
        os.sched_setaffinity(0, saved)
        for h in hogs:
            h.kill()
            h.wait()
    assert wall > limit, f"the load did not slow grading past the {limit:.2f}s limit (wall {wall:.1f}s, cpu {cpu_s:.1f}s)"
    assert cpu_s < limit and verdict is True
