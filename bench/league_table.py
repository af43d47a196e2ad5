"""Table and figure of an ``experiment=league_tiny`` Hydra multirun logged with ``logger=csv``.

    python src/train.py -m experiment=league_tiny logger=csv
    python bench/league_table.py outputs/multirun/league_tiny/<time> --runs-csv runs.csv --table table.md \\
        --figure league.png
    python bench/league_table.py --from-csv runs.csv <new sweep dirs> --runs-csv runs.csv
        # add runs made later: a run in the dirs replaces the CSV's rows of its (algo, seed)

Reads every ``<job>-<algo>-seed<k>/csv/metrics.csv`` under the given directories (Hydra's sweep subdirs), and
writes: one long CSV of the per-step metrics it uses (``--runs-csv``, which ``--from-csv`` reads back), a markdown
table (final greedy ``val/acc`` mean ± std over seeds per algorithm, its change from the warm start, the seeds and
steps that ran, rollouts and training wall time per run), and a PNG of the mean ``val/acc`` curves. The full league
in docs/league.md is run by ``bench/league.py``, resumable run by run, which draws its tables with this module. (For
runs logged to MLflow, ``src/report.py --sweep`` does the same from the store.)
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import read_metrics_csv  # noqa: E402

KEYS = ("val/acc", "train/acc", "train/reward", "time/step")
JOB = re.compile(r"^\d+-(?P<algo>.+)-seed(?P<seed>\d+)$")


def read_sweeps(dirs: list[Path]) -> list[dict]:
    """Long rows {algo, seed, step, key, value} from the csv loggers of sweep jobs."""
    rows = []
    for d in dirs:
        for f in sorted(d.rglob("csv/metrics.csv")):
            m = JOB.match(f.parent.parent.name)
            if m is None:
                continue
            for k, by_step in read_metrics_csv(f, KEYS).items():
                rows += [{"algo": m["algo"], "seed": int(m["seed"]), "step": step, "key": k, "value": v}
                         for step, v in by_step.items()]
    return rows


def read_long(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{"algo": r["algo"], "seed": int(r["seed"]), "step": int(r["step"]), "key": r["key"],
                 "value": float(r["value"])} for r in csv.DictReader(fh)]


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with every (algo, seed) that ``new`` has replaced by ``new``'s rows."""
    fresh = {(r["algo"], r["seed"]) for r in new}
    return [r for r in old if (r["algo"], r["seed"]) not in fresh] + new


