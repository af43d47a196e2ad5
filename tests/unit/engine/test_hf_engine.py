"""HFEngine (KV-cached batched sampling) on a tiny random Qwen2 model with the byte tokenizer, plus the
Rollouts row operations (select / cat_rollouts) that filters and refills rely on.

Byte tokenizer facts used below: ids 0..3 are <pad>, <eos>, <bos>, <unk>; every ASCII character is one token,
so an ASCII prompt of k characters is k prompt tokens.
"""
from __future__ import annotations

import math

import pytest
import torch

from steprl.models import load_model
from tests.helpers import redraw_weights
from steprl.rollout.hf import HFEngine, sample_next
from steprl.rollout.types import Rollouts, cat_rollouts

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
             max_position_embeddings=256)
PROMPTS = ["1+2=", "hello world, a longer prompt", "ab"]  # 4, 28 and 2 tokens


@pytest.fixture(scope="module")
def lm():
    """(model, tokenizer). The stock init (std 0.02) gives a model that just repeats the last prompt token,
    whatever came before; redrawing the matrices with std 0.5 (seeded) makes the continuation depend on the
    whole prompt and its positions, so padding / position mistakes change the output."""
    model, tok = load_model(tiny=SMALL)
    return redraw_weights(model), tok


def _rows(ro: Rollouts) -> list[list[int]]:
    """Each row's response tokens under its response mask."""
    return [ids[m.bool()].tolist() for ids, m in zip(ro.response_ids, ro.response_mask)]


def _is_prefix_mask(m: list[int]) -> bool:
    k = sum(m)
    return m == [1] * k + [0] * (len(m) - k)


# ------------------------------------------------------------------------------------------ shapes, groups
def test_shapes_grouping_and_row_contents(lm):
    model, tok = lm
    n, limit = 3, 6
    ro = HFEngine(max_new_tokens=limit, temperature=2.0).generate(
        model, tok, PROMPTS, n=n, generator=torch.Generator().manual_seed(0))
    lens = [len(p) for p in PROMPTS]  # byte tokenizer: one token per ASCII character
    P = max(lens)  # 28
    N = len(PROMPTS) * n
    assert len(ro) == N
    assert ro.prompt_ids.shape == (N, P) and ro.prompt_mask.shape == (N, P)
    W = ro.response_ids.shape[1]
    assert 1 <= W <= limit and ro.response_mask.shape == (N, W)
    assert W == int(ro.response_lengths.max())  # the width is trimmed to the longest response
    assert ro.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ro.sample_idx.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(ro.loss_mask, ro.response_mask)
    assert (ro.step_ids == -1).all()
    assert ro.old_logp is None and ro.ref_logp is None
    assert ro.input_ids.shape == (N, P + W) and torch.equal(ro.input_ids[:, P:], ro.response_ids)
    assert ro.attention_mask.shape == (N, P + W)
    assert torch.equal(ro.attention_mask[:, P:], ro.response_mask.to(ro.attention_mask.dtype))
    for r in range(N):
        i, L = r // n, lens[r // n]
        # left padding: pads first, then the prompt's own tokens
        assert ro.prompt_mask[r].tolist() == [0] * (P - L) + [1] * L
        assert (ro.prompt_ids[r, : P - L] == tok.pad_token_id).all()
        assert tok.decode(ro.prompt_ids[r, P - L:].tolist()) == PROMPTS[i]
        m = ro.response_mask[r].tolist()
        assert _is_prefix_mask(m)
        assert (ro.response_ids[r][~ro.response_mask[r].bool()] == tok.pad_token_id).all()
        assert ro.texts[r] == tok.decode(_rows(ro)[r], skip_special_tokens=True)
        assert ro.finish_reason[r] in ("stop", "length")
        if ro.finish_reason[r] == "length":
            assert sum(m) == limit
    # the n samples of a prompt are drawn independently (not one sample copied n times)
    rows = _rows(ro)
    assert any(len({tuple(x) for x in rows[g * n:(g + 1) * n]}) > 1 for g in range(len(PROMPTS)))


