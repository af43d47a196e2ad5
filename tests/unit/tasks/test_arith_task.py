"""ArithTask: formats, determinism, held-out split, verifier and the ground-truth step checker."""
from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.rollout.types import Sample
from steprl.tasks import ArithTask, evaluate_expression, is_valid_reduction, reduce_once, worked_solution


def sample_for(expr: str) -> Sample:
    return Sample(prompt=f"{expr}=\n", answer=str(evaluate_expression(expr)), meta={"expression": expr})


# ----- helpers ------------------------------------------------------------------------------------------------
def test_exact_formats():
    assert worked_solution("3+5*2") == "3+5*2=3+10\n3+10=13\n#### 13"
    assert worked_solution("2-5+1") == "2-5+1=-3+1\n-3+1=-2\n#### -2"
    assert worked_solution("7") == "#### 7"
    assert worked_solution("2*3*4-1") == "2*3*4-1=6*4-1\n6*4-1=24-1\n24-1=23\n#### 23"
    assert reduce_once("3+5*2") == "3+10"
    assert reduce_once("-3+1") == "-2"
    assert reduce_once("-3*2") == "-6"
    assert evaluate_expression("2-5+1") == -2
    assert evaluate_expression("10-2*3*4+1") == -13
    with pytest.raises(ValueError):
        reduce_once("5")
    for bad in ["", "3+", "+3", "3+-2", "(3+2)", "3/2", "3 ++ 2", "١+2"]:
        with pytest.raises(ValueError):
            evaluate_expression(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=7),
    st.lists(st.sampled_from("+-*"), min_size=6, max_size=6),
)
def test_reduce_once_matches_python(nums, ops):
    expr = str(nums[0]) + "".join(o + str(n) for o, n in zip(ops, nums[1:]))
    value = eval(expr)  # noqa: S307 - digits and +-* only
    assert evaluate_expression(expr) == value
    cur = expr
    for _ in range(len(nums) - 1):
        nxt = reduce_once(cur)
        assert evaluate_expression(nxt) == value
        assert sum(nxt[1:].count(c) for c in "+-*") == sum(cur[1:].count(c) for c in "+-*") - 1
        assert is_valid_reduction(cur, nxt)
        cur = nxt
    assert cur == str(value)


def test_is_valid_reduction_cases():
    assert is_valid_reduction("3+5*2", "3+10")
    assert is_valid_reduction("2+3+4", "2+7")  # non-canonical but value-preserving reduction
    assert is_valid_reduction("10-2*3*4", "10-2*12")  # associativity of *
    assert not is_valid_reduction("3+5*2", "8*2")  # breaks precedence
    assert not is_valid_reduction("2-3+4", "2-7")  # breaks left-to-right
    assert not is_valid_reduction("3+5*2", "11+2")  # same value, not a reduction
    assert not is_valid_reduction("3+5*2", "13")  # two reductions at once
    assert not is_valid_reduction("3+5", "9")
    assert not is_valid_reduction("1*1*1*1", "1*1*1*1")
    assert is_valid_reduction("1*1*1*1", "1*1*1")
    assert not is_valid_reduction("garbage", "1")


# ----- construction / datasets ----------------------------------------------------------------------------------
def test_sample_fields():
    t = ArithTask(operators="+-*", num_terms=[2, 4], num_train=50, num_val=20, seed=3)
    s = t.train_dataset()[7]
    expr = s.meta["expression"]
    assert s.prompt == f"{expr}=\n"
    assert s.solution == worked_solution(expr)
    assert s.answer == str(evaluate_expression(expr))
    assert s.source == "arith" and s.uid == "arith-3-train-7"
    assert len(t.train_dataset()) == 50 and len(t.val_dataset()) == 20
    assert t.train_dataset()[-1] == t.train_dataset()[49]
    with pytest.raises(IndexError):
        t.train_dataset()[50]
    assert list(t.val_dataset())[-1] == t.val_dataset()[19]  # iteration protocol stops


def test_knob_ranges():
    t = ArithTask(min_operand=10, max_operand=99, num_terms=[2, 5], operators="*", num_val=50, num_train=500)
    for s in list(t.train_dataset()) + list(t.val_dataset()):
        toks = s.meta["expression"].split("*")
        assert 2 <= len(toks) <= 5 and all(10 <= int(x) <= 99 for x in toks)


