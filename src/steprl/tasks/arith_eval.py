"""Per-length step and final accuracy of a model on arithmetic chains (how the long-chain warm start is measured).

    python -m steprl.tasks.arith_eval --model steprl:tiny_arith_long --num-terms 2 10 --num-val 512

Greedy decoding on the held-out split of ``ArithTask(num_terms=[lo, hi], num_val=N, seed=S)`` (the split the
SFT recipe ``experiment=sft_tiny_arith_long`` never trains on when it is run with the same ``num_val`` and seed).
For each number of terms ``n`` it prints:

* ``final``: fraction of chains whose ``#### x`` answer is right (the outcome reward);
* ``step``: per-step accuracy along the chain, the chance that a step is right given that every step before it
  was: (steps right before the first error) / (those steps + the first errors), summed over chains (``n - 1``
  reductions and the answer line make ``n`` steps; a chain with per-step accuracy ``p`` is right with
  probability ``p ** n``);
* ``local``: fraction of the response's written steps that are right judged on their own (``score_steps``);
* ``first_err``: mean index of the first wrong step among the chains that go wrong;

with the binomial standard error of ``final``, and writes a JSON summary with ``--out``. ``--model`` is a model
directory, a hub id or ``steprl:<name>``; ``--ckpt`` a steprl training checkpoint instead.
"""
from __future__ import annotations

from collections import defaultdict

from steprl.rollout.hf import HFEngine
from steprl.tasks import eval_cli
from steprl.tasks.arith import ArithTask


def evaluate(model, tokenizer, task: ArithTask, batch_size: int = 128, max_new_tokens: int = 272) -> dict:
    """``{n_terms: {"n", "final", "final_se", "step", "local", "first_err"}}`` over ``task``'s held-out split."""
    engine = HFEngine(max_new_tokens=max_new_tokens, temperature=1.0)
    samples = [task.val_dataset()[i] for i in range(task.num_val)]
    rows: dict[int, list[tuple[float, int, int, float, int | None]]] = defaultdict(list)
    model.eval()
    for b in range(0, len(samples), batch_size):
        batch = samples[b:b + batch_size]
        texts = engine.generate(model, tokenizer, [s.prompt for s in batch], n=1, greedy=True).texts
        for s, text in zip(batch, texts):
            n = s.meta["num_terms"]
            steps = task.score_steps(s, text) or []
            fe = task.first_error(s, text)
            right = n if fe is None else min(fe, n)  # reference steps: n - 1 reductions + the answer line
            rows[n].append((task.verify(s, text), right, int(fe is not None),
                            sum(steps) / len(steps) if steps else 0.0, fe))
    return summarize(rows)


def summarize(rows: dict[int, list[tuple[float, int, int, float, int | None]]]) -> dict:
    """Per-length summary of ``(outcome, steps right before the first error, 1 if there is a first error,
    local step accuracy, first error index or None)`` rows (see the module docstring)."""
    out = {}
    for n in sorted(rows):
        r = rows[n]
        final = sum(x[0] for x in r) / len(r)
        right, wrong = sum(x[1] for x in r), sum(x[2] for x in r)
        errs = [x[4] for x in r if x[4] is not None]
        out[n] = {"n": len(r), "final": final, "final_se": eval_cli.se(final, len(r)),
                  "step": right / max(1, right + wrong), "steps_right": right, "first_errors": wrong,
                  "local": sum(x[3] for x in r) / len(r),
                  "first_err": sum(errs) / len(errs) if errs else float("nan")}
    return out


def format_table(res: dict) -> str:
    lines = ["| terms | problems | final acc (± s.e.) | per-step acc | local step acc | mean first-error step |",
             "|---|---|---|---|---|---|"]
    for n, r in res.items():
        lines.append(f"| {n} | {r['n']} | {r['final']:.3f} ± {r['final_se']:.3f} | {r['step']:.3f} | "
                     f"{r['local']:.3f} | {r['first_err']:.2f} |")
    tot = sum(r["n"] for r in res.values())
    final = sum(r["final"] * r["n"] for r in res.values()) / tot
    lines.append(f"| all | {tot} | {final:.3f} ± {eval_cli.se(final, tot):.3f} | "
                 f"{sum(r['steps_right'] for r in res.values()) / max(1, sum(r['steps_right'] + r['first_errors'] for r in res.values())):.3f} | "
                 f"{sum(r['local'] * r['n'] for r in res.values()) / tot:.3f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = eval_cli.parser(__doc__, batch_size=128)
    p.add_argument("--num-terms", type=int, nargs=2, default=[2, 10], metavar=("LO", "HI"))
    p.add_argument("--num-val", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=272)
    a = p.parse_args(argv)
    model, tok = eval_cli.load(a)
    task = ArithTask(num_terms=a.num_terms, num_val=a.num_val, num_train=0, seed=a.seed)
    res = evaluate(model, tok, task, a.batch_size, a.max_new_tokens)
    return eval_cli.report(res, format_table(res), a.out)


if __name__ == "__main__":
    main()