# ------------------------------------------------------------------------------------------ padding
def test_left_padding_does_not_change_greedy_continuations(lm):
    model, tok = lm
    eng = HFEngine(max_new_tokens=12)
    batch = eng.generate(model, tok, PROMPTS, n=1, greedy=True)
    assert len(set(batch.texts)) == len(PROMPTS)  # the continuations depend on the prompt
    for i, p in enumerate(PROMPTS):
        alone = eng.generate(model, tok, [p], n=1, greedy=True)
        assert _rows(alone)[0] == _rows(batch)[i], p
        assert alone.finish_reason[0] == batch.finish_reason[i]
    # decoding in chunks of 2 sequences (rollout.batch_size) gives the same rows, and n>1 repeats each row
    chunked = HFEngine(max_new_tokens=12, batch_size=2).generate(model, tok, PROMPTS, n=2, greedy=True)
    assert _rows(chunked) == [r for r in _rows(batch) for _ in range(2)]
    assert chunked.group_ids.tolist() == [0, 0, 1, 1, 2, 2]


# ------------------------------------------------------------------------------------------ ends of rows
def test_eos_ends_a_row(lm):
    """Near-uniform sampling (temperature 50) draws <eos> (id 1) in some rows: such a row ends with it."""
    model, tok = lm
    eos, pad, limit = tok.eos_token_id, tok.pad_token_id, 24
    ro = HFEngine(max_new_tokens=limit, temperature=50.0).generate(
        model, tok, PROMPTS, n=16, generator=torch.Generator().manual_seed(1))
    n_stop = 0
    for r in range(len(ro)):
        ids, m = ro.response_ids[r].tolist(), ro.response_mask[r].tolist()
        if eos in ids:
            e = ids.index(eos)
            assert m == [1] * (e + 1) + [0] * (len(m) - e - 1)  # the EOS token is in, nothing after it
            assert ids[e + 1:] == [pad] * (len(ids) - e - 1)
            assert ro.finish_reason[r] == "stop"
            assert "<eos>" not in ro.texts[r]
            n_stop += 1
        else:
            assert m == [1] * limit and ro.finish_reason[r] == "length"
    assert 0 < n_stop < len(ro)  # both kinds of rows occurred
    assert ro.finish_reason.count("stop") == n_stop


def test_min_new_tokens_holds_back_eos(lm):
    """The same near-uniform sampling as above with min_new_tokens=limit: no row may end early, every row has
    exactly `limit` tokens and none of them is <eos>; min_new_tokens=8 allows an <eos> only from token 9 on."""
    model, tok = lm
    eos, limit = tok.eos_token_id, 24
    ro = HFEngine(max_new_tokens=limit, temperature=50.0, min_new_tokens=limit).generate(
        model, tok, PROMPTS, n=16, generator=torch.Generator().manual_seed(1))
    assert ro.response_mask.sum().item() == len(ro) * limit
    assert eos not in ro.response_ids.flatten().tolist() and set(ro.finish_reason) == {"length"}
    ro = HFEngine(max_new_tokens=limit, temperature=50.0, min_new_tokens=8).generate(
        model, tok, PROMPTS, n=16, generator=torch.Generator().manual_seed(1))
    lens = ro.response_mask.sum(-1).tolist()
    assert min(lens) >= 9 and ro.finish_reason.count("stop") > 0
    assert all(eos not in ids[:8] for ids in ro.response_ids.tolist())


def test_eos_ids_of_the_generation_config_end_rows(lm):
    """A model whose generation_config lists several EOS ids (as Qwen's does) stops on any of them."""
    model, tok = lm
    eng = HFEngine(max_new_tokens=12)
    free = eng.generate(model, tok, PROMPTS, n=1, greedy=True)
    rows = _rows(free)
    assert all(len(r) == 12 for r in rows) and free.finish_reason == ["length"] * 3
    k = next(k for k in range(2, 12) if rows[0][k] not in rows[0][:k])
    x = rows[0][k]  # a token the greedy model emits at position k of row 0, and not before
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, x]
    try:
        ro = eng.generate(model, tok, PROMPTS, n=1, greedy=True)
    finally:
        model.generation_config.eos_token_id = saved
    expected = [r[: r.index(x) + 1] if x in r else r for r in rows]  # greedy: same prefix, cut at first x
    assert _rows(ro) == expected
    assert len(expected[0]) == k + 1
    assert ro.finish_reason == ["stop" if x in r else "length" for r in rows]
    assert ro.response_ids.shape[1] == max(len(r) for r in expected)


