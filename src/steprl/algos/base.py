"""RLModule: one RL step as the papers draw it, each stage a hook with GRPO's behaviour by default.

    collect        the ``collector`` gathers the step's rows (default :class:`GroupCollector`: per round
                   ``rollout`` -> ``score`` -> ``group_values`` -> ``keep``, refilled from fresh prompts)
    rollout(samples) -> Rollouts           G samples per prompt from the rollout engine
    score(ro, samples) -> Rewards          verifiers / judges: outcome, step and token rewards
    group_values(ro, rw) -> RowValues      values that need whole groups, before any filter (step.group_values)
    keep(ro, rw, gv) -> row indices        group filters (zero variance, accuracy band, truncation, pairs)
    (engine: step_logprobs)                old, reference and engine log-probs, before the stages below
    prepare(step) -> dict                  per-row tensors into step.extras (critic values, ...)
    dense_rewards(step)                    per-token rewards: the KL in the reward (once), a token scorer
    advantages(step) -> (adv, returns)     the ``advantage=`` estimator on outcome + dense rewards
    policy_loss(mb, logp, ent, adv, extras, n_tok, n_seq)   PPO clip (+ TIS, entropy, KL) + extra_loss
    extra_loss(mb, logp, extras)           additional per-token terms (a critic's value loss, ...)
    policy_frozen() -> bool                skip the policy's update this step (its schedule still advances)
    after_update(step)                     models trained after the policy (PRM, reward model, SFT phases);
                                           called on a skipped step too (``step.skipped``)

Every stage reads and fills the :class:`~steprl.algos.step.Step` and writes its metrics to ``self.metrics``
(:class:`~steprl.algos.metrics.StepMetrics`), reduced over ranks and logged once per step.
``training_step`` returns ``{"last_samples", "rac_candidates", "step", "metrics"}`` to the callbacks (Lightning's
``outputs``; ``metrics``: what this step logged).
The update: PPO epochs over shuffled minibatches (one optimiser update each), micro-batched, every loss
normalised by the minibatch's GLOBAL token / sequence counts. The math lives in ``steprl.core``.
"""
from __future__ import annotations

import math
import time

import torch

from steprl import core
from steprl.algos.advantage import AdvantageInputs, GroupAdvantage, check_kl_in_reward
from steprl.algos.collect import GroupCollector, filter_groups, pad_to_global
from steprl.algos.logprob import LogProbPasses, row_tokens
from steprl.algos.metrics import StepLogging, StepMetrics, add_update, update_metrics
from steprl.algos.policy import PolicyModule
from steprl.algos.probe import EngineProbe
from steprl.algos.spans import token_step_ids
from steprl.algos.step import Rewards, RowValues, Step, cat_rewards  # noqa: F401  (cat_rewards: re-exported)
from steprl.config import ConfigError, node_defaults
from steprl.models import packing
from steprl.models.lora import freeze_copy
from steprl.rewards import RewardPipeline
from steprl.rewards.components import build_reward
from steprl.rollout.types import Rollouts, Sample
from steprl.utils import dist as D


