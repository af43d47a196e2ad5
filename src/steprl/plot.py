"""Learning curves from the MLflow store.

    python -m steprl.plot --out docs/default_run.png        # the newest run of experiment `steprl` with val/acc
    python -m steprl.plot --run-id <id> --metrics val/acc train/reward --out curve.png
    python -m steprl.plot --run-name grpo-arith-seed1 --out curve.png   # the newest run of that name
    python -m steprl.plot --sweep outputs/multirun/<date>/<time> --out sweep.png   # every run of a sweep
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from steprl.report import DEFAULT_URI, find_runs, load_curves, metric_history, plot_curves  # noqa: E402


def latest_run(client: MlflowClient, experiment: str, metric: str = "val/acc", run_name: str | None = None) -> str:
    """The newest run of ``experiment`` that has logged ``metric`` (optionally: named ``run_name``). Runs that
    logged nothing yet (just started, or failed at start-up) are passed over."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r} in this store")
    where = f"attributes.run_name = '{run_name}'" if run_name else ""
    runs = client.search_runs([exp.experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=1000)
    for run in runs:
        if metric in run.data.metrics:
            return run.info.run_id
    which = f"named {run_name!r} " if run_name else ""
    raise SystemExit(f"no run {which}of experiment {experiment!r} has logged {metric} ({len(runs)} runs looked at)")


def plot_run(client: MlflowClient, run_id: str, out: Path, metrics=("val/acc", "train/acc"),
             title: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for key in metrics:
        steps, values = metric_history(client, run_id, key)
        if not steps:
            continue
        style = {"marker": "o", "linewidth": 2} if key.startswith("val/") else {"alpha": 0.35, "linewidth": 1}
        if not key.startswith("val/") and len(values) >= 10:
            ax.plot(steps, values, label=f"{key} (per step)", **style)
            k = 10
            smooth = [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
                      for i in range(len(values))]
            ax.plot(steps, smooth, label=f"{key} (10-step mean)", linewidth=2)
        else:
            ax.plot(steps, values, label=key, **style)
    run = client.get_run(run_id)
    ax.set_xlabel("RL step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or run.info.run_name or run_id, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default=DEFAULT_URI)
    ap.add_argument("--experiment", default="steprl")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--run-name", default=None, help="the newest run with this name (e.g. grpo-arith-seed0)")
    ap.add_argument("--sweep", default=None, help="a multirun directory: the curves of all its runs")
    ap.add_argument("--metrics", nargs="+", default=["val/acc", "train/acc"])
    ap.add_argument("--title", default=None)
    ap.add_argument("--out", default="outputs/curve.png")
    a = ap.parse_args()
    db = a.tracking_uri[len("sqlite:///"):] if a.tracking_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():
        raise SystemExit(f"no MLflow store at {a.tracking_uri} (run from the project root after a training run, or "
                         f"pass --tracking-uri)")
    client = MlflowClient(tracking_uri=a.tracking_uri)
    if a.sweep:
        curves = load_curves(client, find_runs(client, a.experiment, a.sweep), a.metrics[0])
        if not curves:
            raise SystemExit(f"no run of sweep {a.sweep} has logged {a.metrics[0]}")
        print(plot_curves(curves, Path(a.out), a.metrics[0], a.title))
        return
    run_id = a.run_id or latest_run(client, a.experiment, a.metrics[0], a.run_name)
    print(f"run {run_id} ({client.get_run(run_id).info.run_name})")
    print(plot_run(client, run_id, Path(a.out), a.metrics, a.title))


if __name__ == "__main__":
    main()