def test_max_new_tokens_gives_length(lm):
    model, tok = lm
    eng = HFEngine(max_new_tokens=7)
    ro = eng.generate(model, tok, PROMPTS, n=1, greedy=True)
    assert tok.eos_token_id not in ro.response_ids.flatten().tolist()
    assert ro.response_ids.shape == (3, 7) and (ro.response_lengths == 7).all()
    assert ro.finish_reason == ["length"] * 3
    short = eng.generate(model, tok, PROMPTS, n=1, greedy=True, max_new_tokens=3)  # per-call limit wins
    assert short.response_ids.shape == (3, 3) and short.finish_reason == ["length"] * 3
    assert torch.equal(short.response_ids, ro.response_ids[:, :3])


def _stop_index(tok, ids: list[int], stops: tuple[str, ...]) -> int | None:
    """First position whose decoded prefix ends with a stop string (plain re-decoding of each prefix)."""
    for j in range(len(ids)):
        text = tok.decode(ids[: j + 1], skip_special_tokens=True)
        if any(text.endswith(s) for s in stops):
            return j
    return None


def _check_stops(model, tok, rows, stops):
    ro = HFEngine(max_new_tokens=12, stop=stops).generate(model, tok, PROMPTS, n=1, greedy=True)
    ends = [_stop_index(tok, r, stops) for r in rows]
    assert _rows(ro) == [r if e is None else r[: e + 1] for r, e in zip(rows, ends)]
    assert ro.finish_reason == ["length" if e is None else "stop" for e in ends]
    for text, e in zip(ro.texts, ends):
        if e is not None:
            assert any(text.endswith(s) for s in stops)
    return ends


def _printable(c: str) -> bool:
    return len(c) == 1 and c.isascii() and c.isprintable()


def _stop_candidates(model, tok):
    """Greedy rows (12 tokens) and, read off them: (r1, k1) a character row r1 emits at position k1 >= 1 and not
    before; (r2, k2) the end of two printable characters in a row."""
    rows = _rows(HFEngine(max_new_tokens=12).generate(model, tok, PROMPTS, n=1, greedy=True))
    chars = [[tok.decode([t]) for t in r] for r in rows]
    r1, k1 = next((r, k) for r in range(3) for k in range(1, 12)
                  if _printable(chars[r][k]) and chars[r][k] not in "".join(chars[r][:k]))
    r2, k2 = next((r, k) for r in range(3) for k in range(1, 12)
                  if _printable(chars[r][k - 1]) and _printable(chars[r][k]))
    return rows, chars, (r1, k1), (r2, k2)


def test_stop_strings_end_rows(lm):
    model, tok = lm
    rows, chars, (r1, k1), (r2, k2) = _stop_candidates(model, tok)
    ends = _check_stops(model, tok, rows, (chars[r1][k1],))
    assert ends[r1] == k1
    # a two-character stop string spanning two tokens ends the row at its second token
    s2 = chars[r2][k2 - 1] + chars[r2][k2]
    ends = _check_stops(model, tok, rows, (s2,))
    assert ends[r2] is not None and ends[r2] <= k2
    # several stop strings: the first one to complete ends the row
    _check_stops(model, tok, rows, (s2, chars[r1][k1]))


def test_a_single_stop_string_is_one_stop_string(lm):
    model, tok = lm
    rows, chars, _, (r2, k2) = _stop_candidates(model, tok)
    s2 = chars[r2][k2 - 1] + chars[r2][k2]
    as_str = HFEngine(max_new_tokens=12, stop=s2).generate(model, tok, PROMPTS, n=1, greedy=True)
    as_list = HFEngine(max_new_tokens=12, stop=[s2]).generate(model, tok, PROMPTS, n=1, greedy=True)
    assert _rows(as_str) == _rows(as_list) and as_str.finish_reason == as_list.finish_reason


