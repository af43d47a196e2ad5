"""The data of one RL step: :class:`Rewards` of the rollouts and the :class:`Step` that every stage hook of
:class:`steprl.algos.base.RLModule` reads and fills, in place of state parked on the module (and its
:class:`Timer`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from steprl.rollout.types import Rollouts, Sample


@dataclass
class Rewards:
    """What the reward pipeline and the algorithm's ``score`` produce for N rollouts. ``seq``: a scorer's other
    per-row outputs, [N, ...] each (DRM's confidence, relevance and coherence scores, TP-GRPO's step labels,
    PC-GRPO's answer keys); values computed on whole groups are not rewards: they go to
    :attr:`Step.group_values`."""

    outcome: torch.Tensor                 # [N] verifier score in [0, 1]
    correct: torch.Tensor                 # [N] 1.0 where the outcome is fully correct
    step: torch.Tensor | None = None      # [N, S] per-step scores, NaN where none
    token: torch.Tensor | None = None     # [N, T] dense per-token rewards
    extras: dict[str, Any] = field(default_factory=dict)
    seq: dict[str, torch.Tensor] = field(default_factory=dict)  # a scorer's per-row [N, ...] outputs: they
    #                                      follow the rows through filters, refill and rank padding

    def select(self, idx: torch.Tensor) -> "Rewards":
        pick = lambda v: None if v is None else v[idx.to(v.device)]  # noqa: E731
        return Rewards(pick(self.outcome), pick(self.correct), pick(self.step), pick(self.token), self.extras,
                       {k: pick(v) for k, v in self.seq.items()})

    def to(self, device) -> "Rewards":
        move = lambda v: None if v is None else v.to(device)  # noqa: E731
        return Rewards(move(self.outcome), move(self.correct), move(self.step), move(self.token), self.extras,
                       {k: move(v) for k, v in self.seq.items()})


def cat_rewards(parts: list[Rewards]) -> Rewards:
    """Rewards of several batches, in order: step scores padded with NaN, token rewards with 0 to the widest."""
    if len(parts) == 1:
        return parts[0]
    F = torch.nn.functional

    def widest(name: str, value: float) -> torch.Tensor | None:
        xs = [getattr(p, name) for p in parts]
        if any(x is None for x in xs):
            return None
        width = max(x.shape[1] for x in xs)
        return torch.cat([F.pad(x, (0, width - x.shape[1]), value=value) for x in xs])

    keys = set(parts[0].seq).intersection(*(p.seq for p in parts[1:]))
    seq = {k: torch.cat([p.seq[k] for p in parts]) for k in keys}
    return Rewards(torch.cat([p.outcome for p in parts]), torch.cat([p.correct for p in parts]),
                   widest("step", float("nan")), widest("token", 0.0), parts[0].extras, seq)


class RowValues(dict):
    """Named per-row tensors [N, ...] that follow the rows through filters, refills and rank padding."""

    def select(self, idx: torch.Tensor) -> "RowValues":
        return RowValues({k: v[idx.to(v.device)] for k, v in self.items()})

    def to(self, device) -> "RowValues":
        return RowValues({k: v.to(device) for k, v in self.items()})

    @staticmethod
    def cat(parts: list["RowValues"]) -> "RowValues":
        """The rows of several batches, in order (the keys all of them hold)."""
        if len(parts) == 1:
            return parts[0]
        keys = set(parts[0]).intersection(*parts[1:])
        return RowValues({k: torch.cat([p[k] for p in parts]) for k in parts[0] if k in keys})


class Timer:
    """``with timer("rollout"): ...`` accumulates wall-clock seconds under ``time/rollout``."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[f"time/{name}"] = timer.times.get(f"time/{name}", 0.0) + time.perf_counter() - self.t

        return _Span()


@dataclass
class Step:
    """One training step as it flows through the stage hooks.

    ``samples``: the step's prompts (a refill appends the extra prompts it drew: ``ro.sample_idx`` indexes
    this list). ``ro`` / ``rewards``: the rows trained on (after the filters, padded to the same number on
    every rank). ``unfiltered``: the first round's rollouts and rewards before any filter (the step's
    metrics and samples). ``real``: [N] mask of the rows that are not rank padding. ``kl_rewards``: ``-coef
    * kl`` [N, T] when the KL is in the reward (computed once, by ``dense_rewards``). ``group_values``: the
    values the ``group_values`` stage computed on each row's whole group before any filter, one per row of
    ``ro`` (rank padding rows: a copy of a real row's, or 0 on a rank that kept none) — OREAL's ``oreal_R``
    (R = ±1) and ``oreal_A`` (the group-shaped advantage), DRM's ``drm_r`` (R_DRM) and ``drm_adv`` (A),
    TP-GRPO's ``tp_adv`` (thought advantages [N, W]), ``tp_nonzero``, ``tp_thoughts``, ``tp_bad_steps`` and
    ``tp_table_gap``. ``extras``: the per-row tensors the update needs (critic values, advantages, returns, an
    algorithm's weights); tensors are sliced with each micro-batch. ``micro_batches``: the update's plan, per
    minibatch the token counts of the rows of each micro-batch this rank ran (``[]``: a zero-weight pass).
    ``outputs``: what ``training_step`` returns to the callbacks.
    """

    samples: list[Sample]
    ro: Rollouts | None = None
    rewards: Rewards | None = None
    unfiltered: tuple[Rollouts, Rewards] | None = None
    real: torch.Tensor | None = None
    kl_rewards: torch.Tensor | None = None
    group_values: RowValues = field(default_factory=RowValues)
    extras: dict[str, Any] = field(default_factory=dict)
    timer: Timer = field(default_factory=Timer)
    micro_batches: list[list[list[int]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        """True when no row is left to learn from (every group filtered out on every rank)."""
        return self.ro is None or len(self.ro) == 0

    @property
    def real_rows(self) -> torch.Tensor | None:
        """The ``real`` mask when some rows are rank padding, else None (every row real)."""
        real = self.real
        if real is None or self.ro is None or len(real) != len(self.ro) or bool(real.all()):
            return None
        return real
