"""DRM on-policy (Wang et al., 2025, "From <Answer> to <Think>"): GRPO whose
advantage adds a ground-truth-free, dimension-level reward of the reasoning to the answer's.

    parse     R = reasoning span, A = answer span (``<think>…</think>`` / ``<answer>…</answer>`` tags, or
              ``spans: last_step``: every step but the last / the last step); a missing span is a format
              failure -> the group's minimum R_DRM
    Conf_i    = mean_{t∈R} log π(t) + Σ_{t∈A} log π(t)              (the policy's log-probs of its own tokens)
    Rel_i     = mean of relevance(Q, R), relevance(R, A) [, relevance(D_j, R)]   (embedding model / reranker)
    Coh_i     = a reward model's (or judge's) score of R given Q
    R_DRM,i   = Σ_d w_d · z_G(s_d)_i                                   (w = 1/3 each, population z-score)
    A_i       = z_G(r_ans)_i + z_G(R_DRM)_i                            (``use_answer: false``: DRM only)
    loss      GRPO: A_i on every response token, PPO clip (+ KL)

Every reconstructed choice (weights, normalisation, span format, relevance parts, the invalid-row rule, the
confidence temperature) is a key under ``algo.drm`` with the spec's default. A failed coherence / relevance score
(NaN) takes that dimension's group minimum and is counted in ``drm/score_failures``.
"""
from __future__ import annotations

import math
import re

import torch

from steprl.algos.base import RLModule, Rewards
from steprl.algos.spans import span_masks
from steprl.algos.step import RowValues, Step
from steprl.config import ConfigError, node_defaults
from steprl.core.drm import NORMS, drm_advantage, drm_combine, drm_confidence
from steprl.rewards.drm_models import build_coherence, build_relevance
from steprl.rewards.judges import JudgeRequest
from steprl.rollout.types import Rollouts, Sample

SPAN_MODES = ("tags", "last_step")
REL_PARTS = ("question", "answer", "documents")


