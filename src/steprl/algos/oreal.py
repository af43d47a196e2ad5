"""OREAL: Outcome REwArd-based reinforcement Learning (Lyu et al., 2025).

    each step: n samples per prompt; R = +1 correct / -1 wrong (a truncated response is wrong)
               A = RLOO (or GRPO) of R over the whole group, before any filtering
               keep one random positive and one random negative per prompt (all-right / all-wrong groups go)
               token RM (policy trunk + zero-initialised scalar head): logits w_t; prefix mean c_t -> p = σ(c_t)
               w+ = max(2p - 1, 0), w- = max(1 - 2p, 0)
               L = Σ_pos w+ · NLL · A / N_pos  -  η Σ_neg ρ · A w- / N_neg  +  β Σ k3(π_ref, π_θ) / N_all
               one optimiser step of π_θ (frozen for the first ``actor_freeze_steps``), then one of the token RM
               on BCE(σ(mean_t w_t), R > 0)

``N_pos``, ``N_neg``, ``N_all`` are the step's global token counts of positive, negative and all trajectories,
so the loss does not depend on micro-batching; the whole filtered batch is one optimiser update.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.aux_model import AuxOptimizers
from steprl.algos.base import Rewards, RLModule
from steprl.algos.step import RowValues, Step
from steprl.config import ConfigError, node_defaults
from steprl.models.heads import ScalarHead
from steprl.rollout.types import Rollouts
from steprl.utils import dist as D


class OREAL(AuxOptimizers, RLModule):
    kl_in_reward_supported = False  # its advantages are its own: a KL reward would be dropped

    def __init__(self, *args, oreal: dict | None = None, token_rm: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        oreal_defaults, rm_defaults = node_defaults("oreal", "oreal"), node_defaults("oreal", "token_rm")
        for name, given, defaults in (("oreal", oreal, oreal_defaults), ("token_rm", token_rm, rm_defaults)):
            unknown = set(given or {}) - set(defaults)
            if unknown:
                raise ConfigError(f"algo.{name} has unknown keys {sorted(unknown)}; valid: {sorted(defaults)}")
        self.oreal_cfg = {**oreal_defaults, **(oreal or {})}
        self.rm_cfg = {**rm_defaults, **(token_rm or {})}
        if self.oreal_cfg["shaping"] not in core.OREAL_SHAPINGS:
            raise ConfigError(f"algo.oreal.shaping={self.oreal_cfg['shaping']!r} is not one of "
                              f"{list(core.OREAL_SHAPINGS)}")
        if self.oreal_cfg["kl_target"] not in ("ref", "old"):
            raise ConfigError(f"algo.oreal.kl_target={self.oreal_cfg['kl_target']!r} is not one of ['ref', 'old']")
        b = self.batch_cfg
        if b["ppo_epochs"] != 1 or b["minibatch_size"] != b["prompts_per_step"] * b["samples_per_prompt"]:
            raise ConfigError("OREAL makes one on-policy optimiser update per step: set batch.ppo_epochs=1 and "
                              "batch.minibatch_size = batch.prompts_per_step x batch.samples_per_prompt "
                              f"(got {b['ppo_epochs']} and {b['minibatch_size']})")
        if self.oreal_cfg["pair_filter"] and self.filter_cfg["max_refill_rounds"]:
            raise ConfigError("algo.filters.max_refill_rounds must be 0 with algo.oreal.pair_filter=true "
                              "(refill counts whole groups; OREAL keeps pairs)")
        if self.kl_cfg["in_reward"]:
            raise ConfigError("algo.kl.in_reward must be false for OREAL (its KL is a loss term)")
        # token RM: the policy's trunk with a zero-initialised bias-free scalar head, one logit per token
        self.token_rm = ScalarHead(self.policy, bias=False) if self.rm_cfg["enabled"] else None

    def aux_modules(self) -> list[str]:
        return ["token_rm"]

    def make_aux_optimizers(self):
        if self.token_rm is None:
            return {}
        c = self.rm_cfg
        opt = torch.optim.AdamW(self.token_rm.parameters(), lr=c["lr"], weight_decay=c["weight_decay"],
                                betas=tuple(c["betas"]))
        return {"rm_optimizer": opt, "rm_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda)}

    # ------------------------------------------------------------------------------------ rewards, pairs
    def group_values(self, ro: Rollouts, rw: Rewards) -> RowValues:
        truncated = torch.tensor([f == "length" for f in ro.finish_reason])
        R = core.oreal_rewards(rw.correct, truncated, self.oreal_cfg["signed_rewards"])
        A = core.oreal_shaped_advantage(R, ro.group_ids.to(R.device), self.oreal_cfg["shaping"])
        return RowValues(oreal_R=R, oreal_A=A)

    def keep(self, ro: Rollouts, rw: Rewards, gv: RowValues) -> torch.Tensor:
        keep = super().keep(ro, rw, gv)
        if not self.oreal_cfg["pair_filter"]:
            return keep
        pairs = core.oreal_pair_select(gv["oreal_R"].cpu(), ro.group_ids.cpu(), self.shuffler)
        kept = pairs[torch.isin(pairs, keep.cpu())]
        self.metrics.add("oreal/pair_groups", len(kept) / 2)
        return kept.to(keep.device)

    def advantages(self, step: Step):
        return step.group_values["oreal_A"][:, None] * step.ro.loss_mask, None

    # ------------------------------------------------------------------------------------ the update
    @torch.no_grad()
    def prepare(self, step: Step) -> dict:
        ro = step.ro
        mask = ro.loss_mask.bool()
        if self.token_rm is not None:
            logits = self.rm_logits(ro, grad=False)
            w_pos, w_neg = core.oreal_importance_weights(logits, mask)
        else:
            w_pos = w_neg = mask.float()
        positive = step.group_values["oreal_R"] > 0
        counts = [float(mask[positive].sum()), float(mask[~positive].sum()), float(mask.sum())]
        if D.is_distributed():  # the step's global token counts (each rank back-propagates its share)
            counts = D.all_reduce(counts).tolist()
        return {"w_pos": w_pos, "w_neg": w_neg, "positive": positive,
                "n_pos": counts[0], "n_neg": counts[1], "n_all": counts[2]}

    def actor_frozen(self) -> bool:
        return self.token_rm is not None and self.global_step < self.rm_cfg["actor_freeze_steps"]

    def policy_frozen(self) -> bool:
        """The token RM warms up first (``actor_freeze_steps``): no policy update, its schedule still advances."""
        frozen = self.actor_frozen()
        self.metrics.mean("oreal/actor_frozen", float(frozen))
        return frozen

    def policy_loss(self, mb: Rollouts, logp: torch.Tensor, ent: torch.Tensor, adv: torch.Tensor, extras: dict,
                    num_tokens, num_seqs: int):
        """OREAL's objective (its own normalisation by the step's positive / negative / all token counts)."""
        o, mask = self.oreal_cfg, mb.loss_mask.float()
        ref = mb.ref_logp if o["kl_target"] == "ref" else (mb.old_logp if mb.old_logp is not None else logp.detach())
        loss, parts = core.oreal_policy_loss(
            logp, adv, extras["positive"], mask, extras["w_pos"], extras["w_neg"], extras["n_pos"], extras["n_neg"],
            extras["n_all"], ref_logp=ref, eta=o["eta"], pos_factor=o["pos_factor"], pos_mult_adv=o["pos_mult_adv"],
            kl_coef=self.kl_cfg["coef"], kl_kind=self.kl_cfg["estimator"], kl_clamp=self.kl_cfg["clamp"])
        sums = {"train/entropy": core.masked_sum(ent.detach(), mask), "train/clip_frac": torch.zeros(()),
                "tokens": mask.sum(), **{f"oreal/loss_{k}": v for k, v in parts.items()}}
        if ref is not None:
            sums["train/kl"] = core.masked_sum(core.kl_penalty(logp.detach(), ref, self.kl_cfg["estimator"],
                                                                           self.kl_cfg["clamp"]), mask)
        return loss, {k: float(v) for k, v in sums.items()}

    # ------------------------------------------------------------------------------------ token RM
    def rm_logits(self, ro: Rollouts, grad: bool) -> torch.Tensor:
        mbs = self.batch_cfg["micro_batch_size"]
        self.token_rm.train(grad)
        with torch.set_grad_enabled(grad):
            return torch.cat([self.token_rm.response_scores(ro.select(torch.arange(i, min(i + mbs, len(ro)))), head_on_all=False)
                              for i in range(0, len(ro), mbs)])

    def after_update(self, step: Step) -> None:
        """One optimiser step of the token RM on BCE(σ(mean_t w_t), R > 0), after the policy's."""
        ro, R = step.ro, step.group_values["oreal_R"]
        self.metrics.mean("oreal/pos_frac", float((R > 0).float().mean()) if len(R) else 0.0)
        if self.token_rm is None or step.skipped:
            return
        m = {}
        c, mbs, N = self.rm_cfg, self.batch_cfg["micro_batch_size"], len(ro)
        opt, sched = self.aux["rm_optimizer"], self.aux["rm_scheduler"]
        labels = (R > 0).float()
        self.token_rm.train()
        means = []
        n_seq = self.global_rows(torch.arange(N, device=labels.device), step.real)  # real rows of every rank

        def micro_losses():
            for i in range(0, N, mbs):
                mid = torch.arange(i, min(i + mbs, N), device=labels.device)
                mb = ro.select(mid)
                logits = self.token_rm.response_scores(mb, head_on_all=False)
                msk = mb.loss_mask.float()
                means.append(((logits.detach() * msk).sum(-1) / msk.sum(-1).clamp_min(1)))
                yield core.oreal_rm_loss(logits, mb.loss_mask, labels[mid], num_seqs=n_seq)

        # one step over the batch: gradients averaged over ranks
        loss_sum, _, _ = self.aux_update(opt, self.token_rm, micro_losses(), c["max_grad_norm"])
        if D.is_distributed():
            loss_sum = float(D.all_reduce([loss_sum])[0])
        sched.step()
        mean = torch.cat(means)
        m["oreal/rm_loss"] = loss_sum
        m["oreal/rm_acc"] = float(core.prm_pairwise_acc(mean, labels, ro.group_ids))
        m["oreal/rm_lr"] = sched.get_last_lr()[0]
        self.metrics.write(m)