class RLModule(StepLogging, EngineProbe, LogProbPasses, PolicyModule):
    """The shared RL engine.

    ``behaviour_logp_from_rollout``: an algorithm that trains on stored (off-policy) rollouts sets it, so the
    ``old_logp`` its collector put on the rollouts (the behaviour policy's) is kept as the denominator of the
    importance ratio instead of being recomputed with the current policy.

    ``batch``: prompts_per_step, samples_per_prompt (G), minibatch_size (sequences per optimiser update),
    micro_batch_size (sequences per forward), ppo_epochs.
    ``loss``: clip_eps_low, clip_eps_high, dual_clip, agg (token-mean | seq-mean-token-mean |
    seq-mean-token-sum | seq-mean-token-sum-norm), norm_len, entropy_coef, logprob_temperature (the temperature
    of the loss's log-probs; None: the rollout engine's, as verl and TRL).
    ``kl``: coef, estimator (k1 | k2 | k3 | abs | k3+), in_reward, clamp (k3's verl clamps; false: plain k3).
    ``filters``: zero_variance, acc_band ([lo, hi] or null), drop_truncated, max_refill_rounds.
    ``reward``: the step's reward components (``conf/reward/``; :mod:`steprl.rewards.components`): ``pool``
    (num_workers, timeout_s, mp_context), ``outcome`` (null: the task's verifier), ``step`` (the judge), ``token``
    (a token scorer, for an algorithm with ``takes_token_scorer``).
    """

    behaviour_logp_from_rollout: bool = False
    # whether this algorithm's advantages can take the KL in the reward (they go through RLModule.advantages, or
    # handle it themselves); with False, ``algo.kl.in_reward=true`` and ``algo.kl.coef > 0`` stop at start-up
    kl_in_reward_supported: bool = True
    # whether this algorithm's dense-rewards stage applies ``reward.token`` (PRIME); with False a token scorer in
    # the config stops at start-up instead of being built and never used
    takes_token_scorer: bool = False

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
        self.reward_parts = build_reward(reward)
        if self.reward_parts.token is not None and not self.takes_token_scorer:
            raise ConfigError(f"reward.token ({type(self.reward_parts.token).__name__}) is a token scorer, which "
                              f"{type(self).__name__} does not use: drop it (~reward/token) or use an algorithm "
                              f"that takes one (algo=prime)")
        check_kl_in_reward(self.kl_cfg, self.advantage_fn, type(self).__name__, self.kl_in_reward_supported)
        self.log_samples = log_samples
        self.ref_policy = None
        if self.kl_cfg["coef"] > 0 and not self.adapter_reference:
            self.ref_policy = freeze_copy(self.policy)
        self.rewards_fn: RewardPipeline | None = None
        self.collector = GroupCollector()
        self.metrics = StepMetrics()

    # ------------------------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if self.rewards_fn is None:
            self.rewards_fn = RewardPipeline(self.reward_parts.outcome_fn(self.task),
                                             getattr(self.task, "score_steps", None), **self.reward_parts.pool)

    def teardown(self, stage: str) -> None:
        if self.rewards_fn is not None:
            self.rewards_fn.close()
            self.rewards_fn = None

    def updates_total(self) -> int:
        b = self.batch_cfg
        per_step = b["ppo_epochs"] * math.ceil(b["prompts_per_step"] * b["samples_per_prompt"] / b["minibatch_size"])
        return (self.total_steps or 1) * per_step

    def batch_reduce(self):
        """What batch statistics (whitening, batch norms) reduce over ranks with: ``dist.all_reduce`` when
        several ranks train, None in one process (statistics of the local batch, as before)."""
        return D.all_reduce if D.is_distributed() else None

    # ------------------------------------------------------------------------------------ stage hooks
    def rollout(self, samples: list[Sample]) -> Rollouts:
        ro = self.generate([s.prompt for s in samples], n=self.batch_cfg["samples_per_prompt"],
                           images=[s.images for s in samples])
        ro.step_ids = token_step_ids(self, ro)
        return ro

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        """Outcome (and step) scores from the task's verifiers, run by the bounded reward pipeline."""
        res = self.rewards_fn([samples[i] for i in ro.sample_idx.tolist()], ro.texts)
        self.metrics.add("reward/errors", res.errors)
        self.metrics.add("reward/timeouts", res.timeouts)
        outcome = res.outcome.float()
        return Rewards(outcome=outcome, correct=(outcome >= 1.0 - 1e-6).float(), step=res.step)

    def group_values(self, ro: Rollouts, rw: Rewards) -> RowValues:
        """Values computed on whole groups before any filter, one per row (``step.group_values``; GRPO: none)."""
        return RowValues()

    def keep(self, ro: Rollouts, rw: Rewards, gv: RowValues) -> torch.Tensor:
        """Row indices of the groups that pass ``algo.filters`` (all rows when no filter is on)."""
        return filter_groups(self.filter_cfg, self.metrics, ro, rw)

    def prepare(self, step: Step) -> dict:
        """Per-row tensors an algorithm needs before the update (e.g. critic values)."""
        return {}

    def dense_rewards(self, step: Step) -> None:
        """Per-token rewards of the step: the KL in the reward (``-coef * kl`` on the loss tokens, verl), once."""
        kc, ro = self.kl_cfg, step.ro
        if kc["coef"] > 0 and kc["in_reward"]:
            step.kl_rewards = -kc["coef"] * core.kl_penalty(ro.old_logp, ro.ref_logp, kc["estimator"],
                                                            kc["clamp"]) * ro.loss_mask

    def advantages(self, step: Step):
        ro, rw = step.ro, step.rewards
        token = rw.token if rw.token is not None else torch.zeros_like(ro.loss_mask, dtype=torch.float)
        return self.advantage_fn(AdvantageInputs(rw.outcome, token, ro.loss_mask.float(), ro.group_ids,
                                                 step.extras.get("values"), self.batch_reduce(), step.real_rows,
                                                 step.kl_rewards))

    def policy_loss(self, mb: Rollouts, logp: torch.Tensor, ent: torch.Tensor, adv: torch.Tensor, extras: dict,
                    num_tokens, num_seqs: int):
        """The loss of one micro-batch, normalised by the minibatch's global counts, and its sums (token sums
        of ``train/entropy``, ``train/clip_frac``, ``train/kl`` and ``tokens``; any other key a metric sum)."""
        lc, kc = self.loss_cfg, self.kl_cfg
        mask = mb.loss_mask.float()
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

    def extra_loss(self, mb: Rollouts, logp: torch.Tensor, extras: dict) -> torch.Tensor | None:
        """Additional per-token loss terms [n, T] for a micro-batch (aggregated like the policy loss)."""
        return None

    def policy_frozen(self) -> bool:
        return False

    def after_update(self, step: Step) -> None:
        pass

    # ------------------------------------------------------------------------------------ the step
    def training_step(self, batch: list[Sample], batch_idx: int):
        step, t0 = Step(list(batch)), time.perf_counter()
        if not getattr(self, "_probed", False):
            self.probe_engine()
        for k in ("reward/errors", "reward/timeouts"):  # counted every step, 0 where no verifier call ran (PROPA)
            self.metrics.add(k, 0.0)
        self.collector.collect(self, step)
        if self._trainer is not None and self.trainer.datamodule is not None:
            self.trainer.datamodule.mark_consumed(batch)
        step.ro, step.rewards = step.ro.to(self.device), step.rewards.to(self.device)
        self.metrics.write(self.rollout_metrics(*step.unfiltered))
        pad_to_global(self, step)
        if step.skipped:  # every group (on every rank) filtered out: nothing to learn from this step
            self.clip_and_step(last=True)
            self.metrics.add("train/skipped_steps", 1.0)
        else:
            self.learn(step)
        self.after_update(step)
        return self.finish(step, t0)

    def learn(self, step: Step) -> None:
        """Log-probs, per-row tensors, dense rewards, advantages, then the update."""
        ro, timer = step.ro, step.timer
        n_updates = self.batch_cfg["ppo_epochs"] * math.ceil(len(ro) / self.local_minibatch_size())
        with timer("logprob"):
            self.step_logprobs(ro, n_updates)
            step.extras.update(self.prepare(step))
        self.dense_rewards(step)
        step.extras["advantages"], step.extras["returns"] = self.advantages(step)
        with timer("update"):
            if self.policy_frozen():  # e.g. a reward model warms up first; the policy's schedule still advances
                self.clip_and_step(last=True)
                self.metrics.write({"train/loss": 0.0, "train/grad_norm": 0.0, "train/entropy": 0.0,
                                    "train/clip_frac": 0.0, "train/nonfinite_skips": 0.0,
                                    "train/lr": self.optimizers().param_groups[0]["lr"]})
            else:
                self.update(step, n_updates)

    def micro_loss(self, mb: Rollouts, adv: torch.Tensor, extras: dict, num_tokens, num_seqs: int):
        """Forward one micro-batch through the policy and return :meth:`policy_loss`."""
        logp, ent = self.forward_logp(self.policy, mb, entropy=True if self.loss_cfg["entropy_coef"] else "detached")
        return self.policy_loss(mb, logp, ent, adv, extras, num_tokens, num_seqs)

    def zero_weight_loss(self, mb: Rollouts, adv: torch.Tensor, extras: dict, num_tokens, num_seqs: int):
        """The loss of the micro-batch ``mb`` times 0: its backward gives every parameter the policy loss reaches
        a zero gradient, so a rank with no rows left still takes part in the collectives of a micro-batch the
        other ranks run (DDP's gradient all-reduce, FSDP2's all-gathers and reduce-scatters)."""
        return self.micro_loss(mb, adv, extras, num_tokens, num_seqs)[0] * 0.0

    def local_minibatch_size(self) -> int:
        """Sequences of one optimiser update on this rank: ``batch.minibatch_size`` is global."""
        return max(1, self.batch_cfg["minibatch_size"] // D.world_size())

    def update(self, step: Step, n_updates: int) -> None:
        """PPO epochs over shuffled minibatches; each minibatch is one optimiser update, accumulated over
        micro-batches whose losses use the minibatch's GLOBAL token / sequence counts (summed over ranks), so
        the loss and the update equal those of one process on the same global batch. DDP / FSDP average the
        gradients over ranks, so each rank back-propagates ``world_size x`` its share."""
        b, ro, extras = self.batch_cfg, step.ro, step.extras
        adv = extras["advantages"]
        sums: dict[str, float] = {}
        done, world = 0, D.world_size()
        real = step.real if step.real is not None and len(step.real) == len(ro) else \
            torch.ones(len(ro), dtype=torch.bool, device=ro.loss_mask.device)
        mbsize = self.local_minibatch_size()
        tokens = row_tokens(ro)
        for _ in range(b["ppo_epochs"]):
            order = torch.randperm(len(ro), generator=self.shuffler)
            for start in range(0, len(ro), mbsize):
                idx = order[start:start + mbsize].to(self.device)
                n_tok, n_seq = D.global_counts(ro.loss_mask[idx], real[idx])
                loss_total = 0.0
                mids = packing.micro_batches(idx, tokens, b["micro_batch_size"], b.get("micro_batch_tokens"))
                step.micro_batches.append([tokens[m.cpu()].tolist() for m in mids])
                for mid in mids:
                    zero = len(mid) == 0  # the ranks agreed on more token-budget micro-batches than this one has rows
                    mid = packing.zero_weight_row(idx, tokens) if zero else mid
                    mb_extras = {k: (v[mid] if isinstance(v, torch.Tensor) else v) for k, v in extras.items()}
                    if zero:
                        self.manual_backward(self.zero_weight_loss(ro.select(mid), adv[mid], mb_extras, n_tok, n_seq))
                        continue
                    loss, stats = self.micro_loss(ro.select(mid), adv[mid], mb_extras, n_tok, n_seq)
                    if world > 1 or torch.isfinite(loss):  # every rank must join the gradient reduction
                        self.manual_backward(loss * world)
                    if not torch.isfinite(loss):  # poison the gradient so clip_and_step skips this update and counts it
                        p = next(self.policy.parameters())
                        p.grad = torch.full_like(p, float("nan"))
                    loss_total += float(loss.detach())
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                done += 1
                norm, ok = self.clip_and_step(last=done == n_updates)
                add_update(sums, loss_total, norm, ok, self.last_grad_norms)
        self.metrics.write(update_metrics(sums, n_updates, world, self.optimizers().param_groups[0]["lr"]))
        for k in [k for k in sums if not k.startswith("train/")]:  # an algorithm's loss parts: summed
            self.metrics.add(k, sums[k])
