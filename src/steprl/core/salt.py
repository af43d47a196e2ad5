"""SALT: step-level advantages from a trajectory graph (Amazon, arXiv 2510.20022), reconstructed.

No SALT code or paper body was available; this is a reconstruction that matches the SALT abstract and the
description of SALT in the GRAFT paper's appendix A.3 (see docs/algorithms/salt.md): per prompt group, identical transitions
``e = (s_t, a_t, s_{t+1})`` across trajectories are merged into one edge of a graph, and each step gets the mean
of the trajectory advantages inherited by all occurrences of its edge::

    Â(e)     = mean_{(i,t) ∈ occ(e)} A_i
    Â_{i,t}  = (1 - λ) A_i + λ Â(e_{i,t})          λ = 1: pure SALT

A step shared by winning and losing trajectories comes out near 0 ("neutral"), a step seen only in winners (or
only in losers) keeps its sign ("decisive"), and a step seen once keeps ``A_i`` (GRPO).

Two layers: :func:`salt_step_advantages` works on integer edge ids (tensors in, tensors out), and
:func:`salt_edge_keys` builds the hashable edge keys of one trajectory from its (canonicalised) step texts.
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["SALT_STATE_KEYS", "SALT_RENORMS", "INVALID_ACTION", "canon_text", "parse_action", "salt_edge_keys",
           "salt_step_advantages"]

SALT_STATE_KEYS = ("obs", "obs+last_action", "full_prefix")
SALT_RENORMS = ("none", "batch_zero_mean")
INVALID_ACTION = "<invalid>"
_WS = re.compile(r"\s+")


def canon_text(text: str, drop: re.Pattern | str | None = None) -> str:
    """Canonical form of an observation or action: ``drop`` matches removed (step counters, timestamps),
    whitespace collapsed, stripped, lower-cased."""
    if drop is not None:
        text = re.sub(drop, "", text)
    return _WS.sub(" ", text).strip().lower()


def parse_action(text: str, pattern: re.Pattern | str | None) -> str:
    """The executed action inside a step's text: the last match of ``pattern`` (its first group if it has
    one), or :data:`INVALID_ACTION` when nothing matches. Without a pattern the whole text is the action."""
    if pattern is None:
        return text
    matches = list(re.finditer(pattern, text, flags=re.S))
    if not matches:
        return INVALID_ACTION
    m = matches[-1]
    return m.group(1) if m.re.groups else m.group(0)


def salt_edge_keys(actions: list[str], observations: list[str], initial_state: str = "",
                   state_key: str = "obs") -> list[tuple]:
    """Edge keys ``(s_t, a_t, s_{t+1})`` of one trajectory ``s_0 -a_0-> o_0 -a_1-> o_1 ...``.

    ``actions[t]`` and ``observations[t]`` (what the environment shows after action ``t``) should already be
    canonical. The state before step ``t`` is, by ``state_key``: ``obs`` — the last observation (``s_0`` =
    ``initial_state``), so re-convergent paths merge (a graph); ``obs+last_action`` — that observation and the
    action that led to it; ``full_prefix`` — everything before the step, so only shared prefixes merge (a
    tree). An invalid action gets the self-loop key ``(s, INVALID_ACTION, s)``.
    """
    if state_key not in SALT_STATE_KEYS:
        raise ValueError(f"salt state_key must be one of {SALT_STATE_KEYS}, got {state_key!r}")
    if len(actions) != len(observations):
        raise ValueError(f"salt_edge_keys: {len(actions)} actions but {len(observations)} observations")
    keys: list[tuple] = []
    prefix: tuple = (initial_state,)
    prev_obs, prev_act = initial_state, None
    for a, o in zip(actions, observations):
        if state_key == "obs":
            s, s_next = prev_obs, o
        elif state_key == "obs+last_action":
            s, s_next = (prev_obs, prev_act), (o, a)
        else:
            s, s_next = prefix, prefix + (a, o)
        keys.append((s, a, s) if a == INVALID_ACTION else (s, a, s_next))
        prefix, prev_obs, prev_act = prefix + (a, o), o, a
    return keys


def salt_step_advantages(edge_ids: Tensor, traj_adv: Tensor, traj_ids: Tensor, lam: float = 1.0,
                         dedup_within_traj: bool = False, renorm: str = "none") -> Tensor:
    """Per-step SALT advantages for ``M`` steps given flat ``[M]`` tensors.

    ``edge_ids[m]``: id of step ``m``'s edge (steps with the same id are one edge; ids must already be distinct
    across prompt groups); ``traj_adv[m]``: the advantage ``A_i`` of its trajectory; ``traj_ids[m]``: which
    trajectory it belongs to. Every occurrence counts once (a trajectory that loops through an edge weighs
    more) unless ``dedup_within_traj``. ``renorm``: ``none`` (the base advantages are already normalised) or
    ``batch_zero_mean``.
    """
    if renorm not in SALT_RENORMS:
        raise ValueError(f"salt renorm must be one of {SALT_RENORMS}, got {renorm!r}")
    A = traj_adv if traj_adv.is_floating_point() else traj_adv.float()
    if A.numel() == 0:
        return A.clone()
    _, edge = torch.unique(edge_ids, return_inverse=True)
    n_edges = int(edge.max()) + 1
    if dedup_within_traj:
        _, traj = torch.unique(traj_ids, return_inverse=True)
        pair = edge * (int(traj.max()) + 1) + traj
        _, first = torch.unique(pair, return_inverse=True)
        keep = torch.zeros(int(first.max()) + 1, dtype=torch.long, device=A.device).scatter_(
            0, first, torch.arange(A.numel(), device=A.device))  # one representative occurrence per (edge, traj)
        sel = keep
    else:
        sel = torch.arange(A.numel(), device=A.device)
    sums = torch.zeros(n_edges, dtype=A.dtype, device=A.device).index_add_(0, edge[sel], A[sel])
    counts = torch.zeros(n_edges, dtype=A.dtype, device=A.device).index_add_(0, edge[sel], torch.ones_like(A[sel]))
    edge_adv = sums / counts.clamp_min(1)
    out = (1.0 - lam) * A + lam * edge_adv[edge]
    if renorm == "batch_zero_mean":
        out = out - out.mean()
    return out
