"""SALT (spec §2.7): the hand example, degenerate groups, graph-vs-tree merging, options."""
import pytest
import torch

from steprl.core import (
    INVALID_ACTION,
    canon_text,
    grpo_advantage,
    parse_action,
    salt_edge_keys,
    salt_step_advantages,
)

A = 0.8660  # GRPO (unbiased std) of rewards [1, 1, 0, 0]: ±0.5 / 0.57735


def approx(xs, tol=1e-3):
    return pytest.approx(xs, abs=tol)


def _run(trajs, adv, state_key="obs", **kw):
    """trajs: list of (actions, observations); all start in s0. Returns per-trajectory step advantages."""
    keys, traj_ids, advs = [], [], []
    for i, (acts, obs) in enumerate(trajs):
        ks = salt_edge_keys(acts, obs, "s0", state_key)
        keys += ks
        traj_ids += [i] * len(ks)
        advs += [float(adv[i])] * len(ks)
    table = {}
    ids = torch.tensor([table.setdefault(k, len(table)) for k in keys])
    out = salt_step_advantages(ids, torch.tensor(advs), torch.tensor(traj_ids), **kw).tolist()
    res, pos = [], 0
    for acts, _ in trajs:
        res.append(out[pos:pos + len(acts)])
        pos += len(acts)
    return res


HAND = [(["a", "b", "c"], ["s1", "s2", "WIN"]),
        (["a", "d", "e"], ["s1", "s3", "WIN"]),
        (["a", "b", "f"], ["s1", "s2", "LOSE"]),
        (["g", "h"], ["s4", "LOSE"])]


def test_hand_example():
    adv = grpo_advantage(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.long))
    assert adv.tolist() == approx([A, A, -A, -A], 1e-3)
    out = _run(HAND, adv)
    shared = (A + A - A) / 3
    assert shared == pytest.approx(0.2887, abs=1e-4)
    assert out[0] == approx([0.2887, 0.0, A])
    assert out[1] == approx([0.2887, A, A])
    assert out[2] == approx([0.2887, 0.0, -A])
    assert out[3] == approx([-A, -A])


def test_all_distinct_is_grpo_and_all_identical_is_mean():
    adv = torch.tensor([1.2, -0.3, -0.9])
    distinct = [([f"x{i}", f"y{i}"], [f"o{i}", f"p{i}"]) for i in range(3)]
    assert _run(distinct, adv) == [approx([1.2, 1.2]), approx([-0.3, -0.3]), approx([-0.9, -0.9])]
    same = [(["x", "y"], ["o", "p"])] * 3
    assert _run(same, adv) == [approx([0.0, 0.0])] * 3


def test_merge_by_key_not_position_and_full_prefix_is_a_tree():
    # (s2, z, s5) appears at t=1 in τ1 and at t=3 in τ2 (τ2 walks back to s2 through a detour)
    t1 = (["a", "z"], ["s2", "s5"])
    t2 = (["b", "c", "back", "z"], ["s3", "s4", "s2", "s5"])
    adv = torch.tensor([1.0, -1.0])
    g = _run([t1, t2], adv, "obs")
    assert g[0][1] == pytest.approx(0.0) and g[1][3] == pytest.approx(0.0)
    tree = _run([t1, t2], adv, "full_prefix")
    assert tree[0][1] == pytest.approx(1.0) and tree[1][3] == pytest.approx(-1.0)
    # full_prefix still merges a shared prefix
    pre = _run([(["a", "x"], ["s1", "s2"]), (["a", "y"], ["s1", "s3"])], adv, "full_prefix")
    assert pre == [approx([0.0, 1.0]), approx([0.0, -1.0])]


def test_obs_plus_last_action_separates_arrivals():
    # both reach s2 then take z; they arrived by different actions, so z does not merge under obs+last_action
    t1 = (["a", "z"], ["s2", "s5"])
    t2 = (["b", "z"], ["s2", "s5"])
    adv = torch.tensor([1.0, -1.0])
    assert _run([t1, t2], adv, "obs")[0][1] == pytest.approx(0.0)
    assert _run([t1, t2], adv, "obs+last_action")[0][1] == pytest.approx(1.0)


def test_mixing_weight_dedup_and_renorm():
    adv = torch.tensor([1.0, -1.0])
    loop = (["a", "a", "a"], ["s0", "s0", "s0"])   # τ1 loops through (s0, a, s0) three times
    once = (["a", "w"], ["s0", "end"])
    out = _run([loop, once], adv)
    assert out[0] == approx([0.5] * 3)              # (1+1+1-1)/4
    dd = _run([loop, once], adv, dedup_within_traj=True)
    assert dd[0] == approx([0.0] * 3)               # (1-1)/2
    half = _run([loop, once], adv, lam=0.5)
    assert half[1] == approx([0.5 * -1 + 0.5 * 0.5, -1.0])
    rn = _run([loop, once], adv, renorm="batch_zero_mean")
    assert sum(rn[0] + rn[1]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="renorm"):
        _run([loop], adv, renorm="whiten")


def test_invalid_actions_self_loop():
    keys = salt_edge_keys(["search foo", INVALID_ACTION], ["page1", "page1"], "start")
    assert keys == [("start", "search foo", "page1"), ("page1", INVALID_ACTION, "page1")]
    with pytest.raises(ValueError, match="state_key"):
        salt_edge_keys(["a"], ["b"], state_key="history")
    with pytest.raises(ValueError, match="observations"):
        salt_edge_keys(["a", "b"], ["o"])


def test_canon_and_parse_action():
    assert canon_text("  Step 3:  Go   WEST\n", drop=r"step \d+:|Step \d+:") == "go west"
    pat = r"<(?:search|answer)>(.*?)</(?:search|answer)>"
    assert parse_action("<think>hm</think><search> Paris </search>", pat) == " Paris "
    assert parse_action("no tags here", pat) == INVALID_ACTION
    assert parse_action("free text", None) == "free text"


def test_empty():
    assert salt_step_advantages(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0)).numel() == 0
