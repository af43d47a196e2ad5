"""The league at full scale, run by run and resumable: every algorithm of ``experiment=league_tiny`` x seeds, on
``arith`` (from ``tiny_arith``) and on the long chains (``arith_long`` from ``tiny_arith_long``), each with its
own defaults (``algo=X`` alone) and the default run's budget: 16 prompts x G = 8 a step, 100 RL steps, greedy
``val/acc`` on 256 held-out problems at steps 0, 50 and 100.

    python bench/league.py --task arith --dry-run               # the commands still to run
    nice -n 10 python bench/league.py --task arith -j 2         # run them (one per core), then the report
    python bench/league.py --report                             # redraw tables and figures from the CSVs

A Hydra multirun (``python src/train.py -m experiment=league_tiny``) runs the same jobs in one process tree but
loses everything when interrupted; here each finished run appends one row (its curves, seconds, command and
commit) to ``bench/league/<task>.csv`` and a run that has its row is skipped, so the ~45 runs per task can be
spread over several sittings or machines. ``--report`` writes ``bench/league/<task>.png`` and the tables between
the markers in docs/league.md, the README's side-by-side table and each algorithm's row in docs/algorithms/<algo>.md.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from claims import (ARITH_LONG, PLUMBING, Budget, Job, _show, add_run_args, parse_run_args, read_rows,  # noqa: E402
                    run_jobs, run_row)
from league_table import figure, summary, table  # noqa: E402

DATA = ROOT / "bench" / "league"
DOC = ROOT / "docs" / "league.md"
README = ROOT / "README.md"
PAGES = ROOT / "docs" / "algorithms"        # <algo>.md: each algorithm's page and its league row
START, END = "<!-- full-league:start -->", "<!-- full-league:end -->"
ROW_START, ROW_END = "<!-- league-row:start -->", "<!-- league-row:end -->"
# the task's overrides on top of experiment=league_tiny (which brings model=tiny_arith, task=arith)
TASKS = {"arith": (), "arith_long": ARITH_LONG}
# the default run's budget (conf/train.yaml, conf/task/arith*.yaml)
BUDGET = Budget(steps=100, val_every=50, num_val=256)
METRICS = ("train/reward",)
SEEDS = 3                   # the league's seeds per algorithm (at least)


def league_algos() -> list[str]:
    """The algorithms the league's sweep lists (conf/experiment/league_tiny.yaml): the one list of them."""
    import yaml

    cfg = yaml.safe_load((ROOT / "conf" / "experiment" / "league_tiny.yaml").read_text())
    return [a.strip() for a in str(cfg["hydra"]["sweeper"]["params"]["algo"]).split(",")]


def budget_str(task: str, budget: Budget) -> str:
    return " ".join([*TASKS[task], *budget.overrides()])


def command(task: str, algo: str, seed: int, budget: Budget, work: Path) -> list[str]:
    return ["python", "src/train.py", "experiment=league_tiny", f"algo={algo}", *TASKS[task], *budget.overrides(),
            f"seed={seed}", *PLUMBING, f"hydra.run.dir={_show(run_dir(work, task, algo, seed))}"]


def run_dir(work: Path, task: str, algo: str, seed: int) -> Path:
    return work / task / f"{algo}-seed{seed}"


def todo(task: str, algos: list[str], seeds: list[int], budget: Budget, data: Path) -> list[tuple[str, int]]:
    """(algo, seed) runs without a row in ``<data>/<task>.csv``, seed by seed; refuses a CSV of another budget."""
    rows = read_rows(data / f"{task}.csv")
    other = {r["budget"] for r in rows} - {budget_str(task, budget)}
    if other:
        raise SystemExit(f"{data / task}.csv holds runs with another budget ({sorted(other)[0]!r}), not "
                         f"{budget_str(task, budget)!r}: rerun with the same --steps/--val-every/--num-val, or move "
                         f"the CSV away to start afresh")
    done = {(r["arm"], r["seed"]) for r in rows}
    return [(a, s) for s in seeds for a in algos if (a, s) not in done]


