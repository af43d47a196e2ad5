"""PC-GRPO / PuzzleCraft (Samsung AI Center Toronto, arXiv 2512.14944 v2).

    each step: G rollouts per puzzle prompt; r_i = puzzle reward (binary, Jigsaw graded)
               [CARE]  p̄_i = exp(mean log π_ema over the answer tokens); r_i += 0.5·acc_i·1[accurate, confident]
               A_i = r_i − mean_g r                 (``scale_by_std``: / (std_g + 1e-4), as VLM-R1 / CARE's code)
               d = mean_g acc;  dπ = normalised entropy of the chosen options (Rotation, PatchFit)
                                    or (#distinct answers − 1)/(G − 1) (Jigsaw)
               w = λ·d(1−d)·dπ^γ   per group, no gradient, not renormalised (λ = 4, γ = 0.5; γ = 0: v1 4d(1−d))
               loss = w · PPO-clip(A), seq-mean-token-mean (Eq. 2), β = 0
               [CARE]  every 10 steps: π_ema ← 0.995·π_ema + 0.005·π_θ
    RAC (reasoning-answer consistency) is a diagnostic: ``steprl.callbacks.RACMonitor``.

The weight multiplies the group's loss term; the PPO-clip surrogate is positively homogeneous in the advantage
(min(ρ·wA, clip(ρ)·wA) = w·min(ρA, clip(ρ)A) for w ≥ 0), so it is applied to the advantages. The math is in
``steprl.core.pc_grpo``. Tasks that are not puzzles (no ``task.parse``) use the distinct-answer dispersion on
``task.extract_answer``.
"""
from __future__ import annotations

import copy

import torch

from steprl import core
from steprl.algos.base import Rewards, RLModule
from steprl.algos.spans import token_offsets, token_pieces
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.core import pc_grpo as pc
from steprl.rollout.types import Rollouts, Sample

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


