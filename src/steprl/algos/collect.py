"""Group collection: how a step's rows are gathered before the update (the ``collector`` of an RLModule).

:class:`GroupCollector` (the default, DAPO-style dynamic sampling): roll out ``G`` samples per prompt, score
them, compute the whole groups' values (``group_values``, before any filter), keep the groups that pass
(``keep``) and refill from fresh prompts until the step has its prompts' worth of groups or
``algo.filters.max_refill_rounds`` is spent. :class:`ReplayRounds`: roll out several steps' prompts at once
and train on them over the following steps (TP-GRPO's off-policy rounds). An algorithm that builds its groups
another way (PROPA's tree search) brings its own collector with the same ``collect(module, step)`` method.

:func:`pad_to_global` then gives every rank the same number of rows.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.step import Rewards, RowValues, Step, cat_rewards
from steprl.rollout.types import Rollouts, cat_rollouts
from steprl.utils import dist as D


def lockstep(module) -> bool:
    """True when ranks must run the same forward calls (an FSDP-sharded policy)."""
    from steprl.utils.fsdp import is_sharded

    return D.is_distributed() and is_sharded(module.policy)


class GroupCollector:
    """Rollouts and rewards for the step's prompts, with group filters and refill from extra prompts."""

    def collect(self, m, step: Step) -> None:
        f, G = m.filter_cfg, m.batch_cfg["samples_per_prompt"]
        want = len(step.samples)
        kept_ro, kept_rw, kept_gv, pool, timer = [], [], [], step.samples, step.timer  # refills append to samples
        for k in ("filter/groups", "filter/dropped", "filter/all_correct", "filter/all_wrong"):
            m.metrics.add(k, 0.0)
        batch, rounds, kept = list(pool), 0, 0
        pool.clear()
        while True:
            base = len(pool)
            pool.extend(batch)
            with timer("rollout"):
                ro = m.rollout(batch)
            ro.sample_idx = ro.sample_idx + base
            with timer("reward"):
                rw = m.score(ro, pool)
                gv = m.group_values(ro, rw)
            keep = m.keep(ro, rw, gv)
            kept_ro.append(ro.select(keep))
            kept_rw.append(rw.select(keep))
            kept_gv.append(gv.select(keep))
            if rounds == 0:
                step.unfiltered = (ro, rw)
            kept += int(keep.numel()) // G
            rounds += 1
            more = kept < want and rounds <= f["max_refill_rounds"]
            if not lockstep(m):
                if not more:
                    break
                batch = m.trainer.datamodule.draw(want - kept)
                continue
            # sharded model: every rank runs the same generate calls, so all draw the largest deficit
            deficit = int(D.all_reduce([float(want - kept if more else 0)], "max")[0])
            if deficit == 0:
                break
            batch = m.trainer.datamodule.draw(deficit)
            if not more:  # this rank has enough: roll out in step with the others, keep nothing, until all have
                while deficit:
                    with timer("rollout"):
                        m.rollout(batch)
                    deficit = int(D.all_reduce([0.0], "max")[0])
                    batch = m.trainer.datamodule.draw(deficit) if deficit else batch
                break
        ro, rw, gv = cat_rollouts(kept_ro, m.tokenizer.pad_token_id), cat_rewards(kept_rw), RowValues.cat(kept_gv)
        if len(ro) > want * G:  # refill overshoot: keep the first `want` groups
            first = torch.arange(want * G)
            ro, rw, gv = ro.select(first), rw.select(first), gv.select(first)
        m.metrics.mean("filter/refill_rounds", float(rounds - 1))
        step.ro, step.rewards, step.group_values = ro, rw, gv