def series(rows: list[dict]) -> dict:
    """league_table's {algo: {seed: {key: {step: value}}}} from stored rows."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["arm"], {})[r["seed"]] = {k: dict((int(s), v) for s, v in c)
                                                    for k, c in r["curves"].items()}
    return out


def write_block(page: Path, block: str, start: str = START, end: str = END) -> bool:
    """Replace what lies between ``start`` and ``end`` in ``page`` by ``block``; False (nothing written) when the
    page or a marker is missing."""
    if not page.exists() or start not in (text := page.read_text()) or end not in text:
        return False
    head, rest = text.split(start, 1)
    page.write_text(head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1])
    return True


def results(data: Path) -> dict:
    """{task: {"algos": {algo: league_table.summary}, "warm": the mean over seeds of val/acc at step 0}} of the tasks
    that have runs, each algorithm's ``rank`` (1 = the highest mean final val/acc among those with a finished seed)
    added."""
    out = {}
    for task in TASKS:
        if rows := read_rows(data / f"{task}.csv"):
            data_t = series(rows)
            algos = {a: summary(seeds, rows[0]["steps"]) for a, seeds in data_t.items()}
            ranked = sorted((a for a in algos if algos[a]["mean"] is not None), key=lambda a: -algos[a]["mean"])
            for i, a in enumerate(ranked):
                algos[a]["rank"] = i + 1
            # every run of a seed starts from the same model on the same held-out set: one warm start per seed
            warm = {s: c["val/acc"][0] for seeds in data_t.values() for s, c in seeds.items() if 0 in c["val/acc"]}
            out[task] = {"algos": algos, "warm": statistics.mean(warm.values()) if warm else None}
    return out


def algo_of(res: dict, task: str, algo: str) -> dict:
    """``algo``'s summary on ``task`` in ``results``' output; {} when it has no run there."""
    return res.get(task, {}).get("algos", {}).get(algo, {})


def _cell(r: dict | None) -> str:
    if r is None:
        return "not yet run"
    if r["mean"] is None:
        return r["cell"]
    delta = "" if r["delta"] is None else f" ({r['delta']:+.3f})"
    return f"{r['cell']}{delta}" + (f", {r['done']} of {SEEDS} seeds" if r["done"] != SEEDS else "")


def readme_block(res: dict) -> str:
    """The README's table: every algorithm's final val/acc on each task side by side, best first on ``arith`` (then
    on ``arith_long``), algorithms not yet run last."""
    def key(a: str) -> tuple:
        return tuple(-m if (m := algo_of(res, t, a).get("mean")) is not None else math.inf for t in TASKS)

    def warm(t: str) -> str:
        return f" (warm start {w:.3f}, mean over seeds)" if (w := res.get(t, {}).get("warm")) is not None else ""
    head = [f"`{t}`{warm(t)}: final val/acc (Δ vs warm start, paired by seed)" for t in TASKS]
    lines = ["| algo | " + " | ".join(head) + " |",
             "|---|" + "---|" * len(TASKS)]
    for a in sorted(league_algos(), key=key):
        lines.append(f"| `{a}` | " + " | ".join(_cell(algo_of(res, t, a) or None) for t in TASKS) + " |")
    return "\n".join(lines)


def row_block(algo: str, res: dict) -> str:
    """An algorithm page's full-scale league row (the pages live in docs/algorithms/, which its links assume): its
    result on each task and its rank among the algorithms run."""
    lines = [f"At full scale ([league.md]({os.path.relpath(DOC, PAGES)}): {BUDGET.steps} RL steps × "
             f"{BUDGET.prompts} prompts × {BUDGET.samples} rollouts from the shipped warm start, greedy `val/acc` on "
             f"{BUDGET.num_val} held-out problems, mean ± std over seeds; raw runs in "
             f"[bench/league/]({os.path.relpath(DATA, PAGES)}/)):", "",
             "| task | final val/acc (mean ± std) | Δ vs warm start | seeds done | rank | train time / run |",
             "|---|---|---|---|---|---|"]
    for task in TASKS:
        r = algo_of(res, task, algo)
        if not r:
            lines.append(f"| `{task}` | not yet run | — | 0/{SEEDS} | — | — |")
            continue
        n = sum(x["mean"] is not None for x in res[task]["algos"].values())
        delta = "—" if r["delta"] is None else f"{r['delta']:+.3f}"
        rank = f"{r['rank']} of {n}" if "rank" in r else "—"
        t = "—" if r["time"] is None else f"{r['time']:.0f} s"
        lines.append(f"| `{task}` | {r['cell']} | {delta} | {r['done']}/{SEEDS} | {rank} | {t} |")
    return "\n".join(lines)


def report(data: Path = DATA, doc: Path = DOC, draw: bool = True, readme: Path | None = None,
           pages: Path | None = None) -> str:
    """Per task: the table (final val/acc mean ± std over seeds, change from the warm start, seeds done, time a
    run) and the figure (``draw``); written between the markers of ``doc`` when it has them. With ``readme``, its
    side-by-side table goes between that file's markers too; with ``pages``, each ``<pages>/<algo>.md`` gets its
    row between ``ROW_START`` and ``ROW_END``."""
    parts = []
    for task in TASKS:
        rows = read_rows(data / f"{task}.csv")
        if not rows:
            parts += [f"**`{task}`**: not yet run (`nice -n 10 python bench/league.py --task {task} -j 2`).", ""]
            continue
        steps = rows[0]["steps"]
        data_t = series(rows)
        seeds = sorted({r["seed"] for r in rows})
        commits = ", ".join(sorted({r["commit"] for r in rows}))
        fig = data / f"{task}.png"
        if draw:
            figure(data_t, fig, f"league at full scale: {task}, {steps} RL steps, 16 prompts x 8, "
                                f"val on {BUDGET.num_val} (mean over seeds; band: min-max)")
        missing = [a for a in league_algos() if a not in data_t]
        parts += [f"**`{task}`** ({len(rows)} runs; seeds {', '.join(map(str, seeds))}; code {commits}):", "",
                  table(data_t, steps, BUDGET.prompts * BUDGET.samples, max(len(seeds), SEEDS)), ""]
        if missing:
            parts += [f"Not yet run on `{task}`: {', '.join(f'`{a}`' for a in missing)}.", ""]
        parts.append(f"![league on {task}]({os.path.relpath(fig, doc.parent)})")
        parts.append("")
    block = "\n".join(parts).rstrip()
    write_block(doc, block)
    res = results(data)
    if readme is not None:
        write_block(readme, readme_block(res))
    if pages is not None:
        for algo in league_algos():
            write_block(pages / f"{algo}.md", row_block(algo, res), ROW_START, ROW_END)
    return block


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), help="which league to run")
    p.add_argument("--algos", default="", help="comma list (default: every algorithm the league lists)")
    add_run_args(p, BUDGET, ",".join(map(str, range(SEEDS))), "league")
    p.add_argument("--data", default=str(DATA), help="folder of the per-task CSVs and figures")
    p.add_argument("--doc", default=str(DOC), help="the page whose marked block gets the tables")
    p.add_argument("--readme", help="the file whose marked block gets the side-by-side table (default: README.md "
                                    "when --data is the kept bench/league)")
    p.add_argument("--pages", help="folder of the algorithms' pages (<algo>.md) whose marked block gets that "
                                   "algorithm's row (default: docs/algorithms when --data is the kept bench/league)")
    p.add_argument("--report", action="store_true", help="only redraw the tables and figures")
    a = p.parse_args(argv)
    data, doc = Path(a.data).resolve(), Path(a.doc).resolve()
    kept = data == DATA        # the repository's own runs: also the README's table and the algorithms' pages
    out = {"readme": Path(a.readme).resolve() if a.readme else README if kept else None,
           "pages": Path(a.pages).resolve() if a.pages else PAGES if kept else None}
    if a.report:
        print(report(data, doc, **out))
        return 0
    if a.task is None:
        p.error("--task is required to run (or --report)")
    every = league_algos()
    algos = [x for x in a.algos.split(",") if x] or every
    if unknown := [x for x in algos if x not in every]:
        p.error(f"unknown algos {unknown}; the league lists {', '.join(every)}")
    seeds, budget, work = parse_run_args(p, a)
    runs = todo(a.task, algos, seeds, budget, data)
    if a.dry_run:
        for algo, s in runs:
            print(shlex.join(command(a.task, algo, s, budget, work)))
        return 0

    def job(algo: str, seed: int) -> Job:
        cmd, rdir = command(a.task, algo, seed, budget, work), run_dir(work, a.task, algo, seed)
        return Job(f"{a.task}/{algo}/seed{seed}", cmd, rdir, data / f"{a.task}.csv",
                   lambda secs: run_row(f"league_{a.task}", algo, seed, rdir, budget_str(a.task, budget), cmd, secs,
                                        METRICS))

    failures = run_jobs([job(*r) for r in runs], a.jobs, f"league {a.task}")
    print(report(data, doc, **out))
    if failures:
        print("[league] failed runs (no row written; rerun to retry):\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
