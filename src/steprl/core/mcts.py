"""PROPA's tree search over reasoning steps (Jiang et al., arXiv 2511.10279; official code YanbeiJiang/PROPA).

Pure parts, no model: the search tree, UCT selection, value backup, the ``log_boost`` reward transform, the
conversion of node values into sibling GRPO groups and PRM regression targets, and the MCTS loop itself,
which talks to the policy only through a :class:`StepPolicy` (so a scripted policy can drive it in tests).
See the PROPA paper (arXiv 2511.10279) on MCTS over steps and sibling groups, and docs/algorithms/propa.md.

    SELECT     descend while the node has children and is not terminal: argmax UCT,
               UCT = Q + c sqrt(factor · ln N_parent / N_child), N_child = 0 -> +inf (first such child wins);
               factor = 2 in the official code, 1 in the paper's formula
    EXPAND     k candidate next steps from the current policy
    SIMULATE   the first child only (code quirk) unless a child is a final step, then all children: a terminal child
               scores its own reward, another one a (greedy) rollout to a final answer within the depth cap; a
               child at the depth cap that is not final is a dead end (reward 0) and does not trigger simulate-all
    BACKUP     N += 1, W += r on the path child .. root
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["Node", "StepPolicy", "log_boost", "uct_scores", "select_child", "select_leaf", "backup",
           "child_labels", "keep_group", "sibling_groups", "prm_examples", "mcts"]


@dataclass(eq=False)
class Node:
    """One reasoning step. The root's ``state`` is empty (its prefix is the question itself)."""

    state: str = ""
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    N: int = 0                 # visits
    W: float = 0.0             # value sum
    reward: float = 0.0        # 1 iff terminal and correct
    terminal: bool = False
    dead_end: bool = False     # terminal only because it reached the depth cap without a final step (reward 0)
    completion: str = ""       # the generated text (with its stop string) the step was sampled as
    eos: bool = False          # the generation ended with EOS (the model finished its solution)

    @property
    def Q(self) -> float:
        return self.W / self.N if self.N else 0.0

    @property
    def depth(self) -> int:
        d, n = 0, self
        while n.parent is not None:
            d, n = d + 1, n.parent
        return d

    def steps(self) -> list[str]:
        """The step texts root -> this node (the root contributes none)."""
        out, n = [], self
        while n.parent is not None:
            out.append(n.state)
            n = n.parent
        return out[::-1]

    def add(self, state: str, terminal: bool = False, reward: float = 0.0, completion: str = "",
            eos: bool = False) -> "Node":
        child = Node(state, self, terminal=terminal, reward=reward, completion=completion or state, eos=eos)
        self.children.append(child)
        return child

    def walk(self):
        """This node and all its descendants, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()


def log_boost(x, a: float = 10.0):
    """``log(1 + a·x) / log(1 + a)`` with ``x`` clamped to [0, 1] (PROPA's reward / PRM-target transform)."""
    if isinstance(x, Tensor):
        return torch.log1p(a * x.clamp(0.0, 1.0)) / math.log1p(a)
    return math.log1p(a * min(1.0, max(0.0, float(x)))) / math.log1p(a)


def uct_scores(W: Tensor, N: Tensor, n_parent: float, c: float = 1.0, factor: float = 2.0) -> Tensor:
    """``Q + c sqrt(factor · ln N_parent / N)`` per child; ``+inf`` for unvisited children."""
    W, N = W.double(), N.double()
    explore = c * torch.sqrt(factor * math.log(max(n_parent, 1)) / N.clamp_min(1))
    return torch.where(N > 0, W / N.clamp_min(1) + explore, torch.full_like(W, math.inf))


def select_child(node: Node, c: float = 1.0, factor: float = 2.0) -> Node:
    s = uct_scores(torch.tensor([ch.W for ch in node.children]), torch.tensor([ch.N for ch in node.children]),
                   node.N, c, factor)
    return node.children[int(torch.argmax(s))]  # argmax returns the first maximum: ties go to the first child


def select_leaf(root: Node, c: float = 1.0, factor: float = 2.0) -> Node:
    node = root
    while node.children and not node.terminal:
        node = select_child(node, c, factor)
    return node


def backup(node: Node, r: float) -> None:
    n = node
    while n is not None:
        n.N += 1
        n.W += r
        n = n.parent


def child_labels(node: Node, a: float = 10.0) -> list[float]:
    """GRPO rewards of ``node``'s children: ``log_boost(Q)`` for visited ones, 0 for unvisited ones."""
    return [log_boost(ch.Q, a) if ch.N > 0 else 0.0 for ch in node.children]


def keep_group(labels: list[float], min_range: float = 0.1) -> bool:
    """Skip a sibling group whose labels are all 0, all 1, or span less than ``min_range``."""
    if not labels or all(x == 0 for x in labels) or all(x == 1 for x in labels):
        return False
    return max(labels) - min(labels) >= min_range


def sibling_groups(root: Node, a: float = 10.0, min_range: float = 0.1) -> list[tuple[Node, list[float]]]:
    """``(parent, child labels)`` for every non-terminal node with children whose group passes
    :func:`keep_group`; none at all when the search found no correct path (root ``W == 0``)."""
    if root.W == 0:
        return []
    out = []
    for node in root.walk():
        if node.children and not node.terminal:
            labels = child_labels(node, a)
            if keep_group(labels, min_range):
                out.append((node, labels))
    return out


def prm_examples(root: Node, a: float = 10.0) -> list[tuple[list[str], float]]:
    """PRM regression data: ``(steps root -> node, label)`` for every non-root node; label ``log_boost(Q)``, or for
    an unvisited node 0.0, unless every sibling (itself included) has value 0, in which case it is skipped."""
    out = []
    for node in root.walk():
        if node.parent is None:
            continue
        if node.N > 0:
            out.append((node.steps(), log_boost(node.Q, a)))
        elif any(s.N > 0 and s.W > 0 for s in node.parent.children):
            out.append((node.steps(), 0.0))
    return out


class StepPolicy(Protocol):
    """What MCTS needs from a policy, batched over trees. ``tree`` indexes the question of each request."""

    def expand(self, requests: list[tuple[int, list[str]]], k: int) -> list[list[tuple[str, str, bool]]]:
        """``k`` sampled next steps for each ``(tree, steps so far)``: ``(step text, completion, ended_by_eos)``."""

    def simulate(self, requests: list[tuple[int, list[str]]], budget: list[int]) -> list[list[str]]:
        """A rollout of at most ``budget`` further steps after each ``(tree, steps so far)``."""

    def is_terminal(self, step: str, eos: bool) -> bool:
        """Whether a step ends the solution (a final-answer step, or the model stopped)."""

    def is_correct(self, tree: int, steps: list[str]) -> bool:
        """Whether a finished solution's answer is right."""


def mcts(roots: list[Node], policy: StepPolicy, iterations: int, k: int, max_depth: int = 8, c: float = 1.0,
         factor: float = 2.0, simulate_all: bool = False) -> dict[str, float]:
    """Run ``iterations`` MCTS iterations on every tree in lockstep (one batched expansion and one batched
    simulation per iteration). A node at ``max_depth`` that is not a final answer is a dead end (terminal,
    reward 0); unlike a final step it does not make its siblings simulated too. ``simulate_all``: simulate every
    new child, not only the first (the paper's wording). Returns counts for metrics; ``sim_final``: simulations
    that ended on a final step (a final child, or a rollout whose last step is final)."""
    stats = {"expansions": 0, "simulations": 0, "terminal_hits": 0, "sim_final": 0}
    for _ in range(iterations):
        leaves = [select_leaf(r, c, factor) for r in roots]
        grow = [i for i, leaf in enumerate(leaves) if not leaf.terminal]
        for i, leaf in enumerate(leaves):
            if leaf.terminal:
                backup(leaf, leaf.reward)
                stats["terminal_hits"] += 1
        if not grow:
            continue
        cands = policy.expand([(i, leaves[i].steps()) for i in grow], k)
        sims: list[tuple[int, Node]] = []
        for i, kids in zip(grow, cands):
            leaf = leaves[i]
            for text, completion, eos in kids:
                done = policy.is_terminal(text, eos)
                node = leaf.add(text, completion=completion, eos=eos)
                if done:
                    node.terminal, node.reward = True, float(policy.is_correct(i, node.steps()))
                elif node.depth >= max_depth:
                    node.terminal = node.dead_end = True
            stats["expansions"] += 1
            new = leaf.children[-len(kids):]
            chosen = new if (simulate_all or any(n.terminal and not n.dead_end for n in new)) else new[:1]
            sims += [(i, n) for n in chosen]
        rollout = [(i, n) for i, n in sims if not n.terminal]
        outs = policy.simulate([(i, n.steps()) for i, n in rollout], [max_depth - n.depth for _, n in rollout]) \
            if rollout else []
        results = {id(n): (i, n.steps() + steps) for (i, n), steps in zip(rollout, outs)}
        for i, n in sims:
            if n.terminal:
                r, final = n.reward, not n.dead_end
            else:
                _, full = results[id(n)]
                final = bool(full) and len(full) > n.depth and policy.is_terminal(full[-1], False)
                r = float(final and policy.is_correct(i, full))
            backup(n, r)
            stats["sim_final"] += int(final)
            stats["simulations"] += 1
    return stats
