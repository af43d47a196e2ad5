"""TP-GRPO (He et al., 2025, "Good Learners Think Their Thinking").

    for each round (``round_steps`` RL steps of prompts, rolled out with the current policy):
        outcome   r^o = ±1 from the verifier; r̂ = group-normalised r^o; r_c = α · acc_G     (ability-adaptive)
        Stage I   a step judge labels steps from intrinsic signals, without re-solving:
                    correct solution:   C / I   (self-reflections traced back to the error they fix)
                    incorrect solution: M / U   (steps adopted into the wrong answer / the rest)
                  the answer step is C (correct) or M (incorrect); unlabelled steps get no penalty (C / U)
        Stage II  contiguous same-label steps -> thoughts; rewards on thought ends (core.tp_grpo):
                    Â_{i,t} = Σ_{thought ends ≥ t} reward  =  C: r̂, I: r̂ - r_c, M: r̂, U: 0   (Props. 1-2)
        keep the solutions with a non-zero advantage; store the rollout-time log-probs (behaviour policy)
        train on the buffer, ``prompts_per_step x G`` rows per step: PPO-clipped ratio π_θ / π_behaviour + β·KL

``round_steps = 1`` is on-policy (one round per step; whole groups whose advantages are all 0 are dropped).
With the ``rule`` judge on ``task=arith`` the labels come from the exact step checker: in a correct solution a
wrong step is I; in an incorrect one the first wrong step and every step after it carry the error into the
answer (M), the correct prefix is U (``incorrect_rule: propagate``; ``direct`` marks only the wrong steps M).
"""
from __future__ import annotations

import math

import torch

from steprl import core
from steprl.algos.base import RLModule, Rewards
from steprl.algos.collect import ReplayRounds
from steprl.algos.step import RowValues, Step
from steprl.config import ConfigError, node_defaults
from steprl.core.tp_grpo import (
    thought_ids_from_steps,
    tp_grpo_direct_advantages,
    tp_grpo_outcome,
    tp_grpo_thought_rewards,
    tp_grpo_token_rewards,
)
from steprl.rewards.judges import TEMPLATES, JudgeRequest, JudgeResult, build_judge
from steprl.rollout.types import Rollouts, Sample

_BAD = {"C": 0.0, "U": 0.0, "I": 1.0, "M": 1.0}


def step_bad_flags(res: JudgeResult, n_steps: int, correct: bool, answer_from: int,
                   incorrect_rule: str = "propagate") -> list[float]:
    """Per-step 0/1 "bad" flags (I in a correct solution, M in an incorrect one) from a judgement.

    Categorical ``labels`` win; otherwise step scores < 0.5 are bad (``propagate``: in an incorrect solution every
    step from the first bad one on). Unlabelled / NaN steps and unparsed judgements are not bad (spec §2.3). Steps
    ``answer_from..`` are the answer: C (0) when correct, M (1) when not.
    """
    if not res.parsed:
        bad = [0.0] * n_steps
    elif res.labels is not None:
        bad = [_BAD.get(lab, 0.0) if lab is not None else 0.0 for lab in (list(res.labels) + [None] * n_steps)[:n_steps]]
    else:
        scores = (list(res.step_scores) + [math.nan] * n_steps)[:n_steps]
        bad = [1.0 if (not math.isnan(s) and s < 0.5) else 0.0 for s in scores]
        if not correct and incorrect_rule == "propagate" and 1.0 in bad:
            first = bad.index(1.0)
            bad = [0.0] * first + [1.0] * (n_steps - first)
    for j in range(max(0, answer_from), n_steps):
        bad[j] = 0.0 if correct else 1.0
    return bad


