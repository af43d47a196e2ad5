"""The step's metrics channel and its timer.

Any stage of a step writes to one :class:`StepMetrics` (``module.metrics``): ``add`` for counts and sums
(summed over the step's writes and over ranks, e.g. ``filter/dropped``, ``train/loss`` — each rank's share of
a loss normalised by global counts), ``mean`` for everything else (a weighted mean over the writes of all
ranks; one write per rank = the mean of the ranks' values). ``write`` sends a dict, counts
(``steprl.utils.dist.SUM_METRICS``) to ``add``, the rest to ``mean``. The engine logs the reduced values
once per step (:meth:`StepMetrics.compute`), then resets the channel. The cross-rank reduction is
torchmetrics' (``SumMetric`` / ``MeanMetric``, float64, NaN kept).
"""
from __future__ import annotations

import time

import torch
from torchmetrics.aggregation import MeanMetric, SumMetric

from steprl.utils import dist as D


class StepMetrics:
    def __init__(self):
        self._metrics: dict[str, MeanMetric | SumMetric] = {}

    def _get(self, key: str, kind: type):
        m = self._metrics.get(key)
        if m is None:
            m = self._metrics[key] = kind(nan_strategy="disable").set_dtype(torch.float64)
        elif not isinstance(m, kind):
            raise TypeError(f"metric {key!r} is written both as a {type(m).__name__} and a {kind.__name__}")
        return m

    def add(self, key: str, value: float) -> None:
        """A count or sum: summed over the step's writes and over ranks."""
        self._get(key, SumMetric).update(float(value))

    def mean(self, key: str, value: float, weight: float = 1.0) -> None:
        """A mean: weighted over the step's writes and over ranks."""
        self._get(key, MeanMetric).update(float(value), float(weight))

    def write(self, metrics: dict[str, float]) -> None:
        """Counts (``SUM_METRICS``) added, every other value a mean."""
        for k, v in metrics.items():
            (self.add if k in D.SUM_METRICS else self.mean)(k, v)

    def peek(self) -> dict[str, float]:
        """This rank's values so far (no reduction over ranks), e.g. for a test."""
        return {k: _local(m) for k, m in self._metrics.items()}

    def compute(self) -> dict[str, float]:
        """The step's values reduced over ranks (every rank must call it: it is a collective)."""
        if not D.is_distributed():
            return self.peek()
        kinds = {k: type(m).__name__ for k, m in self._metrics.items()}
        for part in D.all_gather_object(kinds):  # a key only some ranks wrote: the others join with weight 0
            for k, kind in part.items():
                if k not in self._metrics:
                    m = self._get(k, MeanMetric if kind == "MeanMetric" else SumMetric)
                    m.update(0.0, 0.0) if isinstance(m, MeanMetric) else m.update(0.0)
        device = D._comm_device()
        return {k: float(self._metrics[k].to(device).compute()) for k in sorted(self._metrics)}

    def reset(self) -> None:
        self._metrics = {}


def _local(m) -> float:
    if isinstance(m, MeanMetric):
        return float(m.mean_value / m.weight)
    return float(m.sum_value)


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