# ------------------------------------------------------------------------------------------ randomness
def test_same_generator_seed_same_samples_and_global_rng_untouched(lm):
    model, tok = lm
    eng = HFEngine(max_new_tokens=8, temperature=1.5)
    before = torch.get_rng_state()
    a = eng.generate(model, tok, PROMPTS, n=4, generator=torch.Generator().manual_seed(7))
    b = eng.generate(model, tok, PROMPTS, n=4, generator=torch.Generator().manual_seed(7))
    c = eng.generate(model, tok, PROMPTS, n=4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert torch.equal(a.response_mask, b.response_mask) and a.finish_reason == b.finish_reason
    assert not torch.equal(a.response_ids, c.response_ids)


def test_top_k_1_and_tiny_top_p_equal_greedy(lm):
    model, tok = lm
    greedy = HFEngine(max_new_tokens=10).generate(model, tok, PROMPTS, n=1, greedy=True)
    for eng in (HFEngine(max_new_tokens=10, top_k=1), HFEngine(max_new_tokens=10, top_k=1, temperature=3.0),
                HFEngine(max_new_tokens=10, top_p=1e-6)):
        ro = eng.generate(model, tok, PROMPTS, n=2, generator=torch.Generator().manual_seed(3))
        assert _rows(ro) == [r for r in _rows(greedy) for _ in range(2)], eng


def test_sample_next_follows_temperature_top_k_top_p():
    """probs (0.6, 0.3, 0.1), 4000 draws each; 4 binomial standard deviations are < 0.03."""
    logits = torch.tensor([0.6, 0.3, 0.1]).log().expand(4000, 3)
    g = torch.Generator().manual_seed(0)

    def draws(**kw):
        kw = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, **kw}
        return sample_next(logits, generator=g, **kw)

    assert set(draws(top_k=1).tolist()) == {0}
    assert set(draws(top_k=2).tolist()) == {0, 1}
    x = draws(top_p=0.7)  # smallest prefix reaching 0.7 is {0, 1}: renormalised 0.6/0.9 = 2/3
    assert set(x.tolist()) == {0, 1}
    assert (x == 0).float().mean().item() == pytest.approx(2 / 3, abs=0.03)
    x = draws(temperature=2.0)  # p^(1/2): .7746, .5477, .3162 -> p0 = .7746 / 1.6385 = .4727
    p0 = math.sqrt(0.6) / (math.sqrt(0.6) + math.sqrt(0.3) + math.sqrt(0.1))
    assert (x == 0).float().mean().item() == pytest.approx(p0, abs=0.03)
    assert set(x.tolist()) == {0, 1, 2}


def test_sample_next_survives_nan_and_inf_logits():
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[nan] * 5,                   # all NaN: any token
                           [nan, nan, 2.0, nan, nan],   # NaN entries are never drawn
                           [-inf] * 5,                  # nothing left: any token
                           [0.0, inf, 0.0, 0.0, 0.0]])  # +inf wins
    g = torch.Generator().manual_seed(0)
    for top_p, top_k in [(1.0, 0), (0.9, 0), (1.0, 2), (0.5, 3)]:
        for _ in range(20):
            x = sample_next(logits, temperature=1.0, top_p=top_p, top_k=top_k, generator=g).tolist()
            assert 0 <= x[0] < 5 and x[1] == 2 and 0 <= x[2] < 5 and x[3] == 1, (top_p, top_k, x)


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("kwargs,key", [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"min_new_tokens": -1}, "min_new_tokens"),
    ({"min_new_tokens": 65, "max_new_tokens": 64}, "min_new_tokens"),
])
def test_bad_settings_raise_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        HFEngine(**kwargs)


def test_negative_top_k_is_off_or_rejected(lm):
    model, tok = lm
    try:
        eng = HFEngine(max_new_tokens=4, top_k=-1)
    except ValueError as e:
        assert "top_k" in str(e)
        return
    a = eng.generate(model, tok, PROMPTS, n=2, generator=torch.Generator().manual_seed(0))
    b = HFEngine(max_new_tokens=4, top_k=0).generate(model, tok, PROMPTS, n=2,
                                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.response_ids, b.response_ids)


def test_prompt_truncation_keeps_the_end_of_the_prompt(lm):
    model, tok = lm
    ro = HFEngine(max_new_tokens=2, max_prompt_tokens=4).generate(model, tok, ["0123456789=", "ab"], greedy=True)
    assert ro.prompt_ids.shape[1] == 4
    assert tok.decode(ro.prompt_ids[0].tolist()) == "789="
    assert tok.decode(ro.prompt_ids[1][ro.prompt_mask[1].bool()].tolist()) == "ab"


# ------------------------------------------------------------------------------------------ Rollouts rows
def _with_old_logp(ro: Rollouts, base: float) -> Rollouts:
    """old_logp = base + 10*row + col at response tokens, 0 elsewhere: each value names its cell."""
    N, T = ro.response_ids.shape
    grid = base + 10 * torch.arange(N)[:, None] + torch.arange(T)[None, :]
    ro.old_logp = grid.float() * ro.response_mask
    return ro


