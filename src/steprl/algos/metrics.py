"""The step's metrics channel, and the engine's once-per-step log of it.

Any stage of a step writes to one :class:`StepMetrics` (``module.metrics``): ``add`` for counts and sums
(summed over the step's writes and over ranks, e.g. ``filter/dropped``, ``train/loss`` — each rank's share of
a loss normalised by global counts), ``mean`` for everything else (a weighted mean over the writes of all
ranks; one write per rank = the mean of the ranks' values). ``write`` sends a dict, counts
(``steprl.utils.dist.SUM_METRICS``) to ``add``, the rest to ``mean``. The engine logs the reduced values
once per step (:class:`StepLogging`), then resets the channel. The cross-rank reduction is torchmetrics'
(``SumMetric`` / ``MeanMetric``, float64, NaN kept).
"""
from __future__ import annotations

import math
import time

import torch
from torchmetrics.aggregation import MeanMetric, SumMetric

from steprl.algos.step import Rewards, Step
from steprl.rollout.agent import agent_metrics
from steprl.rollout.types import Rollouts
from steprl.utils import dist as D


class StepMetrics:
    def __init__(self):
        self._meters: dict[str, MeanMetric | SumMetric] = {}

    def _get(self, key: str, kind: type):
        m = self._meters.get(key)
        if m is None:
            # a NaN stays NaN (nan_strategy=nan); "disable" would also drop the weights (torchmetrics 1.9)
            m = self._meters[key] = kind(nan_strategy=float("nan")).set_dtype(torch.float64)
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
        return {k: _local(m) for k, m in self._meters.items()}

    def compute(self) -> dict[str, float]:
        """The step's values reduced over ranks (every rank must call it: it is a collective)."""
        if not D.is_distributed():
            return self.peek()
        kinds = {k: type(m).__name__ for k, m in self._meters.items()}
        for part in D.all_gather_object(kinds):  # a key only some ranks wrote: the others join with weight 0
            for k, kind in part.items():
                if k not in self._meters:
                    m = self._get(k, MeanMetric if kind == "MeanMetric" else SumMetric)
                    m.update(0.0, 0.0) if isinstance(m, MeanMetric) else m.update(0.0)
        device = D._comm_device()
        return {k: float(self._meters[k].to(device).compute()) for k in sorted(self._meters)}

    def reset(self) -> None:
        self._meters = {}


def add_update(sums: dict[str, float], loss: float, norm: float, ok: bool, grad_norms: dict[str, float]) -> None:
    """Add one optimiser update's loss, gradient norms (the policy's and any other group's clipped on its own,
    e.g. PPO's critic; 0 where not finite) and whether it was skipped as non-finite to the step's ``sums``."""
    parts = {"train/loss": loss, "train/grad_norm": norm if math.isfinite(norm) else 0.0}
    for name, v in list(grad_norms.items())[1:]:
        parts[f"train/{name}_grad_norm"] = v if math.isfinite(v) else 0.0
    parts["train/nonfinite_skips"] = float(not ok)
    for k, v in parts.items():
        sums[k] = sums.get(k, 0.0) + v


def update_metrics(sums: dict[str, float], n_updates: int, world: int, lr: float) -> dict[str, float]:
    """The update's ``train/`` metrics from its ``sums`` (micro-batch sums, :func:`add_update`): token-weighted
    means of entropy, clip fraction and KL over the global batch, the loss and gradient norms averaged over the
    ``n_updates`` optimiser updates, the count of non-finite skips and the learning rate. Pops ``tokens``."""
    per_token = ("train/entropy", "train/clip_frac", "train/kl")
    if world > 1:  # token-weighted means over the global batch
        keys = [k for k in (*per_token, "tokens") if k in sums]
        for k, v in zip(keys, D.all_reduce([sums[k] for k in keys]).tolist()):
            sums[k] = v
    tokens = max(sums.pop("tokens", 1.0), 1.0)
    out = {k: sums[k] / tokens for k in per_token if k in sums}
    out["train/loss"] = sums["train/loss"] / n_updates
    out["train/grad_norm"] = sums["train/grad_norm"] / n_updates
    for k in [k for k in sums if k.endswith("_grad_norm") and k != "train/grad_norm"]:
        out[k] = sums[k] / n_updates
    out["train/nonfinite_skips"] = sums["train/nonfinite_skips"]
    out["train/lr"] = lr
    return out


def _local(m) -> float:
    if isinstance(m, MeanMetric):
        return float(m.mean_value / m.weight)
    return float(m.sum_value)


class StepLogging:
    """Mixin of :class:`steprl.algos.base.RLModule`: the rollouts' metrics, the callbacks' outputs and the
    once-per-step log of ``self.metrics``."""

    def rollout_metrics(self, ro: Rollouts, rw: Rewards) -> dict[str, float]:
        lens = ro.response_mask.sum(-1).float()
        m = {"train/reward": float(rw.outcome.mean()), "train/acc": float(rw.correct.mean()),
             "train/response_len": float(lens.mean()),
             "train/truncated_frac": sum(r == "length" for r in ro.finish_reason) / max(1, len(ro))}
        m.update(agent_metrics(ro))  # multi-turn rollouts: turns, tool calls, format errors, over-length
        if rw.step is not None and torch.isfinite(rw.step).any():
            s = rw.step[torch.isfinite(rw.step)]
            m["train/step_acc"] = float((s >= 1.0 - 1e-6).float().mean())
        return m

    def step_outputs(self, step: Step) -> dict:
        """What the callbacks read from ``outputs``: ``last_samples`` (the first ``log_samples`` unfiltered rows),
        ``rac_candidates`` (``(Sample, response)`` of every unfiltered row) and the ``step`` itself."""
        ro, rw = step.unfiltered
        tok = self.tokenizer
        last = [{"prompt": tok.decode(ro.prompt_ids[i][ro.prompt_mask[i].bool()].tolist(), skip_special_tokens=True),
                 "response": ro.texts[i], "reward": float(rw.outcome[i]), "finish": ro.finish_reason[i],
                 "steps": None if rw.step is None else [round(x, 3) for x in rw.step[i].tolist() if not math.isnan(x)]}
                for i in range(min(self.log_samples, len(ro)))]
        rac = [(step.samples[i], t) for i, t in zip(ro.sample_idx.tolist(), ro.texts)]
        return {"last_samples": last, "rac_candidates": rac, "step": step}

    def finish(self, step: Step, t0: float) -> dict:
        """Log the step's metrics (reduced over ranks) once; return the callbacks' outputs, with the metrics
        logged at this step under ``"metrics"`` (Lightning's ``callback_metrics`` keeps a key's last value until
        it is logged again, e.g. ``train/loss`` over a step that skipped its update)."""
        elapsed = time.perf_counter() - t0
        self.metrics.write(step.timer.times)
        self.metrics.mean("time/step", elapsed)
        ro = step.unfiltered[0]
        self.metrics.add("perf/tokens_per_s", float(ro.prompt_mask.sum() + ro.response_mask.sum()) / max(elapsed, 1e-9))
        values = self.metrics.compute()
        self.metrics.reset()
        self.emit_metrics(values, bar=tuple(k for k in ("train/reward", "train/acc") if k in values))
        return {**self.step_outputs(step), "metrics": values}