class ReplayRounds:
    """Every ``round_steps`` steps, roll out that many steps' prompts at once (through ``inner``), store the
    behaviour policy's log-probs (the importance ratio's denominator), keep the rows whose
    ``step.group_values[keep_key]`` is true (all with None) and serve ``prompts_per_step x G`` of them per step. Metrics under ``prefix``."""

    def __init__(self, round_steps: int, keep_key: str | None, prefix: str, inner: GroupCollector | None = None):
        self.round_steps, self.keep_key, self.prefix = round_steps, keep_key, prefix
        self.inner = inner or GroupCollector()
        self.buffer: tuple[Rollouts, Rewards, RowValues, list] | None = None
        self.pos = self.born = 0

    def collect(self, m, step: Step) -> None:
        R, p = self.round_steps, self.prefix
        want = len(step.samples) * m.batch_cfg["samples_per_prompt"]
        if self.buffer is None or self.pos >= len(self.buffer[0]):
            extra = m.trainer.datamodule.draw((R - 1) * len(step.samples)) if R > 1 else []
            step.samples.extend(extra)
            self.inner.collect(m, step)
            ro, rw, gv = step.ro, step.rewards, step.group_values
            with step.timer("logprob"):  # the behaviour policy's log-probs, kept for the importance ratio
                ro.old_logp = m.logp_pass(m.policy, ro.to(m.device)).cpu()
            keep = torch.nonzero(gv[self.keep_key].cpu()).flatten() if self.keep_key else torch.arange(len(ro))
            m.metrics.mean(f"{p}/round_rollouts", float(len(ro)))
            m.metrics.mean(f"{p}/round_kept", float(keep.numel()))
            self.buffer = (ro.select(keep), rw.select(keep), gv.select(keep), list(step.samples))
            self.pos, self.born = 0, m.global_step
        ro_all, rw_all, gv_all, step.samples = self.buffer  # the round's prompts: what ro.sample_idx indexes
        take = torch.arange(self.pos, min(self.pos + want, len(ro_all)))
        self.pos += want
        step.ro, step.rewards, step.group_values = ro_all.select(take), rw_all.select(take), gv_all.select(take)
        if len(step.ro):
            step.unfiltered = (step.ro, step.rewards)  # metrics of the rows trained on (else: the round's)
        m.metrics.mean(f"{p}/policy_lag", float(m.global_step - self.born))
        m.metrics.mean(f"{p}/buffer_left", float(max(0, len(ro_all) - self.pos)))


def filter_groups(f: dict, metrics, ro: Rollouts, rw: Rewards) -> torch.Tensor:
    """Row indices of the groups that pass the filters ``f`` (``algo.filters``; all rows when none is on);
    the group counts go to ``metrics``."""
    add = metrics.add
    gids = ro.group_ids.to(rw.outcome.device)  # rollouts may be on the GPU, verifier scores are not
    truncated = None
    if f.get("drop_truncated"):
        truncated = torch.tensor([r == "length" for r in ro.finish_reason], dtype=torch.bool,
                                 device=gids.device)
        add("filter/truncated", float(torch.unique(gids[truncated]).numel()))
    keep = core.group_filter(rw.outcome, rw.correct, gids, f["zero_variance"], f["acc_band"],
                             truncated=truncated)
    acc = core.group_mean_std(rw.correct, gids)[0]
    groups = lambda rows: float(torch.unique(gids[rows]).numel())  # noqa: E731
    add("filter/groups", groups(torch.ones_like(keep)))
    add("filter/dropped", groups(~keep))
    add("filter/all_correct", groups(acc == 1))
    add("filter/all_wrong", groups(acc == 0))
    return torch.nonzero(keep).flatten()


def pad_to_global(m, step: Step) -> None:
    """Several ranks: give every rank the same number of rows (filters can keep different numbers), so
    all run the same forwards, backwards and optimiser updates. Padding rows repeat real rows (or the
    unfiltered rollouts of a rank that kept none) with an empty loss mask and their own group ids, so they
    add nothing to the loss, the counts or the metrics; their group values repeat those rows' (0 on a rank that
    kept none). Sets ``step.real``, the mask of the real rows."""
    ro, rw, gv = step.ro, step.rewards, step.group_values
    n = len(ro)
    target = int(D.all_reduce([float(n)], "max")[0]) if D.is_distributed() else n
    real = torch.ones(n, dtype=torch.bool, device=ro.response_ids.device)
    step.real = real
    if target == n:
        return
    src_ro, src_rw = (ro, rw) if n else (step.unfiltered[0].to(m.device), step.unfiltered[1].to(m.device))
    idx = torch.arange(target - n) % len(src_ro)
    pad_ro, pad_rw = src_ro.select(idx), src_rw.select(idx)
    pad_gv = gv.select(idx) if n else RowValues({k: v.new_zeros((len(idx), *v.shape[1:])) for k, v in gv.items()})
    pad_ro.loss_mask = torch.zeros_like(pad_ro.loss_mask)
    start = (int(ro.group_ids.max()) + 1) if n else 0
    pad_ro.group_ids = torch.arange(start, start + len(pad_ro), device=pad_ro.group_ids.device)
    parts = [(ro, rw), (pad_ro, pad_rw)] if n else [(pad_ro, pad_rw)]
    step.ro = cat_rollouts([p[0] for p in parts], m.tokenizer.pad_token_id)
    step.rewards = cat_rewards([p[1] for p in parts])
    step.group_values = RowValues.cat([gv, pad_gv] if n else [pad_gv])
    step.real = torch.cat([real, torch.zeros(target - n, dtype=torch.bool, device=real.device)])