def test_select_and_cat_rollouts_keep_rows_aligned(lm):
    model, tok = lm
    pad = tok.pad_token_id
    a = HFEngine(max_new_tokens=5, temperature=50.0).generate(model, tok, PROMPTS[:2], n=2,
                                                              generator=torch.Generator().manual_seed(4))
    b = HFEngine(max_new_tokens=9, temperature=50.0).generate(model, tok, PROMPTS[2:], n=3,
                                                              generator=torch.Generator().manual_seed(5))
    a, b = _with_old_logp(a, 1000.0), _with_old_logp(b, 2000.0)
    assert a.prompt_ids.shape[1] == 28 and b.prompt_ids.shape[1] == 2
    cat = cat_rollouts([a, b], pad)
    Wa, Wb = a.response_ids.shape[1], b.response_ids.shape[1]
    assert len(cat) == 7
    assert cat.prompt_ids.shape == (7, 28) and cat.response_ids.shape == (7, max(Wa, Wb))
    # group ids of b are shifted past a's (max 1 -> offset 2); sample_idx is kept as given
    assert cat.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert cat.sample_idx.tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert cat.texts == a.texts + b.texts and cat.finish_reason == a.finish_reason + b.finish_reason
    prompts = [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2 + [PROMPTS[2]] * 3
    parts = [(a, r) for r in range(4)] + [(b, r) for r in range(3)]
    for r, (src, s) in enumerate(parts):
        L = len(prompts[r])
        assert cat.prompt_mask[r].tolist() == [0] * (28 - L) + [1] * L  # still left-padded
        assert tok.decode(cat.prompt_ids[r][cat.prompt_mask[r].bool()].tolist()) == prompts[r]
        n = int(src.response_lengths[s])
        assert cat.response_ids[r, :n].tolist() == src.response_ids[s, :n].tolist()  # still right-padded
        assert int(cat.response_lengths[r]) == n and _is_prefix_mask(cat.response_mask[r].tolist())
        assert tok.decode(_rows(cat)[r], skip_special_tokens=True) == cat.texts[r]
        assert cat.old_logp[r, :n].tolist() == src.old_logp[s, :n].tolist()
        assert (cat.old_logp[r, n:] == 0).all() and (cat.step_ids[r, n:] == -1).all()
    assert torch.equal(cat.loss_mask, cat.response_mask)
    assert cat.ref_logp is None  # absent in the parts -> absent in the result
    b.old_logp = None
    assert cat_rollouts([a, b], pad).old_logp is None  # only some parts have it -> None

    # select: a permutation of rows keeps every field aligned
    perm = [6, 0, 3, 5, 1]
    sel = cat.select(perm)
    assert len(sel) == 5
    assert sel.texts == [cat.texts[i] for i in perm]
    assert sel.finish_reason == [cat.finish_reason[i] for i in perm]
    assert sel.group_ids.tolist() == [2, 0, 1, 2, 0]
    assert sel.sample_idx.tolist() == [0, 0, 1, 0, 0]
    assert torch.equal(sel.old_logp, cat.old_logp[perm]) and torch.equal(sel.prompt_ids, cat.prompt_ids[perm])
    for j, i in enumerate(perm):
        assert tok.decode(_rows(sel)[j], skip_special_tokens=True) == cat.texts[i] == sel.texts[j]
    assert torch.equal(cat.select(torch.tensor(perm)).response_ids, sel.response_ids)


def test_cat_rollouts_with_an_empty_part(lm):
    """A filter can drop every group of a round; the refill's groups then start at 0 and rows stay aligned."""
    model, tok = lm
    a = HFEngine(max_new_tokens=4).generate(model, tok, PROMPTS[:2], n=2, greedy=True)
    b = HFEngine(max_new_tokens=6).generate(model, tok, PROMPTS[2:], n=2, greedy=True)
    empty = a.select(torch.tensor([], dtype=torch.long))
    assert len(empty) == 0
    cat = cat_rollouts([empty, b], tok.pad_token_id)
    assert len(cat) == 2 and cat.group_ids.tolist() == [0, 0] and cat.texts == b.texts
    assert _rows(cat) == _rows(b)
    kept = a.select([2, 3])  # group 1 kept, group 0 dropped
    cat = cat_rollouts([kept, b], tok.pad_token_id)
    assert cat.group_ids.tolist() == [1, 1, 2, 2] and cat.texts == kept.texts + b.texts