def test_determinism_and_seed():
    a = ArithTask(seed=1, num_val=30, num_train=100)
    b = ArithTask(seed=1, num_val=30, num_train=100)
    c = ArithTask(seed=2, num_val=30, num_train=100)
    assert list(a.train_dataset()) == list(b.train_dataset())
    assert list(a.val_dataset()) == list(b.val_dataset())
    assert [s.prompt for s in a.train_dataset()] != [s.prompt for s in c.train_dataset()]
    # random access order does not matter, and pickled tasks generate the same items
    ds = a.train_dataset()
    assert ds[99] == list(ds)[99]
    a2 = pickle.loads(pickle.dumps(a))
    assert list(a2.train_dataset()) == list(a.train_dataset())
    assert len(pickle.dumps(a)) < 2000


def test_identical_across_processes():
    code = (
        "from steprl.tasks import ArithTask; t = ArithTask(seed=5, num_val=16, operators='+-*');"
        "print(([t.train_dataset()[i].prompt for i in (0, 12345, 99999)], [s.prompt for s in t.val_dataset()]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    t = ArithTask(seed=5, num_val=16, operators="+-*")
    here = str(([t.train_dataset()[i].prompt for i in (0, 12345, 99999)], [s.prompt for s in t.val_dataset()]))
    assert out.strip() == here


def test_val_train_disjoint_large_and_small_spaces():
    t = ArithTask(num_val=256, num_train=5000, seed=0)
    val = [s.meta["expression"] for s in t.val_dataset()]
    assert len(set(val)) == 256
    assert not set(val) & {s.meta["expression"] for s in t.train_dataset()}
    # tiny space: 3 operands ** 2 terms * 2 ops = 18 problems, 10 held out, train must use the other 8
    t = ArithTask(min_operand=0, max_operand=2, num_terms=2, operators="+-", num_val=10, num_train=400)
    val = {s.meta["expression"] for s in t.val_dataset()}
    train = {s.meta["expression"] for s in t.train_dataset()}
    assert len(val) == 10 and not val & train and len(train) == 8
    # exactly fills the space
    t = ArithTask(min_operand=0, max_operand=2, num_terms=2, operators="+-", num_val=18, num_train=0)
    assert len({s.meta["expression"] for s in t.val_dataset()}) == 18


def test_bad_knobs():
    with pytest.raises(ValueError, match="too small"):
        ArithTask(min_operand=0, max_operand=1, num_terms=2, operators="+", num_val=10)
    with pytest.raises(ValueError, match="training"):
        ArithTask(min_operand=0, max_operand=2, num_terms=2, operators="+-", num_val=18, num_train=5)
    with pytest.raises(ValueError, match="operators"):
        ArithTask(operators="+/")
    with pytest.raises(ValueError, match="operators"):
        ArithTask(operators="")
    with pytest.raises(ValueError, match="num_terms"):
        ArithTask(num_terms=[3, 2])
    with pytest.raises(ValueError, match="num_terms"):
        ArithTask(num_terms=0)
    with pytest.raises(ValueError, match="min_operand"):
        ArithTask(min_operand=-1)


# ----- verify / score_steps on generated solutions ---------------------------------------------------------------
@pytest.mark.parametrize("ops", ["+", "-", "*", "+-", "+*", "-*", "+-*"])
def test_every_generated_solution_is_perfect(ops):
    t = ArithTask(operators=ops, num_terms=[1, 6], max_operand=12, num_train=2000, num_val=64, seed=11)
    ds = t.train_dataset()
    for i in range(2000):
        s = ds[i]
        sol = s.solution
        assert t.verify(s, sol) == 1.0
        scores = t.score_steps(s, sol)
        assert scores == [1.0] * len(t.splitter.split(sol)) == [1.0] * (s.meta["num_terms"])
        assert t.extract_answer(sol) == s.answer
    for s in t.val_dataset():
        assert t.verify(s, s.solution) == 1.0 and set(t.score_steps(s, s.solution)) == {1.0}


def test_verify_variants():
    s = sample_for("2-5+1")
    t = ArithTask(num_val=4, num_train=4)
    assert t.verify(s, "#### -2") == 1.0
    assert t.verify(s, "junk\n#### 3\n#### -2  \n\n") == 1.0  # last #### wins
    assert t.verify(s, "#### -2<eos>") == 1.0
    assert t.verify(s, "####-2") == 1.0
    assert t.verify(s, "#### -2\n#### 3") == 0.0
    assert t.verify(s, "#### -2 and more") == 0.0
    assert t.verify(s, "#### 2") == 0.0
    assert t.verify(s, "-2") == 0.0
    assert t.verify(s, "#### --2") == 0.0
    assert t.extract_answer("x\n#### 007") == "7"
    assert t.extract_answer("nothing") is None
    # answer missing on the sample: falls back to the expression
    assert t.verify(Sample(prompt="3+5*2=\n"), "#### 13") == 1.0


@pytest.mark.parametrize(
    "response, expected",
    [
        # correct
        ("3+5*2=3+10\n3+10=13\n#### 13", [1, 1, 1]),
        # wrong arithmetic at step 0 (next step consistent with it, answer consistent with that)
        ("3+5*2=3+11\n3+11=14\n#### 14", [0, 1, 1]),
        # wrong arithmetic at step 1
        ("3+5*2=3+10\n3+10=12\n#### 12", [1, 0, 1]),
        # skipped reduction (two operations at once)
        ("3+5*2=13\n#### 13", [0, 1]),
        # wrong lhs at step 1 (not the previous rhs)
        ("3+5*2=3+10\n4+10=14\n#### 14", [1, 0, 1]),
        # wrong lhs at step 0 (not the prompt's expression)
        ("3+5*3=3+15\n3+15=18\n#### 18", [0, 1, 1]),
        # precedence violation
        ("3+5*2=8*2\n8*2=16\n#### 16", [0, 1, 1]),
        # correct steps, wrong final answer line
        ("3+5*2=3+10\n3+10=13\n#### 12", [1, 1, 0]),
        # premature answer line: value of the current expression is 13, so the answer itself is right
        ("3+5*2=3+10\n#### 13", [1, 1]),
        ("3+5*2=3+10\n#### 10", [1, 0]),
        # garbage step in the middle does not move the current expression
        ("3+5*2=3+10\nhmm\n3+10=13\n#### 13", [1, 0, 1, 1]),
        # anything after the answer line scores 0
        ("3+5*2=3+10\n3+10=13\n#### 13\n13=13", [1, 1, 1, 0]),
        # two '=' on a line, empty sides
        ("3+5*2=3+10=13\n=13\n3+5*2=\n#### 13", [0, 0, 0, 1]),
        ("", []),
    ],
)
def test_wrong_steps_score_zero_at_the_right_index(response, expected):
    t = ArithTask(num_val=4, num_train=4)
    s = sample_for("3+5*2")
    assert t.score_steps(s, response) == [float(x) for x in expected]


def test_negative_intermediate_steps():
    t = ArithTask(num_val=4, num_train=4)
    s = sample_for("2-5+1")
    assert t.score_steps(s, "2-5+1=-3+1\n-3+1=-2\n#### -2") == [1.0, 1.0, 1.0]
    assert t.score_steps(s, "2-5+1=3+1\n3+1=4\n#### 4") == [0.0, 1.0, 1.0]
    assert t.score_steps(s, "2-5+1=2-6\n2-6=-4\n#### -4") == [0.0, 1.0, 1.0]
    assert t.score_steps(s, " 2 - 5 + 1 = -3 + 1 \n-3+1=-2\n####  -2 ") == [1.0, 1.0, 1.0]


def test_prompt_only_fallback_and_pickled_scoring():
    t = pickle.loads(pickle.dumps(ArithTask(num_val=4, num_train=4)))
    s = Sample(prompt="3+5*2=\n", answer="13")  # no meta: expression read from the prompt
    assert t.score_steps(s, "3+5*2=3+10\n3+10=13\n#### 13") == [1.0, 1.0, 1.0]


def _garbage() -> list[str]:
    rng = random.Random(0)
    junk = [
        "",
        " ",
        "\n\n\n",
        "####",
        "#### ",
        "=",
        "==",
        "#### 9" * 1000,
        "9" * 50000,
        "#### " + "9" * 5000,
        "9" * 5000 + "*" + "9" * 5000 + "=1",
        "*".join(["9" * 39] * 200) + "=1",
        "1*" * 3000 + "1=1",
        "\x00\x01\x02\xff\ufffd",
        "".join(chr(rng.randrange(0, 0x10FFFF)) for _ in range(2000) if True).encode("utf-8", "replace").decode(
            "utf-8", "replace"
        ),
        "３+５=８\n#### ８",
        "\u2028#### 13\u2029",
        "🙂=🙂\n#### 🙂",
        "a\nb\n" * 50000,
        bytes(range(256)).decode("latin-1"),
    ]
    junk += ["".join(rng.choice("0123456789+-*=#\n -") for _ in range(rng.randint(0, 200))) for _ in range(300)]
    return junk


def test_garbage_never_raises():
    t = ArithTask(num_val=4, num_train=4, operators="+-*")
    s = t.val_dataset()[0]
    for g in _garbage():
        g = g.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        v = t.verify(s, g)
        assert v in (0.0, 1.0)
        scores = t.score_steps(s, g)
        assert len(scores) == len(t.splitter.split(g)) and all(x in (0.0, 1.0) for x in scores)
        t.extract_answer(g)
    assert t.verify(s, None) == 0.0  # type: ignore[arg-type]
    assert t.verify(s, b"#### 1") == 0.0  # type: ignore[arg-type]