class PCGRPO(RLModule):
    """``curriculum``: enabled, lam, gamma. ``care``: enabled, coef, conf_cap, margin, acc_floor, ema_decay,
    ema_every. ``scale_by_std``: divide the centred rewards by the group std (+1e-4)."""

    kl_in_reward_supported = False  # its advantages are its own: a KL reward would be dropped


    def __init__(self, *args, curriculum: dict | None = None, care: dict | None = None,
                 scale_by_std: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.curriculum = {**node_defaults("pc_grpo", "curriculum"), **(curriculum or {})}
        self.care = {**node_defaults("pc_grpo", "care"), **(care or {})}
        self.scale_by_std = bool(scale_by_std)
        if self.curriculum["gamma"] < 0 or self.curriculum["lam"] < 0:
            raise ConfigError(f"algo.curriculum.lam and gamma must be >= 0, got {self.curriculum}")
        if not 0 <= self.care["ema_decay"] <= 1 or self.care["ema_every"] < 1:
            raise ConfigError(f"algo.care.ema_decay must be in [0, 1] and ema_every >= 1, got {self.care}")
        self.ema_policy = None
        if self.care["enabled"]:  # CARE's reference: an EMA of the policy, not the frozen start
            self.ema_policy = copy.deepcopy(self.policy).eval().requires_grad_(False)

    # ------------------------------------------------------------------------------------ rewards
    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        rw = super().score(ro, samples)
        rows = [samples[i] for i in ro.sample_idx.tolist()]
        keys, num_opts, distinct = self.answer_keys(rows, ro.texts)
        rw.seq["pc_key"], rw.seq["pc_num_options"], rw.seq["pc_distinct"] = keys, num_opts, distinct
        return rw

    def answer_keys(self, rows: list[Sample], texts: list[str]):
        """Per row: the selected option (choice puzzles, −1 if unusable) or an answer id (Jigsaw and other
        tasks: equal answers share an id), the number of options K, and whether the distinct-answer
        dispersion applies."""
        parse = getattr(self.task, "parse", None)
        ids: dict = {}
        keys, num_opts, distinct = [], [], []
        for s, text in zip(rows, texts):
            kind = s.meta.get("puzzle")
            try:
                key = parse(s, text) if parse is not None and kind else self.task.extract_answer(text)
            except Exception:  # noqa: BLE001 - a parser must not stop training; unusable answer
                key = None
            if kind in ("rotation", "patchfit"):
                keys.append(-1 if key is None else int(key))
                num_opts.append(int(s.meta["num_options"]))
                distinct.append(False)
            else:
                keys.append(-1 if key is None else ids.setdefault(key, len(ids)))
                num_opts.append(max(1, int(s.meta.get("num_options", 1))))
                distinct.append(True)
        return torch.tensor(keys), torch.tensor(num_opts), torch.tensor(distinct)

    # ------------------------------------------------------------------------------------ CARE confidence
    def prepare(self, step: Step) -> dict[str, torch.Tensor]:
        """CARE: the EMA policy's confidence p̄_i in each row's answer."""
        extras = super().prepare(step)
        if self.ema_policy is not None:
            logp = self.logp_pass(self.ema_policy, step.ro)
            extras["confidence"] = pc.answer_confidence(logp, self.answer_mask(step.ro))
        return extras

    def answer_mask(self, ro: Rollouts) -> torch.Tensor:
        """1 on the response tokens between the last ``<answer>`` and its ``</answer>`` (the answer span)."""
        out = torch.zeros_like(ro.response_ids, dtype=torch.bool)
        for r, (text, offsets) in enumerate(token_offsets(ro, token_pieces(self))):
            n = len(offsets)
            a = text.rfind(ANSWER_OPEN)
            if a < 0:
                continue
            start = a + len(ANSWER_OPEN)
            end = text.find(ANSWER_CLOSE, start)
            end = len(text) if end < 0 else end
            if end > start:
                out[r, :n] = core.char_spans_to_step_ids(offsets, [(start, end)], n) == 0
        return out

    # ------------------------------------------------------------------------------------ advantages
    def advantages(self, step: Step):
        ro, rewards, conf = step.ro, step.rewards, step.extras.get("confidence")
        acc, gids = rewards.outcome, ro.group_ids
        r, stats = acc, {}
        if conf is not None:
            c = self.care
            bonus = pc.care_bonus(acc, conf.to(acc.device), gids, c["coef"], c["conf_cap"], c["margin"],
                                  c["acc_floor"])
            r = acc + bonus
            stats.update({"pc_grpo/care_bonus": float(bonus.mean()),
                          "pc_grpo/care_bonus_frac": float((bonus > 0).float().mean()),
                          "pc_grpo/ref_confidence": float(conf.mean())})
        adv = core.grpo_advantage(r, gids, "group", 1e-4) if self.scale_by_std else core.drgrpo_advantage(r, gids)
        keys = rewards.seq["pc_key"].to(acc.device)
        d = pc.group_difficulty(acc, gids)
        dpi = torch.where(rewards.seq["pc_distinct"].to(acc.device), pc.distinct_dispersion(keys, gids),
                          pc.choice_dispersion(torch.where(rewards.seq["pc_distinct"].to(acc.device),
                                                           torch.zeros_like(keys), keys),
                                               gids, rewards.seq["pc_num_options"].to(acc.device)))
        cu = self.curriculum
        w = pc.curriculum_weight(d, dpi, cu["lam"], cu["gamma"]) if cu["enabled"] else torch.ones_like(d)
        first = _first_rows(gids)  # one entry per group
        stats.update({"pc_grpo/curriculum_weight": float(w[first].mean()), "pc_grpo/weight_max": float(w[first].max()),
                      "pc_grpo/zero_weight_frac": float((w[first] == 0).float().mean()),
                      "pc_grpo/difficulty": float(d[first].mean()), "pc_grpo/dispersion": float(dpi[first].mean()),
                      "pc_grpo/invalid_answers": float((keys < 0).float().mean())})
        self.metrics.write(stats)
        return (adv * w)[:, None] * ro.loss_mask.to(adv.dtype), None

    def after_update(self, step: Step) -> None:
        """CARE: every ``ema_every`` steps, π_ema <- decay·π_ema + (1 - decay)·π_θ."""
        if step.skipped:
            return
        if self.ema_policy is not None and self.global_step % self.care["ema_every"] == 0:
            pc.ema_update_(list(self.ema_policy.parameters()), list(self.policy.parameters()), self.care["ema_decay"])


def _first_rows(group_ids: torch.Tensor) -> torch.Tensor:
    _, inv = torch.unique(group_ids, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), len(group_ids), dtype=torch.long, device=group_ids.device)
    return first.scatter_reduce_(0, inv, torch.arange(len(group_ids), device=group_ids.device), "amin")
