"""StepSplitter spans and the Task base-class guarantees."""
from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.rollout.types import Sample
from steprl.tasks import StepSplitter, Task, make_splitter


def texts(splitter: StepSplitter, text: str) -> list[str]:
    return [text[s:e] for s, e in splitter.split(text)]


def test_newline_spans_exact():
    t = "3+5*2=3+10\n3+10=13\n#### 13"
    assert StepSplitter("newline").split(t) == [(0, 10), (11, 18), (19, 26)]
    assert texts(StepSplitter("newline"), t) == ["3+5*2=3+10", "3+10=13", "#### 13"]


def test_newline_skips_blank_lines_and_trims():
    t = "\n\n  a b  \n\t\n c\r\n\nd"
    assert texts(StepSplitter("newline"), t) == ["a b", "c", "d"]
    assert StepSplitter("newline").split(t)[0] == (4, 7)


def test_double_newline_paragraphs():
    t = "Step one.\nstill one.\n\nStep two.\n \t\n\n\nStep three.\n"
    assert texts(StepSplitter("double_newline"), t) == ["Step one.\nstill one.", "Step two.", "Step three."]


def test_regex_separator_ends_step_and_lookahead_starts_step():
    t = "a ки b ки c"
    assert texts(StepSplitter("regex", r" ки"), t) == ["a ки", "b ки", "c"]
    t2 = "Intro. Step 1: x=1. Step 2: y=2."
    assert texts(StepSplitter("regex", r"(?=Step \d+:)"), t2) == ["Intro.", "Step 1: x=1.", "Step 2: y=2."]


def test_empty_and_whitespace_only():
    for kind in ("newline", "double_newline"):
        assert StepSplitter(kind).split("") == []
        assert StepSplitter(kind).split(" \n\n\t \n") == []
    assert StepSplitter("regex", r";").split(";;") == [(0, 1), (1, 2)]


def test_tile_covers_whole_text():
    t = "  a\n\nb\n c \n"
    spans = StepSplitter("newline").split(t, tile=True)
    assert spans[0][0] == 0 and spans[-1][1] == len(t)
    assert all(spans[k][1] == spans[k + 1][0] for k in range(len(spans) - 1))
    assert [t[s:e].strip() for s, e in spans] == ["a", "b", "c"]


def test_bad_kind_and_pattern_errors():
    with pytest.raises(ValueError, match="newline.*double_newline.*regex"):
        StepSplitter("sentences")
    with pytest.raises(ValueError, match="pattern"):
        StepSplitter("regex")
    with pytest.raises(ValueError, match="invalid regex"):
        StepSplitter("regex", "(")
    with pytest.raises(ValueError):
        StepSplitter("newline", pattern="x")


def test_make_splitter_and_pickle():
    assert make_splitter("double_newline") == StepSplitter("double_newline")
    assert make_splitter({"kind": "regex", "pattern": ";"}) == StepSplitter("regex", ";")
    sp = StepSplitter("regex", r"\n(?=\d)")
    sp2 = pickle.loads(pickle.dumps(sp))
    assert sp2 == sp and sp2.split("1\n2\nx") == sp.split("1\n2\nx")


_alphabet = st.sampled_from(list("ab ;\n\t\r\u00a0\u2028xyzé1=#"))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=_alphabet, max_size=60), st.sampled_from(["newline", "double_newline", "regex"]))
def test_spans_property(text, kind):
    sp = StepSplitter(kind, r";|(?=#)" if kind == "regex" else None)
    spans = sp.split(text)
    prev_end = 0
    for s, e in spans:
        assert prev_end <= s < e <= len(text)
        assert not text[s].isspace() and not text[e - 1].isspace()
        prev_end = e
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())
    tiled = sp.split(text, tile=True)
    assert len(tiled) == len(spans)
    if tiled:
        assert tiled[0][0] == 0 and tiled[-1][1] == len(text)
        assert all(tiled[k][1] == tiled[k + 1][0] for k in range(len(tiled) - 1))


class _Broken(Task):
    has_step_checker = True

    def _verify(self, sample, response):
        raise RuntimeError("boom")

    def _score_steps(self, sample, response):
        raise RuntimeError("boom")

    def _extract_answer(self, response):
        raise RuntimeError("boom")


class _OutOfRange(Task):
    has_step_checker = True

    def _verify(self, sample, response):
        return float("nan") if response == "nan" else 7.0

    def _score_steps(self, sample, response):
        return [-1.0]  # wrong length and out of range


def test_base_wrappers_never_raise_and_clamp():
    s = Sample(prompt="p")
    b = _Broken(name="b")
    assert b.verify(s, "x") == 0.0
    assert b.score_steps(s, "a\nb\nc") == [0.0, 0.0, 0.0]
    assert b.extract_answer("x") is None
    assert b.verify(s, None) == 0.0  # type: ignore[arg-type]
    o = _OutOfRange()
    assert o.verify(s, "x") == 1.0 and o.verify(s, "nan") == 0.0
    assert o.score_steps(s, "a\nb") == [0.0, 0.0]
    assert Task().score_steps(s, "a") is None
    with pytest.raises(NotImplementedError):
        Task().verify(s, "a")


class _SympyLike(Task):
    has_step_checker = True

    def _verify(self, sample, response):
        raise NotImplementedError("sympy can't do this")  # raised *inside* a checker: still swallowed

    def _score_steps(self, sample, response):
        raise NotImplementedError("nor this")


def test_not_implemented_inside_checker_is_swallowed():
    t = _SympyLike()
    assert t.verify(Sample(prompt="p"), "x") == 0.0
    assert t.score_steps(Sample(prompt="p"), "x\ny") == [0.0, 0.0]
