"""Hand-computed tests for steprl.core.steps."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steprl.core import (
    char_spans_to_step_ids,
    gather_step_values,
    place_on_step_ends,
    scatter_step_values,
    step_last_token_mask,
)

NAN = float("nan")


def test_scatter_step_values():
    vals = torch.tensor([[10.0, 20.0, NAN], [1.0, 2.0, 3.0]])
    ids = torch.tensor([[0, 0, 1, -1, 2], [2, 1, -1, 0, 5]])  # 5 >= S: no step
    out = scatter_step_values(vals, ids, fill=-7.0)
    assert out.tolist() == [[10.0, 10.0, 20.0, -7.0, -7.0], [3.0, 2.0, -7.0, 1.0, -7.0]]
    assert scatter_step_values(vals, ids).tolist()[0] == [10.0, 10.0, 20.0, 0.0, 0.0]


def test_scatter_with_no_steps():
    out = scatter_step_values(torch.zeros(2, 0), torch.full((2, 3), -1), fill=0.5)
    assert out.tolist() == [[0.5] * 3] * 2


def test_step_last_token_mask():
    ids = torch.tensor([[0, 0, 1, 1, -1], [0, -1, 0, 1, -1], [-1, -1, -1, -1, -1]])
    # row 1: step 0 is interrupted by a -1 token (tool observation) and ends at t=2
    assert step_last_token_mask(ids).tolist() == [
        [False, True, False, True, False],
        [False, False, True, True, False],
        [False] * 5,
    ]


def test_place_on_step_ends():
    vals = torch.tensor([[0.5, NAN], [1.0, 2.0]])
    ids = torch.tensor([[0, 0, 1, 1, -1], [0, -1, 0, 1, -1]])
    assert place_on_step_ends(vals, ids).tolist() == [[0.0, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0]]


TOK = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]])
IDS = torch.tensor([[0, 0, 1, 1, -1], [0, -1, 0, 2, 3]])  # id 3 >= num_steps: ignored


def _same(a, b):
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def test_gather_step_values():
    s = gather_step_values(TOK, IDS, 3, "sum").tolist()
    assert _same(s[0], [3.0, 7.0, NAN]) and _same(s[1], [14.0, NAN, 9.0])
    m = gather_step_values(TOK, IDS, 3, "mean").tolist()
    assert _same(m[0], [1.5, 3.5, NAN]) and _same(m[1], [7.0, NAN, 9.0])
    last = gather_step_values(TOK, IDS, 3, "last").tolist()
    assert _same(last[0], [2.0, 4.0, NAN]) and _same(last[1], [8.0, NAN, 9.0])
    with pytest.raises(ValueError, match="sum.*mean.*last"):
        gather_step_values(TOK, IDS, 3, "max")


segments = st.lists(st.tuples(st.integers(-1, 3), st.integers(1, 3)), min_size=1, max_size=6)


def _ids_from_segments(segs):
    row = []
    for sid, length in segs:
        row += [sid] * length
    return row


@settings(max_examples=60, deadline=None)
@given(segs=segments, vals=st.lists(st.one_of(st.floats(-5, 5), st.just(NAN)), min_size=4, max_size=4))
def test_step_roundtrips(segs, vals):
    ids = torch.tensor([_ids_from_segments(segs)])
    v = torch.tensor([vals], dtype=torch.float64)
    present = set(ids[0].tolist()) - {-1}
    back_mean = gather_step_values(scatter_step_values(v, ids, fill=NAN), ids, 4, "mean")[0].tolist()
    back_sum = gather_step_values(place_on_step_ends(v, ids), ids, 4, "sum")[0].tolist()
    for s in range(4):
        if s not in present:
            assert math.isnan(back_mean[s]) and math.isnan(back_sum[s])
        elif math.isnan(vals[s]):
            assert math.isnan(back_mean[s]) and back_sum[s] == 0.0
        else:
            assert back_mean[s] == pytest.approx(vals[s]) and back_sum[s] == pytest.approx(vals[s])
    # exactly one end token per present step
    assert int(step_last_token_mask(ids).sum()) == len(present)


def test_char_spans_to_step_ids():
    # text = "Step one.\n\nStep two."   steps: [0, 9) and [11, 20)
    offsets = [(0, 4), (4, 8), (8, 9), (9, 11), (11, 15), (15, 19), (19, 20), (0, 0)]
    #          Step    one     .       \n\n     Step      two       .        EOS (no chars)
    out = char_spans_to_step_ids(offsets, [(0, 9), (11, 20)], length=10)
    assert out.dtype == torch.long
    assert out.tolist() == [0, 0, 0, -1, 1, 1, 1, -1, -1, -1]


def test_char_spans_leading_whitespace_goes_to_next_step_and_unsorted_spans():
    offsets = [(0, 4), (4, 9), (9, 15), (15, 20)]  # "Step", " one.", "\n\nStep", " two."
    spans = [(11, 20), (0, 9)]  # given out of order: step ids follow the list's order
    assert char_spans_to_step_ids(offsets, spans, length=4).tolist() == [1, 1, 0, 0]
    assert char_spans_to_step_ids(offsets, spans, length=2).tolist() == [1, 1]  # truncated
