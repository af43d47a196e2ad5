"""RLModule: one RL step as the design's data flow, with hooks an algorithm overrides.

    rollout -> score -> filter (+ refill) -> log-probs -> advantages -> PPO epochs over minibatches
    (micro-batched, global token counts) -> after_update -> metrics

An algorithm subclasses this and overrides only what its paper changes: ``score`` (rewards),
``advantages``, ``extra_loss`` (extra terms of the objective) and ``after_update`` (PRM / critic steps,
buffers). The math lives in ``steprl.core``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from steprl import core
from steprl.algos.advantage import AdvantageInputs, GroupAdvantage
from steprl.algos.policy import PolicyModule, Timer
from steprl.algos.logprob import LogProbPasses
from steprl.config import ConfigError, node_defaults
from steprl.models.lora import freeze_copy
from steprl.rewards import RewardPipeline
from steprl.rollout.agent import agent_metrics
from steprl.rollout.types import Rollouts, Sample, cat_rollouts
from steprl.utils import dist as D


@dataclass
class Rewards:
    """What the reward pipeline and the algorithm's ``score`` produce for N rollouts."""

    outcome: torch.Tensor                 # [N] verifier score in [0, 1]
    correct: torch.Tensor                 # [N] 1.0 where the outcome is fully correct
    step: torch.Tensor | None = None      # [N, S] per-step scores, NaN where none
    token: torch.Tensor | None = None     # [N, T] dense per-token rewards
    extras: dict[str, Any] = field(default_factory=dict)
    seq: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row [N, ...] values that follow the
    #                                      rows through filters and refill (e.g. advantages of the full group)

    def select(self, idx: torch.Tensor) -> "Rewards":
        pick = lambda v: None if v is None else v[idx.to(v.device)]  # noqa: E731
        return Rewards(pick(self.outcome), pick(self.correct), pick(self.step), pick(self.token), self.extras,
                       {k: pick(v) for k, v in self.seq.items()})

    def to(self, device) -> "Rewards":
        move = lambda v: None if v is None else v.to(device)  # noqa: E731
        return Rewards(move(self.outcome), move(self.correct), move(self.step), move(self.token), self.extras,
                       {k: move(v) for k, v in self.seq.items()})


def _cat_rewards(parts: list[Rewards]) -> Rewards:
    if len(parts) == 1:
        return parts[0]
    step = None
    if all(p.step is not None for p in parts):
        width = max(p.step.shape[1] for p in parts)
        step = torch.cat([torch.nn.functional.pad(p.step, (0, width - p.step.shape[1]), value=float("nan"))
                          for p in parts])
    keys = set(parts[0].seq).intersection(*(p.seq for p in parts[1:]))
    seq = {k: torch.cat([p.seq[k] for p in parts]) for k in keys}
    return Rewards(torch.cat([p.outcome for p in parts]), torch.cat([p.correct for p in parts]), step, None,
                   parts[0].extras, seq)