def series(rows: list[dict]) -> dict:
    """{algo: {seed: {key: {step: value}}}} (the last value logged at a step wins)."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in rows:
        out[r["algo"]][r["seed"]][r["key"]][r["step"]] = r["value"]
    return out


def summary(seeds: dict, max_steps: int) -> dict:
    """One algorithm's result over its seeds ``{seed: {key: {step: value}}}``: ``done`` (seeds that reached
    ``max_steps``), ``mean``/``std`` of their final val/acc (population sd; None when none finished), ``delta`` from
    the warm start (val/acc at step 0), ``steps`` (the most any seed ran), ``time`` (mean train seconds a finished run)
    and ``cell``, the mean ± std as the tables print it (or where unfinished seeds stand)."""
    done = [s for s in seeds if max(seeds[s]["val/acc"], default=-1) >= max_steps]
    finals = [seeds[s]["val/acc"][max_steps] for s in done]
    warm = [seeds[s]["val/acc"][0] for s in seeds if 0 in seeds[s]["val/acc"]]
    out = {"done": len(done), "mean": None, "std": None, "delta": None, "time": None,
           "steps": max((max(seeds[s]["time/step"], default=0) for s in seeds), default=0)}
    if finals:
        out["mean"] = statistics.mean(finals)
        out["std"] = statistics.pstdev(finals) if len(finals) > 1 else 0.0
        out["delta"] = out["mean"] - statistics.mean(warm) if warm else None
        out["time"] = statistics.mean(sum(seeds[s]["time/step"].values()) for s in done)
        # one seed has no spread to show: its value alone
        out["cell"] = f"{out['mean']:.3f} ± {out['std']:.3f}" if len(finals) > 1 else f"{out['mean']:.3f}"
    else:
        last = {s: max(seeds[s]["val/acc"]) for s in seeds if seeds[s]["val/acc"]}
        out["cell"] = "not finished (" + ", ".join(f"seed {s}: {seeds[s]['val/acc'][k]:.3f} at step {k}"
                                                   for s, k in last.items()) + ")"
    return out


def table(data: dict, max_steps: int, rollouts_per_step: int, seeds_wanted: int | None = None) -> str:
    """The markdown table; "seeds done" counts finished runs out of ``seeds_wanted`` (default: the seeds found)."""
    lines = ["| algo | final val/acc (mean ± std) | Δ vs warm start | seeds done | RL steps | rollouts (16 × 8 a step) | train time / run |",
             "|---|---|---|---|---|---|---|"]
    rows = {algo: summary(seeds, max_steps) for algo, seeds in data.items()}
    for algo, r in sorted(rows.items(), key=lambda kv: -math.inf if kv[1]["mean"] is None else -kv[1]["mean"]):
        delta = "—" if r["delta"] is None else f"{r['delta']:+.3f}"
        t = "—" if r["time"] is None else f"{r['time']:.0f} s"
        lines.append(f"| `{algo}` | {r['cell']} | {delta} | {r['done']}/{seeds_wanted or len(data[algo])} | "
                     f"{r['steps']} | {r['steps'] * rollouts_per_step} | {t} |")
    return "\n".join(lines)


def figure(data: dict, out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    cmap = plt.get_cmap("tab10")
    for i, algo in enumerate(sorted(data)):
        seeds = data[algo]
        steps = sorted(set().union(*(seeds[s]["val/acc"].keys() for s in seeds)))
        mean, lo, hi = [], [], []
        for k in steps:
            v = [seeds[s]["val/acc"][k] for s in seeds if k in seeds[s]["val/acc"]]
            mean.append(statistics.mean(v))
            lo.append(min(v))
            hi.append(max(v))
        ax.plot(steps, mean, marker="os^"[i // 10 % 3], linestyle=("-", "--", ":")[i // 10 % 3], linewidth=1.8,
                color=cmap(i % 10), label=f"{algo} ({len(seeds)} seeds)")
        ax.fill_between(steps, lo, hi, color=cmap(i % 10), alpha=0.06)
    ax.set_xlabel("RL step")
    ax.set_ylabel("greedy val/acc (mean over seeds; band: min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", type=Path, help="sweep directories (searched recursively)")
    ap.add_argument("--from-csv", type=Path, help="read the long CSV written by --runs-csv")
    ap.add_argument("--runs-csv", type=Path, help="write the runs' per-step metrics as a long CSV")
    ap.add_argument("--table", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--max-steps", type=int, default=100, help="the runs' RL steps (the default run's: 100)")
    ap.add_argument("--rollouts-per-step", type=int, default=128)
    ap.add_argument("--title", default="league_tiny: arith, warm start tiny_arith, 16 prompts x 8 a step")
    a = ap.parse_args(argv)
    rows = merge(read_long(a.from_csv) if a.from_csv else [], read_sweeps(a.dirs))
    if not rows:
        raise SystemExit("no league runs found (expected <job>-<algo>-seed<k>/csv/metrics.csv)")
    if a.runs_csv:
        a.runs_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(a.runs_csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["algo", "seed", "step", "key", "value"])
            w.writeheader()
            w.writerows(sorted(rows, key=lambda r: (r["algo"], r["seed"], r["key"], r["step"])))
    data = series(rows)
    md = table(data, a.max_steps, a.rollouts_per_step)
    print(md)
    if a.table:
        a.table.write_text(md + "\n")
    if a.figure:
        figure(data, a.figure, a.title)


if __name__ == "__main__":
    main()
