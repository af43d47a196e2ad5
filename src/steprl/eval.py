"""Evaluate a policy on a task: greedy pass@1, unbiased pass@k, maj@k and mean@k over n samples, per data source,
and pass@k over the problems greedy gets wrong (``miss_pass@k``).

    python src/eval.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt task=arith
    python src/eval.py model=qwen_math_7b task=math500 eval.n=16 eval.k=[1,4,16] rollout.temperature=0.6
    python src/eval.py task=math task.path=../shared/data/math500_test.jsonl predictions=preds.jsonl

The policy is a training checkpoint (``ckpt_path``, a ``.ckpt`` of our runs), a shipped model
(``model=tiny_arith`` = ``steprl:tiny_arith``) or any hub / local model (``model=qwen7b``, ``model.path=...``).
With ``predictions=<jsonl>`` no model is loaded: each line holds a ``response`` (or a list of ``responses``) for
the task file's row at the same position, and those are graded.

Problems are the task's evaluation rows (:meth:`eval_dataset`: every row of a file-backed task in file order;
the validation set of a generated task such as ``arith``). Responses are graded by the task's verifier through
the bounded :class:`~steprl.rewards.RewardPipeline` (``reward=pool``: a verifier that hangs or crashes scores 0
and is counted); a response is correct when its score is 1.

Outputs: a console table, ``eval.json`` (metrics overall and per data source, per-problem results),
``predictions.jsonl`` (every response, gradable again with ``predictions=``), an MLflow run (experiment
``steprl-eval``) with the metrics as ``<group>/<metric>`` (``@`` written ``_at_``), and as the last line
``accuracy=<x>`` (greedy accuracy when there is a greedy pass, the accuracy of single saved responses, else
mean@n).
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steprl.core.metrics import maj_at_k, mean_at_k, pass_at_k
from steprl.tasks.base import read_jsonl_rows

__all__ = ["ProblemResult", "compute_metrics", "load_predictions", "grade", "evaluate", "eval_samples",
           "format_table"]


@dataclass
class ProblemResult:
    """Everything graded for one problem."""

    uid: str
    source: str
    greedy: str | None = None           # the greedy response (None: no greedy pass)
    greedy_correct: bool | None = None
    responses: list[str] = field(default_factory=list)    # the n sampled responses
    scores: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- metrics
def _group_metrics(results: Sequence[ProblemResult], ks: Sequence[int], single: str) -> dict[str, float]:
    out: dict[str, float] = {"problems": float(len(results))}
    greedy = [r.greedy_correct for r in results if r.greedy_correct is not None]
    if greedy:
        out[single] = sum(map(float, greedy)) / len(greedy)
    sampled = [r for r in results if r.correct]
    if sampled:
        n = min(len(r.correct) for r in sampled)
        out["samples"] = float(n)
        vote = any(a is not None for r in sampled for a in r.answers)
        missed = [r for r in sampled if r.greedy_correct is False]
        for k in sorted(set(int(k) for k in ks)):
            if not 1 <= k <= n:
                continue
            out[f"pass@{k}"] = sum(pass_at_k(len(r.correct), sum(r.correct), k) for r in sampled) / len(sampled)
            if missed:
                out[f"miss_pass@{k}"] = sum(pass_at_k(len(r.correct), sum(r.correct), k) for r in missed) / len(missed)
            out[f"mean@{k}"] = sum(mean_at_k(r.correct, k) for r in sampled) / len(sampled)
            if vote:
                out[f"maj@{k}"] = sum(maj_at_k(r.answers, r.correct, k) for r in sampled) / len(sampled)
        out[f"mean@{n}"] = sum(mean_at_k(r.correct, n) for r in sampled) / len(sampled)
    return out


def compute_metrics(results: Sequence[ProblemResult], ks: Sequence[int] = (1,),
                    single: str = "greedy") -> dict[str, dict[str, float]]:
    """``{"all": metrics, <source>: metrics, ...}``: ``greedy`` (greedy pass@1; named ``single``, e.g. ``acc``
    for saved single predictions), and over the n samples ``pass@k`` (unbiased), ``maj@k`` (when the task
    extracts answers), ``mean@k`` and ``mean@n``, for every k of ``ks`` with k <= n. ``problems`` / ``samples``
    are counts. With a greedy pass too, ``miss_pass@k`` is pass@k over the problems greedy got wrong: how often k
    samples find what the greedy policy misses — the signal RL from this policy has for raising its greedy
    accuracy (a group of k rollouts with no right one teaches outcome-reward RL nothing about that problem)."""
    groups: dict[str, list[ProblemResult]] = defaultdict(list)
    for r in results:
        groups[r.source].append(r)
    out = {"all": _group_metrics(results, ks, single)}
    if len(groups) > 1:
        for src in sorted(groups):
            out[src] = _group_metrics(groups[src], ks, single)
    return out


def headline(metrics: Mapping[str, Mapping[str, float]]) -> float:
    """The single number printed as ``accuracy=``: greedy accuracy, else mean@n."""
    m = metrics["all"]
    for single in ("greedy", "acc"):
        if single in m:
            return m[single]
    n = int(m.get("samples", 0))
    return m.get(f"mean@{n}", float("nan"))


def format_table(metrics: Mapping[str, Mapping[str, float]], title: str = "evaluation"):
    """A rich Table with one row per group and one column per metric."""
    from rich.table import Table

    cols: list[str] = []
    for m in metrics.values():
        cols += [k for k in m if k not in cols]
    table = Table(title=title)
    table.add_column("source")
    for c in cols:
        table.add_column(c, justify="right")
    for group, m in metrics.items():
        table.add_row(group, *[("" if c not in m else f"{int(m[c])}" if c in ("problems", "samples")
                                else f"{m[c]:.4f}") for c in cols])
    return table


# --------------------------------------------------------------------------------------------------- data
def eval_samples(task, limit: int | None = None) -> list:
    """The problems to evaluate, in order (see the module docstring)."""
    ds = task.eval_dataset() if hasattr(task, "eval_dataset") else task.val_dataset()
    samples = [ds[i] for i in range(len(ds))]
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"eval.limit must be >= 1, got {limit}")
        samples = samples[: int(limit)]
    if not samples:
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no evaluation rows")
    return samples


def load_predictions(path: str | Path, num_problems: int) -> list[list[str]]:
    """The responses of a predictions file, one list per problem. Each line is a JSON object with ``response``
    (a string; null counts as an empty, wrong response) or ``responses`` (a list of them)."""
    p = Path(path).expanduser()
    out: list[list[str]] = []
    for where, row in read_jsonl_rows(p, "predictions file"):
        if "response" in row:
            resp = [row["response"]]
        elif "responses" in row and isinstance(row["responses"], list) and row["responses"]:
            resp = list(row["responses"])
        else:
            raise ValueError(f"{where}: no `response` field (or non-empty `responses` list); "
                             f"keys found: {sorted(map(str, row))}")
        for r in resp:
            if r is not None and not isinstance(r, str):
                raise ValueError(f"{where}: a response must be a string (or null), got {type(r).__name__}")
        out.append(["" if r is None else r for r in resp])
    if len(out) != num_problems:
        raise ValueError(f"{p}: {len(out)} predictions for {num_problems} problems of the task file; "
                         f"give one line per problem, in the task file's order")
    return out


# --------------------------------------------------------------------------------------------------- grading
def grade(task, samples: Sequence, responses: Sequence[Sequence[str]], greedy: Sequence[str] | None = None,
          reward: Mapping | None = None) -> tuple[list[ProblemResult], dict[str, int]]:
    """Grade ``responses[i]`` (sampled) and ``greedy[i]`` for each problem ``samples[i]`` with the outcome verifier
    of ``reward`` (the ``reward=`` node: ``reward.outcome``, null: the task's verifier) in a :class:`RewardPipeline`
    with ``reward.pool``. Returns the per-problem results and the pipeline's error / timeout counts."""
    from steprl.rewards import RewardPipeline
    from steprl.rewards.components import build_reward

    flat_s, flat_r, where = [], [], []
    for i, s in enumerate(samples):
        if greedy is not None:
            flat_s.append(s)
            flat_r.append(greedy[i])
            where.append((i, -1))
        for j, r in enumerate(responses[i] if responses else []):
            flat_s.append(s)
            flat_r.append(r)
            where.append((i, j))
    parts = build_reward(reward)
    with RewardPipeline(parts.outcome_fn(task), **parts.pool) as pipe:
        res = pipe(flat_s, flat_r)
    results = [ProblemResult(uid=s.uid, source=str(s.meta.get("data_source") or s.source or "all")) for s in samples]
    for (i, j), text, score in zip(where, flat_r, res.outcome.tolist()):
        ok = score >= 1.0 - 1e-6
        r = results[i]
        if j < 0:
            r.greedy, r.greedy_correct = text, ok
        else:
            r.responses.append(text)
            r.scores.append(float(score))
            r.correct.append(ok)
            r.answers.append(task.extract_answer(text))
    return results, {"errors": res.errors, "timeouts": res.timeouts}


# --------------------------------------------------------------------------------------------------- the run
def _generate(cfg, task, samples: Sequence, log) -> tuple[list[str] | None, list[list[str]]]:
    """Greedy and sampled responses, rolled out as in training: a tool-using task's episodes through its
    multi-turn AgentLoop, a task with images through the model's image processor."""
    import hydra
    import torch
    from omegaconf import OmegaConf

    from steprl.export import load_checkpoint_policy
    from steprl.models import load_model
    from steprl.models.vision import load_processor
    from steprl.rollout.agent import agent_loop

    e = cfg.eval
    if cfg.get("ckpt_path"):
        model, tokenizer, model_cfg = load_checkpoint_policy(cfg.ckpt_path)
        log(f"[eval] policy from checkpoint {cfg.ckpt_path}")
    else:
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        model, tokenizer = load_model(**model_cfg)
        log(f"[eval] model {cfg.model.path or 'tiny (from config)'}")
    device = torch.device(e.device if e.get("device") else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    engine = hydra.utils.instantiate(cfg.rollout)
    runner = agent_loop(task, engine) or engine
    images = [getattr(s, "images", None) for s in samples]
    processor = load_processor(**model_cfg) if any(images) else None
    if any(images) and processor is None:
        raise ValueError(f"task {getattr(task, 'name', '')!r} shows images but the model has no image processor: "
                         "evaluate it with a vision-language model (e.g. model=tiny_vl_puzzles)")

    def vision(lo: int, hi: int) -> dict:  # the images of prompts lo..hi-1 and the processor, for a task with images
        return {"images": images[lo:hi], "processor": processor} if processor is not None else {}

    prompts = [s.prompt for s in samples]
    if e.get("chat_template") and getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    bs = int(e.batch_size)
    greedy = None
    if e.greedy:
        greedy = []
        for i in range(0, len(prompts), bs):
            greedy += runner.generate(model, tokenizer, prompts[i:i + bs], n=1, greedy=True,
                                      max_new_tokens=e.get("max_new_tokens"), **vision(i, i + bs)).texts
    sampled: list[list[str]] = [[] for _ in prompts]
    if int(e.n) > 0:
        gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
        per = max(1, bs // int(e.n))
        for i in range(0, len(prompts), per):
            texts = runner.generate(model, tokenizer, prompts[i:i + per], n=int(e.n), generator=gen,
                                    max_new_tokens=e.get("max_new_tokens"), **vision(i, i + per)).texts
            for j in range(len(prompts[i:i + per])):
                sampled[i + j] = texts[j * int(e.n):(j + 1) * int(e.n)]
    return greedy, sampled


def _log_mlflow(cfg, metrics: dict, out_json: Path, preds: Path, run_name: str) -> str | None:
    m = cfg.get("mlflow") or {}
    if not m.get("enabled", True) or not m.get("tracking_uri"):
        return None
    import mlflow
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri=m.tracking_uri)
    exp = client.get_experiment_by_name(m.experiment)
    # artifacts next to the store (outputs/mlartifacts), not in ./mlruns of whatever directory eval runs from
    location = m.get("artifact_location")
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        m.experiment, artifact_location=str(location) if location else None)
    run = client.create_run(exp_id, run_name=run_name, tags={"kind": "eval", "task": str(cfg.task.get("name") or ""),
                                                             "predictions": str(cfg.get("predictions") or "")})
    rid = run.info.run_id
    flat = {}
    for group, vals in metrics.items():
        for k, v in vals.items():
            if isinstance(v, float) and math.isfinite(v):
                flat[f"{group}/{k.replace('@', '_at_')}"] = v
    ts = int(time.time() * 1000)
    client.log_batch(rid, metrics=[mlflow.entities.Metric(k, v, ts, 0) for k, v in flat.items()])
    params = {"ckpt_path": cfg.get("ckpt_path"), "model": cfg.model.get("path"), "n": cfg.eval.n,
              "k": list(cfg.eval.k), "greedy": cfg.eval.greedy, "temperature": cfg.rollout.get("temperature"),
              "max_new_tokens": cfg.eval.get("max_new_tokens") or cfg.rollout.get("max_new_tokens"),
              "task": OmegaConf.to_container(cfg.task, resolve=True).get("_target_")}
    client.log_batch(rid, params=[mlflow.entities.Param(k, str(v)[:500]) for k, v in params.items()])
    client.log_artifact(rid, str(out_json))
    client.log_artifact(rid, str(preds))
    client.set_terminated(rid)
    return rid


def evaluate(cfg, log=print) -> dict[str, Any]:
    """Run the evaluation a composed ``conf/eval.yaml`` describes; returns the JSON report (also written)."""
    import hydra
    from omegaconf import OmegaConf

    e = cfg.eval
    ks = [int(k) for k in (e.k if isinstance(e.k, Sequence) or OmegaConf.is_list(e.k) else [e.k])]
    if any(k < 1 for k in ks):
        raise ValueError(f"eval.k must hold positive integers, got {ks}")
    if int(e.n) < 0:
        raise ValueError(f"eval.n must be >= 0, got {e.n}")
    t0 = time.time()
    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    task = hydra.utils.instantiate(cfg.task)
    samples = eval_samples(task, e.get("limit"))
    if cfg.get("predictions"):
        preds = load_predictions(cfg.predictions, len(samples))
        single = all(len(p) == 1 for p in preds)
        greedy, sampled = ([p[0] for p in preds], None) if single else (None, preds)
        log(f"[eval] grading {sum(map(len, preds))} saved responses for {len(samples)} problems from {cfg.predictions}")
    else:
        if not e.greedy and int(e.n) == 0:
            raise ValueError("nothing to evaluate: set eval.greedy=true or eval.n >= 1")
        greedy, sampled = _generate(cfg, task, samples, log)
    t_gen = time.time() - t0
    results, counts = grade(task, samples, sampled, greedy, cfg.reward)
    metrics = compute_metrics(results, ks, "acc" if cfg.get("predictions") else "greedy")
    acc = headline(metrics)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_path = out_dir / "predictions.jsonl"
    with open(pred_path, "w", encoding="utf-8") as f:
        for r in results:
            row = {"uid": r.uid, "source": r.source}
            if r.greedy is not None:
                row.update(response=r.greedy, correct=r.greedy_correct)
            if r.responses:
                row.update(responses=r.responses, scores=r.scores)
            f.write(json.dumps(row) + "\n")
    report = {"accuracy": acc, "metrics": metrics, "reward": counts, "seconds": round(time.time() - t0, 2),
              "seconds_generation": round(t_gen, 2), "ckpt_path": cfg.get("ckpt_path"),
              "model": None if cfg.get("ckpt_path") or cfg.get("predictions") else cfg.model.get("path"),
              "predictions": cfg.get("predictions"), "n": int(e.n), "k": ks,
              "problems": [{"uid": r.uid, "source": r.source, "greedy_correct": r.greedy_correct,
                            "correct": sum(r.correct), "samples": len(r.correct)} for r in results]}
    out_json = out_dir / "eval.json"
    out_json.write_text(json.dumps(report, indent=1))
    name = f"eval-{getattr(task, 'name', 'task')}"
    report["mlflow_run_id"] = _log_mlflow(cfg, metrics, out_json, pred_path, name)
    if counts["errors"] or counts["timeouts"]:
        log(f"[eval] verifier errors: {counts['errors']}, timeouts: {counts['timeouts']} (scored 0)")
    try:
        from rich.console import Console

        Console(width=140).print(format_table(metrics, f"{name} ({len(samples)} problems)"))
    except Exception:  # noqa: BLE001 - the table is cosmetic
        log(json.dumps(metrics, indent=1))
    log(f"[eval] wrote {out_json} and {pred_path}")
    return report
