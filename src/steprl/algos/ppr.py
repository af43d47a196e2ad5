"""PPR: principle process rewards with ReNorm (Xu et al., 2025), PPO + GAE as in the reference code.

    turns     k = 1..K of a trajectory; turn k's segment = its model text + the observation after it, and its
              boundary b_k = the segment's last token (the last turn ends at the last response token)
    r_p,k     = S/M from the principle judge's <final_score>S,M</final_score> on turn k < K, given the user
              message + all earlier segments (invalid reply: 0); the last turn is not judged
    r_o       = exact-match outcome
    ReNorm    reward[b_k] = r_p,k + r_o - β (k < K);  reward[b_K] = r_o  (r_o - β/2 with center_final)
    rewards   - kl_coef · k1 KL on model tokens (reward-side);  GAE (γ = λ = 1) over all response tokens,
              observations included; advantages whitened over the response; the policy loss skips observations

``PPRGRPO`` is the critic-free variant: the ReNorm turn rewards are normalised within each group (GRPO process
supervision, Shao et al. 2024 §4.1.3) and each token's advantage is the sum of the normalised rewards at or after
it. With ``judge=rule`` on a task with an exact step checker (arith), steps come from the task's splitter and one
request per trajectory scores all of them; with a generative judge (``judge=hf|openai|scripted``) every
non-final turn is one request with the principle prompt.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.advantage import AdvantageInputs
from steprl.algos.base import RLModule, Rewards
from steprl.algos.ppo import PPO
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.core.ppr import (place_at_positions, process_group_advantage, renorm_step_rewards,
                             turn_end_positions)
from steprl.rewards.judges import JudgeRequest, RuleStepJudge, build_judge
from steprl.rewards.principle import PRINCIPLE_TEMPLATE, parse_principle_reply, user_message
from steprl.rollout.types import Rollouts, Sample


class _PrincipleRewards:
    """Scoring shared by both variants: judge the non-final turns, ReNorm, rewards on turn boundaries."""

    def _init_ppr(self, ppr: dict | None) -> None:
        judge = self.reward_parts.step  # the step scorer: reward.step (the judge= group)
        if not judge:
            raise ConfigError("algo=ppr needs a judge: judge=rule (task=arith) | hf | openai | scripted")
        self.judge_cfg, self.judge = dict(judge), None
        self.pp = {**node_defaults("ppr", "ppr"), **(ppr or {})}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.judge is None:
            self.judge = build_judge(self.judge_cfg, task=self.task, template=PRINCIPLE_TEMPLATE,
                                     parser=parse_principle_reply)

    def teardown(self, stage: str) -> None:
        if self.judge is not None:
            self.judge.close()
        super().teardown(stage)

    def turn_boundaries(self, ro: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ends [N, S], K [N])``; a response with no step at all gets one turn ending at its last token."""
        ends = turn_end_positions(ro.step_ids, ro.response_mask)
        if ends.shape[1] == 0:
            ends = torch.full((len(ro), 1), -1, dtype=torch.long, device=ro.step_ids.device)
        K = (ends >= 0).sum(-1)
        none = K == 0
        ends[none, 0] = core.last_token_index(ro.response_mask)[none]
        return ends, (ends >= 0).sum(-1)

    def judge_turns(self, ro: Rollouts, samples: list[Sample], ends: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """``[N, S]`` process rewards S/M of turns 1..K-1 (NaN: the last turn, invalid judgements, none)."""
        N, S = ends.shape
        out = torch.full((N, S), float("nan"))
        rows = [i for i in range(N) if int(K[i]) >= 2]
        if not rows:
            return out
        picked = [samples[i] for i in ro.sample_idx.tolist()]
        ids, ends_l = ro.response_ids.tolist(), ends.tolist()
        segs = {i: self._segments(ids[i], ends_l[i][:int(K[i])]) for i in rows}
        reqs, where = [], []
        if isinstance(self.judge, RuleStepJudge):  # exact step checker: one request per trajectory
            for i in rows:
                s = picked[i]
                reqs.append(JudgeRequest(question=s.prompt, response=ro.texts[i], steps=segs[i],
                                         reference=s.answer, meta={"sample": s}))
                where.append((i, None))
        else:  # principle judge: one request per non-final turn, with the user message + earlier segments
            for i in rows:
                query = user_message(picked[i].prompt)
                for k in range(int(K[i]) - 1):
                    reqs.append(JudgeRequest(question=query + "".join(segs[i][:k]), response=segs[i][k],
                                             steps=[segs[i][k]], meta={"turn": k}))
                    where.append((i, k))
        results = self.judge.score(reqs)
        invalid = 0
        for (i, k), res in zip(where, results):
            invalid += int(not res.parsed)
            scores = res.step_scores if k is None else res.step_scores[:1]
            for j, v in enumerate(scores):
                col = j if k is None else k
                if col < int(K[i]) - 1 and v == v:  # non-final turns only; NaN stays NaN
                    out[i, col] = float(v)
        judged = out[:, :max(S - 1, 0)]
        fin = torch.isfinite(judged)
        self.metrics.write({"ppr/judged_turns": float(sum(int(K[i]) - 1 for i in rows)),
                             "ppr/invalid_judgements": float(invalid),
                             "ppr/process_reward": float(judged[fin].mean()) if fin.any() else 0.0,
                             "ppr/turns": float(K.float().mean())})
        for k, v in self.judge.metrics().items():  # counts, summed over the step's rounds
            self.metrics.add(k, v)
        return out

    def _segments(self, ids: list[int], ends: list[int]) -> list[str]:
        out, start = [], 0
        for e in ends:
            out.append(self.tokenizer.decode(ids[start:e + 1], skip_special_tokens=True))
            start = e + 1
        return out

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        """Outcome (exact match) + the judge's process rewards ``step`` [N, S] (S/M per non-final turn, NaN
        elsewhere) + the ReNormed rewards on the turn boundaries ``token`` [N, T]."""
        rw = super().score(ro, samples)
        ends, K = self.turn_boundaries(ro)
        process = self.judge_turns(ro, samples, ends.cpu(), K.cpu())
        return Rewards(outcome=rw.outcome, correct=rw.correct, step=process.to(rw.outcome.device),
                       token=self.renorm_tokens(ro, process, rw.outcome).to(rw.outcome.device))

    def renorm_steps(self, ro: Rollouts, process: torch.Tensor, outcome: torch.Tensor):
        """``(ReNormed step rewards [N, S], boundaries [N, S])`` of the rows of ``ro``."""
        ends, K = self.turn_boundaries(ro)
        ends, K = ends.cpu(), K.cpu()
        S = ends.shape[1]
        p = torch.full((len(ro), S), float("nan"))
        w = min(S, process.shape[1])
        p[:, :w] = process[:, :w].cpu()
        return renorm_step_rewards(p, outcome.cpu(), K, self.pp["beta"], self.pp["center_final"]), ends

    def renorm_tokens(self, ro: Rollouts, process: torch.Tensor, outcome: torch.Tensor) -> torch.Tensor:
        steps, ends = self.renorm_steps(ro, process, outcome)
        return place_at_positions(steps, ends, ro.response_ids.shape[1])



class PPR(_PrincipleRewards, PPO):
    """PPR with PPO + a critic + GAE over every response token (observations included), as in the code."""

    def __init__(self, *args, ppr: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ppr(ppr)

    @torch.no_grad()
    def prepare(self, step: Step):
        """Critic values on every response token: GAE runs over the observations too."""
        ro, mbs = step.ro, self.batch_cfg["micro_batch_size"]
        vals = [self.values(ro.select(torch.arange(i, min(i + mbs, len(ro))))) for i in range(0, len(ro), mbs)]
        return {"values": torch.cat(vals) * ro.response_mask}

    def advantages(self, step: Step):
        """GAE over the ReNorm token rewards (+ the KL reward: k1 in the reference code) on every response token."""
        ro, token = step.ro, step.rewards.token.to(step.ro.response_mask.device)
        zeros = torch.zeros(len(ro), device=token.device)  # the outcome is already on the last boundary
        mask, rows = ro.response_mask.float(), step.real_rows
        if rows is not None:  # padding rows (several ranks) keep their response mask: leave them out of the stats
            mask = mask * rows[:, None].to(mask.dtype)
        return self.advantage_fn(AdvantageInputs(zeros, token, mask, ro.group_ids, step.extras.get("values"),
                                                 self.batch_reduce(), rows, step.kl_rewards))


class PPRGRPO(_PrincipleRewards, RLModule):
    """Critic-free PPR: ReNorm turn rewards normalised per group, summed over the turns at or after a token."""

    kl_in_reward_supported = False  # the turn rewards are group-normalised: no per-token KL reward

    def __init__(self, *args, ppr: dict | None = None, eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ppr(ppr)
        self.eps = eps

    def advantages(self, step: Step):
        ro, rewards = step.ro, step.rewards
        steps, ends = self.renorm_steps(ro, rewards.step, rewards.outcome)
        dev = ro.response_mask.device
        adv = process_group_advantage(steps.to(dev), ends.to(dev), ro.group_ids, ro.response_mask.float(), self.eps)
        return adv * ro.loss_mask, None