class RLModule(LogProbPasses, PolicyModule):
    """The shared RL engine.

    ``behaviour_logp_from_rollout``: an algorithm that trains on stored (off-policy) rollouts sets it, so the
    ``old_logp`` its ``collect`` put on the rollouts (the behaviour policy's) is kept as the denominator of the
    importance ratio instead of being recomputed with the current policy.

    ``batch``: prompts_per_step, samples_per_prompt (G), minibatch_size (sequences per optimiser update),
    micro_batch_size (sequences per forward), ppo_epochs.
    ``loss``: clip_eps_low, clip_eps_high, dual_clip, agg (token-mean | seq-mean-token-mean |
    seq-mean-token-sum | seq-mean-token-sum-norm), norm_len, entropy_coef, logprob_temperature (the temperature
    of the loss's log-probs; None: the rollout engine's, as verl and TRL).
    ``kl``: coef, estimator (k1 | k2 | k3 | abs | k3+), in_reward, clamp (k3's verl clamps; false: plain k3).
    ``filters``: zero_variance, acc_band ([lo, hi] or null), drop_truncated, max_refill_rounds.
    ``reward``: num_workers, timeout_s, mp_context.
    """

    behaviour_logp_from_rollout: bool = False
    # whether this algorithm's advantages can take the KL in the reward (they go through RLModule.advantages, or
    # handle it themselves); with False, ``algo.kl.in_reward=true`` and ``algo.kl.coef > 0`` stop at start-up
    kl_in_reward_supported: bool = True

    def __init__(self, model: dict, task, rollout, optim: dict, batch: dict, advantage=None,
                 loss: dict | None = None, kl: dict | None = None, filters: dict | None = None,
                 reward: dict | None = None, seed: int = 0, val: dict | None = None,
                 total_steps: int | None = None, log_samples: int = 4, max_consecutive_skips: int | None = 10):
        super().__init__(model, task, rollout, optim, seed=seed, val=val, total_steps=total_steps,
                         max_consecutive_skips=max_consecutive_skips)
        self.batch_cfg = dict(batch)
        self.advantage_fn = advantage or GroupAdvantage()
        self.loss_cfg = {**node_defaults("grpo", "loss"), **(loss or {})}
        t = self.loss_cfg["logprob_temperature"]
        if t is not None and not float(t) > 0:
            raise ConfigError(f"algo.loss.logprob_temperature must be > 0 or null (the rollout's), got {t}")
        if t is not None and getattr(rollout, "tis_cap", None) is not None and float(t) != rollout.temperature:
            raise ConfigError(f"rollout.tis_cap corrects the engine's log-probs, sampled at rollout.temperature="
                              f"{rollout.temperature}, but algo.loss.logprob_temperature={t}: set them equal (or null)")
        self.kl_cfg = {**node_defaults("grpo", "kl"), **(kl or {})}
        self.filter_cfg = {**node_defaults("grpo", "filters"), **(filters or {})}
        self.reward_cfg = {"num_workers": 0, "timeout_s": 10.0, **(reward or {})}
        self.check_kl_in_reward()
        self.log_samples = log_samples
        self.ref_policy = None
        if self.kl_cfg["coef"] > 0 and not self.adapter_reference:
            self.ref_policy = freeze_copy(self.policy)
        self.rewards_fn: RewardPipeline | None = None
        self.last_samples: list[dict] = []

    # ------------------------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if self.rewards_fn is None:
            self.rewards_fn = RewardPipeline(self.task.verify, getattr(self.task, "score_steps", None),
                                             **self.reward_cfg)

    def teardown(self, stage: str) -> None:
        if self.rewards_fn is not None:
            self.rewards_fn.close()
            self.rewards_fn = None

    def check_kl_in_reward(self) -> None:
        """Refuse the KL in the reward where the algorithm or its advantage estimator would drop it."""
        kc = self.kl_cfg
        if not (kc["in_reward"] and kc["coef"] > 0):
            return
        est = type(self.advantage_fn).__name__
        if not self.kl_in_reward_supported:
            why = f"{type(self).__name__} computes its own advantages and has no KL reward"
        elif not getattr(self.advantage_fn, "takes_kl_reward", False):
            why = f"the advantage estimator {est} cannot take a KL reward"
        else:
            return
        raise ConfigError(f"algo.kl.in_reward=true with algo.kl.coef={kc['coef']}: {why}; set algo.kl.in_reward=false "
                          f"(the KL as a loss term) or algo.kl.coef=0")

    @property
    def adapter_reference(self) -> bool:
        """LoRA policy: the reference is the base model, i.e. the policy with its adapters disabled (no copy)."""
        return hasattr(self.policy, "disable_adapter") and self.kl_cfg["coef"] > 0

    @property
    def has_reference(self) -> bool:
        return self.ref_policy is not None or self.adapter_reference

    def reference_logp(self, ro: Rollouts) -> torch.Tensor:
        """Log-probs of the rollouts under the reference policy."""
        if self.ref_policy is not None:
            return self.logp_pass(self.ref_policy, ro)
        with self.policy.disable_adapter():
            return self.logp_pass(self.policy, ro)

    def updates_total(self) -> int:
        b = self.batch_cfg
        per_step = b["ppo_epochs"] * math.ceil(b["prompts_per_step"] * b["samples_per_prompt"] / b["minibatch_size"])
        return (self.total_steps or 1) * per_step

    # ------------------------------------------------------------------------------------ hooks
    def rollout(self, samples: list[Sample]) -> Rollouts:
        ro = self.generate([s.prompt for s in samples], n=self.batch_cfg["samples_per_prompt"],
                           images=[s.images for s in samples])
        ro.step_ids = self.token_step_ids(ro)
        return ro

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        """Outcome (and step) scores from the task's verifiers, run by the bounded reward pipeline."""
        res = self.rewards_fn([samples[i] for i in ro.sample_idx.tolist()], ro.texts)
        self._reward_counts["reward/errors"] += res.errors
        self._reward_counts["reward/timeouts"] += res.timeouts
        outcome = res.outcome.float()
        return Rewards(outcome=outcome, correct=(outcome >= 1.0 - 1e-6).float(), step=res.step)

    def advantages(self, ro: Rollouts, rewards: Rewards, values: torch.Tensor | None = None):
        token = rewards.token if rewards.token is not None else torch.zeros_like(ro.loss_mask, dtype=torch.float)
        return self.advantage_fn(AdvantageInputs(rewards.outcome, token, ro.loss_mask.float(), ro.group_ids, values,
                                                 self.batch_reduce(), self.real_rows(ro), self.kl_rewards(ro)))

    def kl_rewards(self, ro: Rollouts) -> torch.Tensor | None:
        """``-coef * kl`` [N, T] on the loss tokens when the KL is in the reward (verl), else None."""
        kc = self.kl_cfg
        if not (kc["coef"] > 0 and kc["in_reward"]):
            return None
        kl = core.kl_penalty(ro.old_logp, ro.ref_logp, kc["estimator"], kc["clamp"])
        return -kc["coef"] * kl * ro.loss_mask

    def batch_reduce(self):
        """What batch statistics (whitening, batch norms) reduce over ranks with: ``dist.all_reduce`` when
        several ranks train, None in one process (statistics of the local batch, as before)."""
        return D.all_reduce if D.is_distributed() else None

    def real_rows(self, ro: Rollouts) -> torch.Tensor | None:
        """Mask [N] of the rows that are not padding from :meth:`pad_to_global` (None when none was added)."""
        real = getattr(self, "_real_rows", None)
        return real if real is not None and len(real) == len(ro) and not bool(real.all()) else None

    def extra_loss(self, mb: Rollouts, logp: torch.Tensor, extras: dict) -> torch.Tensor | None:
        """Additional per-token loss terms [n, T] for a micro-batch (aggregated like the policy loss)."""
        return None

    def prepare(self, ro: Rollouts) -> dict[str, torch.Tensor]:
        """Per-token tensors an algorithm needs before the update (e.g. critic values)."""
        return {}

    def after_update(self, ro: Rollouts, rewards: Rewards) -> dict[str, float]:
        return {}

    # ------------------------------------------------------------------------------------ pieces
    def token_step_ids(self, ro: Rollouts) -> torch.Tensor:
        """Step index of each response token from the task's splitter (-1 outside any step)."""
        splitter = getattr(self.task, "splitter", None)
        if splitter is None:
            return ro.step_ids
        pieces = self._token_pieces()
        out = torch.full_like(ro.response_ids, -1)
        for r, (ids, m) in enumerate(zip(ro.response_ids.tolist(), ro.response_mask.tolist())):
            n = int(sum(m))
            toks = [pieces(t) for t in ids[:n]]
            text, offsets, pos = "".join(toks), [], 0
            for piece in toks:
                offsets.append((pos, pos + len(piece)))
                pos += len(piece)
            out[r, :n] = core.char_spans_to_step_ids(offsets, splitter.split(text, tile=True), n)
        return out

    def _token_pieces(self):
        if not hasattr(self, "_piece_cache"):
            self._piece_cache: dict[int, str] = {}
        cache, tok = self._piece_cache, self.tokenizer
        special = set(tok.all_special_ids)

        def piece(t: int) -> str:
            if t not in cache:
                cache[t] = "" if t in special else tok.decode([t])
            return cache[t]
        return piece

    def collect(self, samples: list[Sample], timer: Timer) -> tuple[Rollouts, Rewards, dict[str, float]]:
        """Rollouts and rewards for this step's prompts, with group filters and refill from extra prompts."""
        f, G = self.filter_cfg, self.batch_cfg["samples_per_prompt"]
        want = len(samples)
        kept_ro, kept_rw, pool, stats = [], [], [], {"filter/groups": 0.0, "filter/dropped": 0.0,
                                                     "filter/all_correct": 0.0, "filter/all_wrong": 0.0}
        batch, rounds, kept = samples, 0, 0
        while True:
            base = len(pool)
            pool.extend(batch)
            with timer("rollout"):
                ro = self.rollout(batch)
            ro.sample_idx = ro.sample_idx + base
            with timer("reward"):
                rw = self.score(ro, pool)
            keep = self.keep_groups(ro, rw, stats)
            kept_ro.append(ro.select(keep))
            kept_rw.append(rw.select(keep))
            if rounds == 0:
                self._unfiltered = (ro, rw)
            kept += int(keep.numel()) // G
            rounds += 1
            more = kept < want and rounds <= f["max_refill_rounds"]
            if not self._lockstep():
                if not more:
                    break
                batch = self.trainer.datamodule.draw(want - kept)
                continue
            # sharded model: every rank runs the same generate calls, so all draw the largest deficit
            deficit = int(D.all_reduce([float(want - kept if more else 0)], "max")[0])
            if deficit == 0:
                break
            batch = self.trainer.datamodule.draw(deficit)
            if not more:  # this rank has enough: roll out in step with the others, keep nothing, until all have
                while deficit:
                    with timer("rollout"):
                        self.rollout(batch)
                    deficit = int(D.all_reduce([0.0], "max")[0])
                    batch = self.trainer.datamodule.draw(deficit) if deficit else batch
                break
        ro, rw = cat_rollouts(kept_ro, self.tokenizer.pad_token_id), _cat_rewards(kept_rw)
        if len(ro) > want * G:  # refill overshoot: keep the first `want` groups
            ro, rw = ro.select(torch.arange(want * G)), rw.select(torch.arange(want * G))
        stats["filter/refill_rounds"] = float(rounds - 1)
        return ro, rw, stats

    def _lockstep(self) -> bool:
        """True when ranks must run the same forward calls (an FSDP-sharded policy)."""
        from steprl.utils.fsdp import is_sharded

        return D.is_distributed() and is_sharded(self.policy)

    def pad_to_global(self, ro: Rollouts, rw: Rewards) -> tuple[Rollouts, Rewards, torch.Tensor]:
        """Several ranks: give every rank the same number of rows (filters can keep different numbers), so
        all run the same forwards, backwards and optimiser updates. Padding rows repeat real rows (or the
        unfiltered rollouts of a rank that kept none) with an empty loss mask and their own group ids, so they
        add nothing to the loss, the counts or the metrics. Returns the rows and a mask of the real ones."""
        n = len(ro)
        target = int(D.all_reduce([float(n)], "max")[0]) if D.is_distributed() else n
        real = torch.ones(n, dtype=torch.bool, device=ro.response_ids.device)
        if target == n:
            return ro, rw, real
        src_ro, src_rw = (ro, rw) if n else (self._unfiltered[0].to(self.device), self._unfiltered[1].to(self.device))
        idx = torch.arange(target - n) % len(src_ro)
        pad_ro, pad_rw = src_ro.select(idx), src_rw.select(idx)
        pad_ro.loss_mask = torch.zeros_like(pad_ro.loss_mask)
        start = (int(ro.group_ids.max()) + 1) if n else 0
        pad_ro.group_ids = torch.arange(start, start + len(pad_ro), device=pad_ro.group_ids.device)
        parts = [(ro, rw), (pad_ro, pad_rw)] if n else [(pad_ro, pad_rw)]
        out_ro = cat_rollouts([p[0] for p in parts], self.tokenizer.pad_token_id)
        out_rw = _cat_rewards([p[1] for p in parts])
        return out_ro, out_rw, torch.cat([real, torch.zeros(target - n, dtype=torch.bool, device=real.device)])

    def keep_groups(self, ro: Rollouts, rw: Rewards, stats: dict) -> torch.Tensor:
        """Row indices of the groups that pass the filters (all rows when no filter is on)."""
        f = self.filter_cfg
        gids = ro.group_ids.to(rw.outcome.device)  # rollouts may be on the GPU, verifier scores are not
        truncated = None
        if f.get("drop_truncated"):
            truncated = torch.tensor([r == "length" for r in ro.finish_reason], dtype=torch.bool,
                                     device=gids.device)
            stats["filter/truncated"] = stats.get("filter/truncated", 0.0) + float(
                torch.unique(gids[truncated]).numel())
        keep = core.group_filter(rw.outcome, rw.correct, gids, f["zero_variance"], f["acc_band"],
                                 truncated=truncated)
        acc = core.group_mean_std(rw.correct, gids)[0]
        groups = lambda rows: float(torch.unique(gids[rows]).numel())  # noqa: E731
        stats["filter/groups"] += groups(torch.ones_like(keep))
        stats["filter/dropped"] += groups(~keep)
        stats["filter/all_correct"] += groups(acc == 1)
        stats["filter/all_wrong"] += groups(acc == 0)
        return torch.nonzero(keep).flatten()

    # ------------------------------------------------------------------------------------ the step
    def training_step(self, batch: list[Sample], batch_idx: int):
        timer, b = Timer(), self.batch_cfg
        self._reward_counts = {"reward/errors": 0, "reward/timeouts": 0}
        t0 = time.perf_counter()
        if not getattr(self, "_probed", False):
            self.probe_engine()
        ro, rewards, fstats = self.collect(batch, timer)
        if self._trainer is not None and self.trainer.datamodule is not None:
            self.trainer.datamodule.mark_consumed(batch)
        ro, rewards = ro.to(self.device), rewards.to(self.device)
        metrics = {**fstats, **self._reward_counts}
        metrics.update(self.rollout_metrics(*self._unfiltered))
        ro, rewards, self._real_rows = self.pad_to_global(ro, rewards)
        if len(ro) == 0:  # every group (on every rank) filtered out: nothing to learn from this step
            self.clip_and_step(last=True)
            metrics["train/skipped_steps"] = 1.0
            self._log(metrics, timer, t0, ro)
            return
        n_updates = b["ppo_epochs"] * math.ceil(len(ro) / self.local_minibatch_size())
        with timer("logprob"):
            if n_updates > 1 and not (self.behaviour_logp_from_rollout and ro.old_logp is not None):
                ro.old_logp = self.logp_pass(self.policy, ro)
            if self.has_reference:
                ro.ref_logp = self.reference_logp(ro)
            if ro.old_logp is None and self.kl_cfg["in_reward"] and self.has_reference:
                ro.old_logp = self.logp_pass(self.policy, ro)
            if ro.engine_logp is not None and self.logprob_temperature() == self.engine.temperature:
                # engine / trainer mismatch: logged every step, corrected by TIS (same temperature only)
                if ro.old_logp is None:
                    ro.old_logp = self.logp_pass(self.policy, ro)
                metrics["rollout/logprob_diff"] = float(core.logprob_diff(ro.old_logp, ro.engine_logp, ro.loss_mask))
            extras = self.prepare(ro)
        adv, returns = self.advantages(ro, rewards, extras.get("values"))
        extras["advantages"], extras["returns"] = adv, returns
        with timer("update"):
            metrics.update(self.update(ro, adv, extras, n_updates))
        metrics.update(self.after_update(ro, rewards))
        self._log(metrics, timer, t0, ro)

    PROBE_PROMPT = "Question: What is 12 + 30?\nAnswer:"

    def probe_engine(self) -> float | None:
        """Once, before training: sample from the rollout engine on a fixed prompt and compare its log-probs
        with the trainer's; fail loudly when the mean gap exceeds ``rollout.probe_tol`` (a wrong weight push,
        dtype or tokenizer mismatch would otherwise train on garbage silently)."""
        self._probed = True
        tol = getattr(self.engine, "probe_tol", None)
        if tol is None or not getattr(self.engine, "return_logprobs", False):
            return None
        prompt = getattr(self.engine, "probe_prompt", self.PROBE_PROMPT)
        ro = self.generate([prompt], n=2).to(self.device)
        diff = float(core.logprob_diff(self.logp_pass(self.policy, ro, temperature=self.engine.temperature),
                                       ro.engine_logp, ro.loss_mask))
        if not diff <= tol:
            raise RuntimeError(f"rollout engine probe: mean |logp_trainer - logp_engine| = {diff:.4f} on a fixed "
                               f"prompt exceeds rollout.probe_tol={tol} (weights not synced, or a dtype / tokenizer "
                               f"/ sampling-settings mismatch between {type(self.engine).__name__} and the trainer)")
        if D.rank() == 0:
            print(f"[steprl] rollout engine probe: mean |logp_trainer - logp_engine| = {diff:.2e} (tol {tol})")
        return diff

    def micro_loss(self, mb: Rollouts, adv: torch.Tensor, extras: dict, num_tokens, num_seqs: int):
        """The loss of one micro-batch, normalised by the minibatch's global counts, and its token sums."""
        lc, kc = self.loss_cfg, self.kl_cfg
        mask = mb.loss_mask.float()
        logp, ent = self.forward_logp(self.policy, mb, entropy=True if lc["entropy_coef"] else "detached")
        old = mb.old_logp if mb.old_logp is not None else logp.detach()
        pg, clipped = core.ppo_clip_loss(logp, old, adv, lc["clip_eps_low"], lc["clip_eps_high"], lc["dual_clip"])
        tis_cap = getattr(self.engine, "tis_cap", None)
        if tis_cap is not None and mb.engine_logp is not None and mb.old_logp is not None:
            # truncated importance sampling: the engine sampled from pi_engine, the update assumes pi_old
            pg = pg * core.tis_weight(mb.old_logp, mb.engine_logp, tis_cap, mask)
        tok_loss = pg - lc["entropy_coef"] * ent
        sums = {"train/entropy": core.masked_sum(ent.detach(), mask),
                "train/clip_frac": core.masked_sum(clipped.float(), mask), "tokens": mask.sum()}
        if mb.ref_logp is not None:
            kl = core.kl_penalty(logp, mb.ref_logp, kc["estimator"], kc["clamp"])
            if kc["coef"] > 0 and not kc["in_reward"]:
                tok_loss = tok_loss + kc["coef"] * kl
            sums["train/kl"] = core.masked_sum(kl.detach(), mask)
        extra = self.extra_loss(mb, logp, extras)
        if extra is not None:
            tok_loss = tok_loss + extra
        loss = core.aggregate_loss(tok_loss, mask, lc["agg"], num_tokens=num_tokens, num_seqs=num_seqs,
                                   norm_len=lc["norm_len"])
        return loss, {k: float(v) for k, v in sums.items()}

    def local_minibatch_size(self) -> int:
        """Sequences of one optimiser update on this rank: ``batch.minibatch_size`` is global."""
        return max(1, self.batch_cfg["minibatch_size"] // D.world_size())

    def update(self, ro: Rollouts, adv: torch.Tensor, extras: dict, n_updates: int) -> dict[str, float]:
        """PPO epochs over shuffled minibatches; each minibatch is one optimiser update, accumulated over
        micro-batches whose losses use the minibatch's GLOBAL token / sequence counts (summed over ranks), so
        the loss and the update equal those of one process on the same global batch. DDP / FSDP average the
        gradients over ranks, so each rank back-propagates ``world_size x`` its share."""
        b = self.batch_cfg
        sums: dict[str, float] = {}
        done = 0
        world = D.world_size()
        real = getattr(self, "_real_rows", None)
        if real is None or len(real) != len(ro):
            real = torch.ones(len(ro), dtype=torch.bool, device=ro.loss_mask.device)
        mbsize = self.local_minibatch_size()
        for _ in range(b["ppo_epochs"]):
            order = torch.randperm(len(ro), generator=self.shuffler)
            for start in range(0, len(ro), mbsize):
                idx = order[start:start + mbsize].to(self.device)
                n_tok, n_seq = self.global_counts(ro.loss_mask[idx], real[idx])
                loss_total = 0.0
                for m0 in range(0, len(idx), b["micro_batch_size"]):
                    mid = idx[m0:m0 + b["micro_batch_size"]]
                    mb_extras = {k: (v[mid] if isinstance(v, torch.Tensor) else v) for k, v in extras.items()}
                    loss, stats = self.micro_loss(ro.select(mid), adv[mid], mb_extras, n_tok, n_seq)
                    if world > 1:  # every rank must join the gradient reduction; a NaN is caught at the step
                        self.manual_backward(loss * world)
                        if not torch.isfinite(loss):
                            p = next(self.policy.parameters())
                            p.grad = torch.full_like(p, float("nan"))
                    elif torch.isfinite(loss):
                        self.manual_backward(loss)
                    else:  # poison the gradient so clip_and_step skips this update and counts it
                        p = next(self.policy.parameters())
                        p.grad = torch.full_like(p, float("nan"))
                    loss_total += float(loss.detach())
                    for k, v in stats.items():
                        self._acc(sums, k, v)
                done += 1
                norm, ok = self.clip_and_step(last=done == n_updates)
                self._acc(sums, "train/loss", loss_total)
                self._acc(sums, "train/grad_norm", norm if math.isfinite(norm) else 0.0)
                for name, v in list(self.last_grad_norms.items())[1:]:  # e.g. PPO's critic, clipped on its own
                    self._acc(sums, f"train/{name}_grad_norm", v if math.isfinite(v) else 0.0)
                self._acc(sums, "train/nonfinite_skips", float(not ok))
        if world > 1:  # token-weighted means over the global batch
            keys = [k for k in ("train/entropy", "train/clip_frac", "train/kl", "tokens") if k in sums]
            for k, v in zip(keys, D.all_reduce([sums[k] for k in keys]).tolist()):
                sums[k] = v
        tokens = max(sums.pop("tokens", 1.0), 1.0)
        out = {k: sums[k] / tokens for k in ("train/entropy", "train/clip_frac", "train/kl") if k in sums}
        out["train/loss"] = sums["train/loss"] / n_updates
        out["train/grad_norm"] = sums["train/grad_norm"] / n_updates
        for k in [k for k in sums if k.endswith("_grad_norm") and k != "train/grad_norm"]:
            out[k] = sums[k] / n_updates
        out["train/nonfinite_skips"] = sums["train/nonfinite_skips"]
        out["train/lr"] = self.optimizers().param_groups[0]["lr"]
        return out

    @staticmethod
    def global_counts(loss_mask: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Loss tokens (clamped to >= 1) and real sequences of a minibatch, summed over ranks."""
        n_tok = loss_mask.sum()
        n_seq = int(real.sum())
        if D.is_distributed():
            tot = D.all_reduce(torch.stack([n_tok.double().cpu(), torch.tensor(float(n_seq), dtype=torch.float64)]))
            n_tok, n_seq = tot[0].to(loss_mask.device, loss_mask.dtype), int(tot[1])
        return n_tok.clamp(min=1), max(n_seq, 1)

    @staticmethod
    def _acc(d: dict, k: str, v: float) -> None:
        d[k] = d.get(k, 0.0) + v

    def rollout_metrics(self, ro: Rollouts, rw: Rewards) -> dict[str, float]:
        lens = ro.response_mask.sum(-1).float()
        m = {"train/reward": float(rw.outcome.mean()), "train/acc": float(rw.correct.mean()),
             "train/response_len": float(lens.mean()),
             "train/truncated_frac": sum(r == "length" for r in ro.finish_reason) / max(1, len(ro))}
        m.update(agent_metrics(ro))  # multi-turn rollouts: turns, tool calls, format errors, over-length
        if rw.step is not None and torch.isfinite(rw.step).any():
            s = rw.step[torch.isfinite(rw.step)]
            m["train/step_acc"] = float((s >= 1.0 - 1e-6).float().mean())
        self.last_samples = [{"prompt": self._prompt_text(ro, i), "response": ro.texts[i],
                              "reward": float(rw.outcome[i]), "finish": ro.finish_reason[i],
                              "steps": None if rw.step is None else [round(x, 3) for x in rw.step[i].tolist()
                                                                     if not math.isnan(x)]}
                             for i in range(min(self.log_samples, len(ro)))]
        return m

    def _prompt_text(self, ro: Rollouts, i: int) -> str:
        return self.tokenizer.decode(ro.prompt_ids[i][ro.prompt_mask[i].bool()].tolist(), skip_special_tokens=True)

    def _log(self, metrics: dict, timer: Timer, t0: float, ro: Rollouts) -> None:
        elapsed = time.perf_counter() - t0
        metrics.update(timer.times)
        metrics["time/step"] = elapsed
        n_tok = float(self._unfiltered[0].prompt_mask.sum() + self._unfiltered[0].response_mask.sum())
        metrics["perf/tokens_per_s"] = n_tok / max(elapsed, 1e-9)
        self.log_metrics(metrics, bar=("train/reward", "train/acc"))
