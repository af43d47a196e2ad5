"""PROPA's tree search (spec §3.9): log_boost, UCT (code and paper factor), backup, the two-iteration tree
with a scripted policy, group filters and advantages, PRM data."""
import math

import pytest
import torch

from steprl.core import grpo_advantage
from steprl.core.mcts import (
    Node,
    backup,
    child_labels,
    keep_group,
    log_boost,
    mcts,
    prm_examples,
    select_child,
    select_leaf,
    sibling_groups,
    uct_scores,
)


def test_log_boost():
    assert [log_boost(q) for q in (0.5, 0.0, 1 / 3, 1.0)] == pytest.approx([0.7472, 0.0, 0.6115, 1.0], abs=1e-4)
    assert log_boost(torch.tensor([0.5, -1.0, 2.0])).tolist() == pytest.approx([0.7472, 0.0, 1.0], abs=1e-4)


def _hand_parent():
    root = Node()
    a, b, c = root.add("A"), root.add("B"), root.add("C")
    root.N = 3
    a.N, a.W = 2, 1.0
    b.N, b.W = 1, 0.0
    return root, a, b, c


def test_uct_code_and_paper_formulas():
    root, a, b, c = _hand_parent()
    code = uct_scores(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2, 1, 0]), 3)
    assert code[:2].tolist() == pytest.approx([1.5481, 1.4823], abs=1e-4) and math.isinf(code[2])
    paper = uct_scores(torch.tensor([1.0, 0.0]), torch.tensor([2, 1]), 3, factor=1.0)
    assert paper.tolist() == pytest.approx([1.2412, 1.0481], abs=1e-4)
    assert select_child(root) is c
    root.children.remove(c)
    assert select_child(root) is a
    assert select_child(root, factor=1.0) is a


def test_unvisited_tie_goes_to_first_and_terminal_stops_descent():
    root = Node()
    kids = [root.add(s) for s in "wxyz"]
    root.N = 1
    kids[0].N, kids[0].W = 1, 1.0
    assert select_child(root) is kids[1]
    kids[1].terminal = True
    kids[1].add("never")
    kids[0].N = 5
    root.N = 6
    assert select_leaf(root) is kids[1]  # ∞ beats Q=1, and a terminal node is a leaf even with children


def test_backup_updates_the_whole_path():
    root = Node()
    c = root.add("s1").add("s2")
    backup(c, 1.0)
    backup(c.parent, 0.0)
    assert (root.N, root.W) == (2, 1.0)
    assert (c.parent.N, c.parent.W) == (2, 1.0)
    assert (c.N, c.W) == (1, 1.0)
    assert c.steps() == ["s1", "s2"] and c.depth == 2


class Scripted:
    """Deterministic step policy: expansions are "<prefix len>.<j>", simulations follow a script."""

    def __init__(self, sim_results):
        self.sim_results = list(sim_results)  # one bool per simulation: reaches a correct final answer or not
        self.expanded, self.simulated = [], []

    def expand(self, requests, k):
        self.expanded += [steps for _, steps in requests]
        return [[(f"c{len(steps)}.{j}", f"c{len(steps)}.{j}\n", False) for j in range(k)] for _, steps in requests]

    def simulate(self, requests, budget):
        out = []
        for (_, steps), b in zip(requests, budget):
            self.simulated.append(steps)
            ok = self.sim_results.pop(0)
            out.append(["more", "FINAL right" if ok else "FINAL wrong"][:b])
        return out

    def is_terminal(self, step, eos):
        return step.startswith("FINAL") or eos

    def is_correct(self, tree, steps):
        return steps[-1] == "FINAL right"


def test_two_iteration_tree_and_its_group():
    root = Node()
    pol = Scripted([True, False])
    mcts([root], pol, iterations=1, k=4)
    c1, c2, c3, c4 = root.children
    assert [c.state for c in root.children] == ["c0.0", "c0.1", "c0.2", "c0.3"]
    assert (root.N, root.W, c1.N, c1.W) == (1, 1.0, 1, 1.0) and c2.N == 0  # only the first child is simulated
    mcts([root], pol, iterations=1, k=4)
    assert pol.expanded == [[], ["c0.1"]]  # iteration 2 selected c2 (UCT ∞) and expanded it
    assert (c2.N, c2.W, root.N, root.W) == (1, 0.0, 2, 1.0)
    assert c2.children[0].N == 1 and c2.children[1].N == 0
    groups = sibling_groups(root)
    assert len(groups) == 1 and groups[0][0] is root  # c2's children are all 0: dropped
    labels = groups[0][1]
    assert labels == [1.0, 0.0, 0.0, 0.0]
    adv = grpo_advantage(torch.tensor(labels), torch.zeros(4, dtype=torch.long), eps=1e-4)
    assert adv.tolist() == pytest.approx([1.4997, -0.4999, -0.4999, -0.4999], abs=1e-4)


