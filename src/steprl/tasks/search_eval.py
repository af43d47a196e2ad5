"""Accuracy by number of hops of a model on synthetic ``search_qa`` (how the search warm start is measured).

    python -m steprl.tasks.search_eval --model steprl:tiny_search_qa

Greedy multi-turn episodes through the AgentLoop on the held-out questions of ``task=search_qa_tiny`` (the split
``experiment=sft_tiny_search_qa`` never trains on), graded by exact match. Per number of hops it prints the
accuracy with its binomial standard error, the share of episodes that wrote an ``<answer>``, the mean number of
searches, format errors per episode, and E-GRPO's entity match rate of the thoughts. ``--ckpt`` takes a steprl
training checkpoint instead of ``--model``; ``--out`` writes the table as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from steprl.rewards.entities import entity_match_rate, thoughts
from steprl.rollout.agent import AgentLoop
from steprl.rollout.hf import HFEngine
from steprl.tasks.search_qa import SearchQATask

TASK_CONF = Path(__file__).resolve().parents[3] / "conf" / "task"


def tiny_task(seed: int = 0, **overrides) -> SearchQATask:
    """``task=search_qa_tiny`` as the recipes compose it (``conf/task/search_qa_tiny.yaml`` over ``search_qa.yaml``)."""
    cfg = OmegaConf.merge(OmegaConf.load(TASK_CONF / "search_qa.yaml"), OmegaConf.load(TASK_CONF / "search_qa_tiny.yaml"))
    cfg = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("defaults", "_target_", "seed")}
    return SearchQATask(seed=seed, **{**cfg, **overrides})


def evaluate(model, tokenizer, task: SearchQATask, batch_size: int = 64, limit: int | None = None) -> dict:
    agent = AgentLoop(HFEngine(max_new_tokens=task.agent_cfg["max_turn_tokens"] or 64, temperature=1.0),
                      task.make_env(), **task.agent_cfg)
    samples = list(task.val_dataset())[:limit]
    rows: dict[int, list[tuple[float, float, float, float, float]]] = defaultdict(list)
    model.eval()
    for b in range(0, len(samples), batch_size):
        batch = samples[b:b + batch_size]
        ro = agent.generate(model, tokenizer, [s.prompt for s in batch], n=1, greedy=True)
        for s, text, info in zip(batch, ro.texts, ro.info):
            rows[s.meta["hops"]].append((task.verify(s, text), float(info["answered"]), float(info["tool_calls"]),
                                         float(info["format_errors"]),
                                         entity_match_rate(thoughts(text), s.meta["entities"])))
    out = {}
    for h in sorted(rows):
        r = rows[h]
        acc = sum(x[0] for x in r) / len(r)
        out[h] = {"n": len(r), "acc": acc, "acc_se": math.sqrt(acc * (1 - acc) / len(r)),
                  "answered": sum(x[1] for x in r) / len(r), "searches": sum(x[2] for x in r) / len(r),
                  "format_errors": sum(x[3] for x in r) / len(r), "entity_match": sum(x[4] for x in r) / len(r)}
    return out


def format_table(res: dict) -> str:
    lines = ["| hops | questions | accuracy (± s.e.) | answered | searches | format errors | entity match |",
             "|---|---|---|---|---|---|---|"]
    for h, r in res.items():
        lines.append(f"| {h} | {r['n']} | {r['acc']:.3f} ± {r['acc_se']:.3f} | {r['answered']:.2f} | "
                     f"{r['searches']:.2f} | {r['format_errors']:.2f} | {r['entity_match']:.2f} |")
    tot = sum(r["n"] for r in res.values())
    acc = sum(r["acc"] * r["n"] for r in res.values()) / tot
    lines.append(f"| all | {tot} | {acc:.3f} ± {math.sqrt(acc * (1 - acc) / tot):.3f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model directory, hub id or steprl:<name>")
    src.add_argument("--ckpt", help="a steprl training checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, help="the first N held-out questions only")
    p.add_argument("--out", help="write the per-hop results as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from steprl.export import load_model_or_checkpoint

    model, tok = load_model_or_checkpoint(a.model, a.ckpt)
    res = evaluate(model, tok, tiny_task(a.seed), a.batch_size, a.limit)
    print(format_table(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({str(k): v for k, v in res.items()}, f, indent=1)
    return res


if __name__ == "__main__":
    main()
