"""Accuracy by number of hops of a model on synthetic ``search_qa`` (how the search warm start is measured).

    python -m steprl.tasks.search_eval --model steprl:tiny_search_qa

Greedy multi-turn episodes through the AgentLoop on the held-out questions of ``task=search_qa_tiny`` (the split
``experiment=sft_tiny_search_qa`` never trains on), graded by exact match. Per number of hops it prints the
accuracy with its binomial standard error, the share of episodes that wrote an ``<answer>``, the mean number of
searches, format errors per episode, and E-GRPO's entity match rate of the thoughts. ``--ckpt`` takes a steprl
training checkpoint instead of ``--model``; ``--out`` writes the table as JSON.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from steprl.rewards.entities import entity_match_rate, thoughts
from steprl.rollout.agent import agent_loop
from steprl.rollout.hf import HFEngine
from steprl.tasks import eval_cli
from steprl.tasks.search_qa import SearchQATask

TASK_CONF = Path(__file__).resolve().parents[3] / "conf" / "task"


def tiny_task(seed: int = 0, **overrides) -> SearchQATask:
    """``task=search_qa_tiny`` as the recipes compose it (``conf/task/search_qa_tiny.yaml`` over ``search_qa.yaml``)."""
    cfg = OmegaConf.merge(OmegaConf.load(TASK_CONF / "search_qa.yaml"), OmegaConf.load(TASK_CONF / "search_qa_tiny.yaml"))
    cfg = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("defaults", "_target_", "seed")}
    return SearchQATask(seed=seed, **{**cfg, **overrides})


def evaluate(model, tokenizer, task: SearchQATask, batch_size: int = 64, limit: int | None = None) -> dict:
    agent = agent_loop(task, HFEngine(max_new_tokens=task.agent_cfg["max_turn_tokens"] or 64, temperature=1.0))
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
        out[h] = {"n": len(r), "acc": acc, "acc_se": eval_cli.se(acc, len(r)),
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
    lines.append(f"| all | {tot} | {acc:.3f} ± {eval_cli.se(acc, tot):.3f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = eval_cli.parser(__doc__, batch_size=64)
    p.add_argument("--limit", type=int, help="the first N held-out questions only")
    a = p.parse_args(argv)
    model, tok = eval_cli.load(a)
    res = evaluate(model, tok, tiny_task(a.seed), a.batch_size, a.limit)
    return eval_cli.report(res, format_table(res), a.out)


if __name__ == "__main__":
    main()