class TPGRPO(RLModule):
    kl_in_reward_supported = False  # its advantages are its own: a KL reward would be dropped

    behaviour_logp_from_rollout = True

    def __init__(self, *args, tp_grpo: dict | None = None, **kwargs):
        t = {**node_defaults("tp_grpo", "tp_grpo"), **(tp_grpo or {})}
        if t["placement"] not in ("cumulative", "direct"):
            raise ConfigError(f"algo.tp_grpo.placement={t['placement']!r} is not one of ['cumulative', 'direct']")
        if t["incorrect_rule"] not in ("propagate", "direct"):
            raise ConfigError(f"algo.tp_grpo.incorrect_rule={t['incorrect_rule']!r} is not one of "
                             f"['propagate', 'direct']")
        if t["judge_template"] not in TEMPLATES:
            raise ConfigError(f"algo.tp_grpo.judge_template={t['judge_template']!r} is not one of {list(TEMPLATES)}")
        if not (isinstance(t["round_steps"], int) and t["round_steps"] >= 1):
            raise ConfigError(f"algo.tp_grpo.round_steps={t['round_steps']!r} must be an integer >= 1")
        judge = (kwargs.get("reward") or {}).get("step")  # the step scorer: reward.step (the judge= group)
        if not judge:
            raise ConfigError("algo=tp_grpo needs a step judge: judge=rule (task=arith) | hf | openai")
        super().__init__(*args, **kwargs)  # checked first: a bad option fails before the model loads
        self.tp, self.judge_cfg, self.judge = t, dict(judge), None
        if t["round_steps"] > 1:  # off-policy rounds: the rows with a non-zero advantage, served over R steps
            self.collector = ReplayRounds(t["round_steps"], "tp_nonzero" if t["drop_zero_adv"] else None, "tp_grpo")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.judge is None:
            tmpl, parser = TEMPLATES[self.tp["judge_template"]]
            self.judge = build_judge(self.judge_cfg, task=self.task, template=tmpl, parser=parser)

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        if self.judge is not None:
            self.judge.close()

    # ---------------------------------------------------------------------------------- Stage I + II
    def _answer_from(self, text: str, spans: list[tuple[int, int]]) -> int:
        """Index of the first answer step: steps starting after ``</think>``, else the last step."""
        k = text.find(self.tp["answer_tag"]) if self.tp["answer_tag"] else -1
        if k >= 0:
            after = [j for j, (a, _) in enumerate(spans) if a >= k + len(self.tp["answer_tag"])]
            if after:
                return after[0]
        return len(spans) - 1

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        rw = super().score(ro, samples)
        rows = [samples[i] for i in ro.sample_idx.tolist()]
        splitter = self.task.splitter
        spans = [splitter.split(t) for t in ro.texts]
        correct = rw.correct.bool().tolist()
        reqs = [JudgeRequest(question=s.prompt, response=t, steps=[t[a:b] for a, b in sp], reference=s.answer,
                             meta={"sample": s, "correct": c,
                                   "fields": {"verdict": "correct" if c else "wrong"}})
                for s, t, sp, c in zip(rows, ro.texts, spans, correct)]
        results = self.judge.score(reqs)
        W = self.fixed_width(ro)
        bad = torch.full((len(ro), W), float("nan"))  # Stage I labels, NaN past each row's steps
        for i, (res, sp, c) in enumerate(zip(results, spans, correct)):
            flags = step_bad_flags(res, len(sp), c, self._answer_from(ro.texts[i], sp), self.tp["incorrect_rule"])
            bad[i, :len(flags)] = torch.tensor(flags)
        rw.seq["tp_bad"] = bad
        for k, v in self.judge.metrics().items():  # counts, summed over the step's rounds
            self.metrics.add(k, v)
        return rw

    def fixed_width(self, ro: Rollouts) -> int:
        """A width every round's rows share (per-row values follow the rows through refill concatenation)."""
        return max(ro.response_ids.shape[1], int(getattr(self.engine, "max_new_tokens", 0) or 0))

    def group_values(self, ro: Rollouts, rw: Rewards) -> RowValues:
        """Stage II on whole groups: r̂ and r_c from the group's outcomes, thought rewards, advantages."""
        bad = rw.seq["tp_bad"]
        labelled = (~torch.isnan(bad)).any(0).nonzero()
        bad = bad[:, :max(int(labelled.max()) + 1 if len(labelled) else 0, 1)]
        step_ids = ro.step_ids.cpu()
        mask = ro.loss_mask.float().cpu()
        tids, tbad, num = thought_ids_from_steps(step_ids, bad)
        rhat, r_c = tp_grpo_outcome(rw.correct.cpu(), ro.group_ids.cpu(), self.tp["alpha"], self.tp["adaptive"])
        rewards = tp_grpo_thought_rewards(tbad, num, rw.correct.cpu(), rhat, r_c, self.tp["literal_final"])
        token = tp_grpo_token_rewards(tids, rewards, rhat, mask)
        cum = core.discounted_returns(token, mask)
        direct = tp_grpo_direct_advantages(tids, tbad, rw.correct.cpu(), rhat, r_c, mask)
        adv = cum if self.tp["placement"] == "cumulative" else direct
        W = self.fixed_width(ro)
        pad = lambda x: torch.nn.functional.pad(x, (0, W - x.shape[1]))  # noqa: E731 (fixed width: refill concat)
        return RowValues(tp_adv=pad(adv), tp_nonzero=(adv.abs() * mask).amax(-1) > 1e-8, tp_thoughts=num.float(),
                         tp_bad_steps=torch.nan_to_num(bad, nan=0.0).sum(-1),
                         tp_table_gap=(cum - direct).abs().amax(-1))

    def keep(self, ro: Rollouts, rw: Rewards, gv: RowValues) -> torch.Tensor:
        keep = super().keep(ro, rw, gv)
        if not self.tp["drop_zero_adv"] or self.tp["round_steps"] > 1:  # off-policy rounds drop rows instead
            return keep
        g = ro.group_ids.cpu()
        live = torch.zeros_like(g, dtype=torch.bool)
        for gid in torch.unique(g[gv["tp_nonzero"].cpu()]):
            live |= g == gid
        dropped = torch.unique(g[keep.cpu()][~live[keep.cpu()]]).numel()
        self.metrics.add("tp_grpo/zero_adv_groups", float(dropped))
        return keep[live[keep.cpu()].to(keep.device)]

    def advantages(self, step: Step):
        ro, gv = step.ro, step.group_values
        real = step.real.to(step.rewards.outcome.device)
        if bool(real.any()):
            v = gv.select(real.nonzero().flatten())
            self.metrics.write({"tp_grpo/thoughts": float(v["tp_thoughts"].mean()),
                                "tp_grpo/bad_steps": float(v["tp_bad_steps"].mean()),
                                "tp_grpo/table_gap": float(v["tp_table_gap"].max())})
        T = ro.response_ids.shape[1]
        return gv["tp_adv"][:, :T].to(ro.loss_mask.device) * ro.loss_mask, None
