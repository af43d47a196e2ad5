"""RAC, reasoning-answer consistency (PC-GRPO spec §4.6): a diagnostic, never a reward.

Every ``every_n_steps`` training steps, ``num_samples`` of the step's rollouts are drawn uniformly (own seeded
RNG) and a judge says whether the ``<think>`` rationale explicitly supports the emitted ``<answer>`` (binary).
``pc_grpo/rac`` is the moving average over the last ``window`` steps (the paper uses 100), ``pc_grpo/rac_step``
the current step's mean. The judge is any ``steprl.rewards.judges`` backend (a judge config as in ``conf/judge/*.yaml``,
``judge: {_target_: steprl.rewards.judges.openai_judge, openai: {...}}``,
the paper uses Qwen2.5-VL-72B) prompted with :data:`RAC_TEMPLATE` (the paper's prompt, Fig. S5, was not
recovered: this is the spec's reconstruction) and parsed by :func:`parse_rac` (first 0/1 digit); with
``judge: null`` (or the ``rule_judge``) a rule decides: the rationale supports the answer when the answer text
appears in it. Unparsed or failed judgements are left out of the average and counted
(``pc_grpo/rac_unjudged``). The judge sees text only: the puzzle's image is not sent.

The training step returns ``rac_candidates`` in its outputs: ``[(Sample, response text), ...]`` of its latest rollouts
(every RL algorithm's, from ``RLModule.step_outputs``).
"""
from __future__ import annotations

import math
import random
import re
from collections import deque

import lightning as L

from steprl.rewards.judges import JudgeRequest, JudgeResult, StepJudge, build_judge

RAC_TEMPLATE = ("You are given a puzzle, a model's reasoning and its final answer. Does the reasoning explicitly "
                "support this exact final answer (not merely the correct answer)? Reply with 1 (supports) or 0 "
                "(does not).\n\nPuzzle:\n{question}\n\nReasoning:\n{reasoning}\n\nFinal answer: {answer}\n")
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|<answer>|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def split_reasoning(response: str) -> tuple[str, str | None]:
    """``(rationale, answer)`` of a response: the ``<think>`` text (or everything before the last ``<answer>``)
    and the last ``<answer>`` content (``None`` without one)."""
    answers = _ANSWER_RE.findall(response)
    answer = answers[-1].strip() if answers else None
    m = _THINK_RE.search(response)
    if m is not None:
        reasoning = m.group(1)
    else:
        cut = response.rfind("<answer>")
        reasoning = response[:cut] if cut >= 0 else response
    return reasoning.strip(), answer


def parse_rac(reply: str, req: JudgeRequest) -> JudgeResult:
    """The first 0 or 1 digit of the reply is the verdict."""
    m = re.search(r"[01]", reply or "")
    if m is None:
        return JudgeResult(step_scores=[], final=None, parsed=False)
    return JudgeResult(step_scores=[], final=float(m.group(0)))


def _norm(s: str) -> str:
    """Lower case, single spaces, no spaces around commas (``"1, 3,4"`` -> ``"1,3,4"``)."""
    return re.sub(r"\s*,\s*", ",", re.sub(r"\s+", " ", s)).strip().lower()


class RuleRACJudge(StepJudge):
    """The rule: 1 when the answer occurs in the rationale as a whole token sequence (case-insensitive, spaces
    around commas ignored), 0 otherwise (also when there is no answer)."""

    def score(self, requests):
        out = []
        for req in requests:
            fields = req.meta.get("fields", {})
            reasoning, answer = _norm(fields.get("reasoning", "")), fields.get("answer")
            ok = bool(answer) and re.search(r"(?<![0-9a-z])" + re.escape(_norm(answer)) + r"(?![0-9a-z])",
                                            reasoning) is not None
            out.append(JudgeResult(step_scores=[], final=float(ok)))
        return out


class RACMonitor(L.Callback):
    def __init__(self, judge: dict | StepJudge | None = None, every_n_steps: int = 1, num_samples: int = 8, window: int = 100,
                 seed: int = 0, prefix: str = "pc_grpo"):
        if every_n_steps < 1 or num_samples < 1 or window < 1:
            raise ValueError("callbacks.rac_monitor: every_n_steps, num_samples and window must be >= 1")
        is_judge = isinstance(judge, StepJudge)
        self.judge_cfg = judge if judge and not is_judge else None
        self.every_n_steps, self.num_samples, self.window = every_n_steps, num_samples, window
        self.seed, self.prefix = seed, prefix
        self.judge: StepJudge | None = judge if is_judge else None
        self.history: deque[tuple[float, int]] = deque(maxlen=window)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.judge is None:
            self.judge = self.build(self.judge_cfg)

    @staticmethod
    def build(cfg: dict | None) -> StepJudge:
        if not cfg or cfg.get("_target_") == "steprl.rewards.judges.rule_judge":
            return RuleRACJudge()
        return build_judge(cfg, template=RAC_TEMPLATE, parser=parse_rac)

    def requests(self, rows) -> list[JudgeRequest]:
        out = []
        for sample, text in rows:
            reasoning, answer = split_reasoning(text or "")
            question = re.sub(r"<\|[a-z_]+\|>", "", sample.prompt).strip()  # drop the image placeholder tokens
            out.append(JudgeRequest(question=question, response=text or "", steps=[reasoning],
                                    reference=sample.answer,
                                    meta={"fields": {"reasoning": reasoning, "answer": answer or "(none)"}}))
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        rows = list((outputs or {}).get("rac_candidates") or [])  # what RLModule.training_step returned
        if not rows or step % self.every_n_steps:
            return
        rng = random.Random(f"{self.seed}-{step}")
        picked = rng.sample(rows, min(self.num_samples, len(rows)))
        results = self.judge.score(self.requests(picked))
        verdicts = [r.final for r in results if r.parsed and r.final is not None and math.isfinite(r.final)]
        self.history.append((float(sum(verdicts)), len(verdicts)))
        total, count = sum(h[0] for h in self.history), sum(h[1] for h in self.history)
        metrics = {f"{self.prefix}/rac_unjudged": float(len(picked) - len(verdicts))}
        if verdicts:
            metrics[f"{self.prefix}/rac_step"] = sum(verdicts) / len(verdicts)
        if count:
            metrics[f"{self.prefix}/rac"] = total / count
        metrics.update({f"{self.prefix}/{k}": v for k, v in self.judge.metrics().items()})
        pl_module.log_metrics(metrics)

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque([tuple(h) for h in state.get("history", [])], maxlen=self.window)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.judge is not None:
            self.judge.close()