def test_terminal_children_are_all_simulated_and_depth_cap():
    class FinalFirst(Scripted):
        def expand(self, requests, k):
            return [[("FINAL right", "FINAL right", True)] + [(f"x{j}", f"x{j}\n", False) for j in range(k - 1)]
                    for _ in requests]

    root = Node()
    pol = FinalFirst([False, False])
    mcts([root], pol, iterations=1, k=3)
    assert [c.N for c in root.children] == [1, 1, 1] and root.W == 1.0 and root.children[0].reward == 1.0
    assert len(pol.simulated) == 2
    deep = Node()
    mcts([deep], Scripted([False] * 50), iterations=6, k=2, max_depth=2)
    assert max(n.depth for n in deep.walk()) == 2
    assert all(n.terminal for n in deep.walk() if n.depth == 2)


def test_lockstep_over_several_trees():
    roots = [Node(), Node()]
    pol = Scripted([True, False, False, False])
    mcts(roots, pol, iterations=2, k=2)
    assert roots[0].W == 1.0 and roots[1].W == 0.0
    assert sibling_groups(roots[1]) == []  # no correct path: no GRPO groups (the question goes to SFT)


def test_group_filter():
    assert not keep_group([0.3, 0.35, 0.32, 0.3])
    assert not keep_group([1, 1, 1, 1]) and not keep_group([0, 0, 0, 0])
    assert keep_group([0.3, 0.45, 0.3, 0.3])
    root = Node()
    a, b = root.add("a"), root.add("b")
    a.N, a.W = 3, 1.0
    assert child_labels(root) == pytest.approx([0.6115, 0.0], abs=1e-4)


def test_prm_examples_n0_rule():
    root = Node()
    a, b = root.add("a"), root.add("b")
    a1, a2 = a.add("a1"), a.add("a2")
    b1, b2 = b.add("b1"), b.add("b2")
    for n, (N, W) in {a: (2, 1.0), a1: (1, 1.0), b: (1, 0.0), b1: (1, 0.0)}.items():
        n.N, n.W = N, W
    root.N, root.W = 3, 1.0
    data = dict((" ".join(s), v) for s, v in prm_examples(root))
    assert data == pytest.approx({"a": log_boost(0.5), "b": 0.0, "a a1": 1.0, "a a2": 0.0, "b b1": 0.0})
    assert "b b2" not in data  # unvisited, and every sibling has value 0: skipped


def test_dead_end_at_depth_cap_does_not_simulate_its_siblings():
    """Issue 15 item 8: children created at max_depth that are not final are dead ends (terminal, reward 0), but
    they do not switch on simulate-all as a real final step does: only the first new child is backed up.
    Depth cap 1, k = 3, one iteration: the root's 3 children are dead ends; the first alone is backed up with 0."""
    root = Node()
    pol = Scripted([])
    stats = mcts([root], pol, iterations=1, k=3, max_depth=1)
    assert [c.N for c in root.children] == [1, 0, 0]
    assert all(c.terminal and c.dead_end and c.reward == 0.0 for c in root.children)
    assert (root.N, root.W) == (1, 0.0) and stats["simulations"] == 1 and pol.simulated == []
    assert stats["sim_final"] == 0  # a dead end is not a final step


def test_sim_final_counts_simulations_ending_on_a_final_step():
    """Depth cap 3. Iteration 1: the root's child c0.0 (depth 1, budget 2) simulates to ["more", "FINAL right"]:
    final. Iteration 2 expands c0.1; its child c1.0 (depth 2, budget 1) simulates to ["more"] only: not final."""
    root = Node()
    pol = Scripted([True, True])
    stats = mcts([root], pol, iterations=1, k=2, max_depth=3)
    assert (stats["simulations"], stats["sim_final"]) == (1, 1)
    stats = mcts([root], pol, iterations=1, k=2, max_depth=3)
    assert pol.simulated[-1] == ["c0.1", "c1.0"]
    assert (stats["simulations"], stats["sim_final"]) == (1, 0)