def reasoning_answer_spans(text: str, mode: str, splitter=None, think=("<think>", "</think>"),
                           answer=("<answer>", "</answer>")) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Char spans ``(R, A)`` of the reasoning and the answer (inner text of the tags), ``None`` where missing.

    ``tags``: R inside ``<think>…</think>`` (from the start of the text when only the closing tag is present, as
    when the prompt opens the think block); A inside the first ``<answer>…</answer>`` after R.
    ``last_step``: with the task's splitter, R = first..second-to-last step, A = the last step.
    """
    if mode == "last_step":
        spans = splitter.split(text)
        if len(spans) < 2:
            return None, (spans[-1] if spans else None)
        return (spans[0][0], spans[-2][1]), spans[-1]
    if mode != "tags":
        raise ConfigError(f"algo.drm.spans={mode!r} is not one of {list(SPAN_MODES)}")
    close = text.find(think[1])
    r = None
    if close >= 0:
        open_ = text.rfind(think[0], 0, close)
        start = open_ + len(think[0]) if open_ >= 0 else 0
        r = (start, close) if text[start:close].strip() else None
    m = re.search(re.escape(answer[0]) + r"(.*?)" + re.escape(answer[1]), text[close + 1 if close >= 0 else 0:],
                  re.DOTALL)
    a = None
    if m and m.group(1).strip():
        off = close + 1 if close >= 0 else 0
        a = (off + m.start(1), off + m.end(1))
    return r, a


class DRM(RLModule):
    kl_in_reward_supported = False  # its advantages are its own: a KL reward would be dropped

    def __init__(self, *args, drm: dict | None = None, relevance: dict | None = None,
                 coherence: dict | None = None, **kwargs):
        d = {**node_defaults("drm", "drm"), **(drm or {})}
        if d["norm"] not in NORMS:
            raise ConfigError(f"algo.drm.norm={d['norm']!r} is not one of {list(NORMS)}")
        if d["spans"] not in SPAN_MODES:
            raise ConfigError(f"algo.drm.spans={d['spans']!r} is not one of {list(SPAN_MODES)}")
        if d["invalid"] not in ("min", "zero"):
            raise ConfigError(f"algo.drm.invalid={d['invalid']!r} is not one of ['min', 'zero']")
        if len(d["weights"]) != 3:
            raise ConfigError(f"algo.drm.weights={d['weights']!r} must be 3 numbers (confidence, relevance, coherence)")
        rel = {**node_defaults("drm", "relevance"), **(relevance or {})}
        bad = set(rel["parts"]) - set(REL_PARTS)
        if bad or not rel["parts"]:
            raise ConfigError(f"algo.relevance.parts={rel['parts']!r}: choose from {list(REL_PARTS)}")
        super().__init__(*args, **kwargs)  # checked first: a bad option fails before the model loads
        self.drm, self.rel_cfg = d, rel
        self.coh_cfg = {**node_defaults("drm", "coherence"), **(coherence or {})}
        self.judge_cfg = self.reward_parts.step  # the step scorer: reward.step (the judge= group)
        self.relevance = self.coherence = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.relevance is None:
            self.relevance = build_relevance(self.rel_cfg)
            self.coherence = build_coherence(self.coh_cfg, self.judge_cfg, self.task)

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        judge = getattr(self.coherence, "judge", None)
        if judge is not None:
            judge.close()

    # ------------------------------------------------------------------------------------ dimensions
    def relevance_scores(self, rows: list[Sample], texts: list[str], spans) -> list[float]:
        parts = self.rel_cfg["parts"]
        pairs, owner = [], []
        for i, (s, t, (r, a)) in enumerate(zip(rows, texts, spans)):
            if r is None:
                continue
            R = t[r[0]:r[1]]
            if "question" in parts:
                pairs.append((s.prompt, R)), owner.append(i)
            if "answer" in parts and a is not None:
                pairs.append((R, t[a[0]:a[1]])), owner.append(i)
            if "documents" in parts:
                for doc in (s.meta or {}).get("documents") or []:
                    pairs.append((str(doc), R)), owner.append(-1 - i)  # documents: averaged first, then one part
        scores = self.relevance.score(pairs) if pairs else []
        per: list[list[float]] = [[] for _ in texts]
        docs: list[list[float]] = [[] for _ in texts]
        for o, v in zip(owner, scores):
            (per[o] if o >= 0 else docs[-1 - o]).append(float(v))
        out = []
        for p, d in zip(per, docs):
            if d:
                p = p + [sum(d) / len(d)]
            out.append(sum(p) / len(p) if p else math.nan)
        return out

    def coherence_scores(self, rows: list[Sample], texts: list[str], spans) -> list[float]:
        reasoning = [t[r[0]:r[1]] if r is not None else "" for t, (r, _) in zip(texts, spans)]
        if self.coh_cfg["kind"] == "reward_model":
            return self.coherence.score([s.prompt for s in rows], reasoning)
        splitter = self.task.splitter
        reqs = [JudgeRequest(question=s.prompt, response=rt, steps=splitter.split_text(rt) if rt else [],
                             reference=s.answer, meta={"sample": s})
                for s, rt in zip(rows, reasoning)]
        if all(not rq.response for rq in reqs):
            return [math.nan] * len(reqs)
        return self.coherence.score(reqs)

    def score(self, ro: Rollouts, samples: list[Sample]) -> Rewards:
        rw = super().score(ro, samples)
        d = self.drm
        rows = [samples[i] for i in ro.sample_idx.tolist()]
        spans = [reasoning_answer_spans(t, d["spans"], self.task.splitter, tuple(d["think_tags"]),
                                        tuple(d["answer_tags"])) for t in ro.texts]
        valid = torch.tensor([r is not None and a is not None for r, a in spans])
        reason, ans = span_masks(self, ro, [list(sp) for sp in spans])
        logp = self.logp_pass(self.policy, ro, temperature=d["confidence_temperature"]).cpu()
        conf = drm_confidence(logp, reason, ans)
        rel = torch.tensor(self.relevance_scores(rows, ro.texts, spans), dtype=torch.float)
        coh = torch.tensor(self.coherence_scores(rows, ro.texts, spans), dtype=torch.float)
        rw.seq.update({"drm_conf": conf, "drm_rel": rel, "drm_coh": coh, "drm_valid": valid})
        judge = getattr(self.coherence, "judge", None)
        if judge is not None:
            self.metrics.write(judge.metrics())
        return rw

    def group_values(self, ro: Rollouts, rw: Rewards) -> RowValues:
        """A failed score takes its group's minimum; each dimension z-scored in its group; R_DRM and A_i."""
        d = self.drm
        conf, valid = rw.seq["drm_conf"], rw.seq["drm_valid"]
        rel, coh = rw.seq["drm_rel"].clone(), rw.seq["drm_coh"].clone()
        g = ro.group_ids.cpu()
        failures = 0
        for x in (rel, coh):  # a failed score takes its dimension's group minimum (counted)
            bad = torch.isnan(x) & valid
            failures += int(bad.sum())
            for gid in torch.unique(g[bad]):
                ok = (g == gid) & ~torch.isnan(x)
                x[(g == gid) & torch.isnan(x)] = x[ok].min() if bool(ok.any()) else 0.0
            x[torch.isnan(x)] = 0.0  # rows without spans: not used (invalid)
        r_drm = drm_combine([conf, rel, coh], d["weights"], g, d["norm"], d["eps"], valid, d["invalid"])
        adv = drm_advantage(rw.outcome.cpu(), r_drm, g, d["use_answer"], d["eps"])
        gv = RowValues(drm_adv=adv, drm_r=r_drm)
        v = valid.float()
        mean = lambda x: float((x * v).sum() / v.sum().clamp_min(1))  # noqa: E731
        m = {"drm/confidence": mean(conf), "drm/relevance": mean(rel), "drm/coherence": mean(coh),
             "drm/format_failures": float((~valid).sum()), "drm/score_failures": float(failures),
             "drm/r_drm_std": float(r_drm.std()) if len(r_drm) > 1 else 0.0}
        self.metrics.write(m)
        return gv

    def advantages(self, step: Step):
        adv = step.group_values["drm_adv"].to(step.ro.loss_mask.device)
        return adv[:, None] * step.ro.loss_mask.to(adv.dtype), None
