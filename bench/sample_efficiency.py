"""Sample efficiency on `arith`: GRPO, RLOO, PRIME (and PRIME without its process rewards) and OREAL from the
same warm start (model=tiny_arith), the same prompts and the same number of rollouts per step, for several
seeds. Reports held-out greedy accuracy `val/acc` against rollouts consumed (a markdown table, a PNG plot and
the raw numbers in the folder it names).

    python bench/sample_efficiency.py --out outputs/bench/sample_efficiency          # the full run
    python bench/sample_efficiency.py --arms grpo,prime --seeds 0 --steps 4 --val-every 2 --num-val 16  # smoke
    python bench/sample_efficiency.py --from-results     # the table and figure of the kept run, without training

Every arm draws `prompts x samples` rollouts per step (PRIME's refill is off here, so its accuracy filter only
drops groups and never samples more), so step k means the same rollout count for all arms. `prime_outcome`
is PRIME with the process rewards switched off (advantage.process_coef=0, frozen PRM): the paper's
"RLOO w/ outcome verifier only" comparison (its Fig. 3), with the same filter, whitening and loss as PRIME.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
#: the run docs/prime_oreal.md reports (5 arms x 3 seeds, 100 steps, on an H100): its results.json, kept here
KEPT = ROOT / "bench" / "sample_efficiency_prime.json"

from benchlib import mean_std, rollouts_to_reach  # noqa: E402

from steprl.config import compose_run  # noqa: E402

ARMS = {
    "grpo": ["algo=grpo"],
    "rloo": ["algo=rloo"],
    "prime": ["algo=prime", "algo.filters.max_refill_rounds=0", "reward.token.lr=6e-5"],
    "prime_outcome": ["algo=prime", "algo.filters.max_refill_rounds=0", "advantage.process_coef=0",
                      "reward.token.update=none"],
    # PRIME variants for the tiny setting (not run by default): a larger beta for ~25-token answers (the paper's
    # 0.05 is for ~1000-token ones, so sigma(beta * sum q) needs a much larger log-ratio here), a smaller PRM lr
    "prime_beta1": ["algo=prime", "algo.filters.max_refill_rounds=0", "reward.token.lr=6e-5", "reward.token.beta=1.0"],
    "prime_lowlr": ["algo=prime", "algo.filters.max_refill_rounds=0", "reward.token.lr=6e-6"],
    "oreal": ["algo=oreal", "algo.token_rm.lr=1e-3", "algo.token_rm.actor_freeze_steps={freeze}"],
}


def run_one(arm: str, seed: int, a, out: Path, bar) -> dict:
    import lightning as L

    from steprl.train import build

    P, G = a.prompts, a.samples
    overrides = [o.format(freeze=a.oreal_freeze) for o in ARMS[arm]] + [
        "model=tiny_arith", "task=arith", f"seed={seed}", "logger=none", "callbacks.progress_bar=null",
        "callbacks.sample_table=null", "callbacks.model_checkpoint=null", f"torch_threads={a.threads}",
        f"batch.prompts_per_step={P}", f"batch.samples_per_prompt={G}", f"batch.minibatch_size={P * G}",
        f"batch.micro_batch_size={min(P * G, 32)}", f"trainer.max_steps={a.steps}",
        f"trainer.val_check_interval={a.val_every}", f"task.num_val={a.num_val}", f"val.batch_size={a.num_val}",
        "++trainer.enable_progress_bar=false", *a.extra]
    cfg = compose_run(overrides, Path(a.work or out / "runs") / f"{arm}-s{seed}")

    class Track(L.Callback):
        def __init__(self):
            self.train: list[dict] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            m = trainer.callback_metrics
            get = lambda k: float(m[k]) if k in m else float("nan")  # noqa: E731
            self.train.append({"step": trainer.global_step, "train_acc": get("train/acc"),
                               "groups": get("filter/groups"), "prm_acc": get("prime/prm_acc"),
                               "rm_acc": get("oreal/rm_acc")})
            if bar is not None:
                bar.update(1)

    module, data, trainer = build(cfg)
    track = Track()
    trainer.callbacks.append(track)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return {"arm": arm, "seed": seed, "rollouts_per_step": P * G, "seconds": time.perf_counter() - t0,
            "val": [[s, acc, s * P * G] for s, acc in module.val_history], "train": track.train}


def _run_in_worker(arm: str, seed: int, a, out: Path) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    return run_one(arm, seed, a, out, None)


def curves(results: list[dict]) -> dict[str, dict[int, list[float]]]:
    """arm -> rollouts -> val/acc of each seed."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in results:
        for _, acc, n in r["val"]:
            out.setdefault(r["arm"], {}).setdefault(int(n), []).append(acc)
    return out


def report(results: list[dict], a, out: Path) -> str:
    cur = curves(results)
    arms = [x for x in a.arms if x in cur]
    ns = sorted({n for c in cur.values() for n in c})
    lines = [f"`val/acc` (greedy, {a.num_val} held-out arith problems), mean ± std over seeds "
             f"{sorted({r['seed'] for r in results})}; {a.prompts} prompts x {a.samples} samples = "
             f"{a.prompts * a.samples} rollouts per step.", "",
             "| rollouts | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for n in ns:
        cells = []
        for arm in arms:
            v = cur[arm].get(n)
            cells.append(f"{mean_std(v)[0]:.3f} ± {mean_std(v)[1]:.3f}" if v else "—")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    means = {arm: [(n, mean_std(v)[0]) for n, v in sorted(cur[arm].items())] for arm in arms}
    lines += ["", "| arm | start | end | gain | seconds per run |", "|---|---|---|---|---|"]
    for arm in arms:
        secs = [r["seconds"] for r in results if r["arm"] == arm]
        s, e = means[arm][0][1], means[arm][-1][1]
        lines.append(f"| {arm} | {s:.3f} | {e:.3f} | {e - s:+.3f} | {sum(secs) / len(secs):.0f} |")
    for base in ("prime_outcome", "rloo"):
        if "prime" in means and base in means:
            target = means[base][-1][1]
            need, have = rollouts_to_reach(means["prime"], target), means[base][-1][0]
            if target <= means[base][0][1]:
                lines.append(f"\n{base} did not improve on the warm start, so no sample-efficiency ratio of "
                             f"PRIME over it is defined.")
            elif need is None:
                lines.append(f"\nPRIME never reached {base}'s final accuracy {target:.3f} ({have} rollouts).")
            else:
                lines.append(f"\nPRIME reached {base}'s final mean accuracy {target:.3f} after {need:.0f} rollouts "
                             f"vs {have} for {base}: {have / max(need, 1):.2f}x the sample efficiency.")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], a, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cur = curves(results)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm in [x for x in a.arms if x in cur]:
        pts = sorted(cur[arm].items())
        xs = [n for n, _ in pts]
        ms = [mean_std(v)[0] for _, v in pts]
        ss = [mean_std(v)[1] for _, v in pts]
        ax.plot(xs, ms, marker="o", label=arm)
        ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)], alpha=0.15)
    ax.set_xlabel("rollouts consumed")
    ax.set_ylabel(f"val/acc (greedy, {a.num_val} problems)")
    ax.set_title(f"arith from tiny_arith: mean ± std over {len(a.seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def redraw(results_json: Path, out: Path) -> None:
    """``table.md`` and ``sample_efficiency.png`` in ``out`` from a results file (the run's own arguments)."""
    data = json.loads(results_json.read_text())
    a = argparse.Namespace(**data["args"])
    out.mkdir(parents=True, exist_ok=True)
    table = report(data["runs"], a, out)
    (out / "table.md").write_text(table)
    plot(data["runs"], a, out / "sample_efficiency.png")
    print(table)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="grpo,rloo,prime,prime_outcome,oreal")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4, help="G (PRIME's K = 4)")
    p.add_argument("--val-every", type=int, default=10)
    p.add_argument("--num-val", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--oreal-freeze", type=int, default=3, help="OREAL's actor_freeze_steps (paper: 10 of 80)")
    p.add_argument("--out", default="outputs/bench/sample_efficiency")
    p.add_argument("--resume", action="store_true", help="skip runs already in <out>/results.json")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes); 1: sequential")
    p.add_argument("--work", default=None, help="folder for the runs' own output (default <out>/runs)")
    p.add_argument("--from-results", type=Path, nargs="?", const=KEPT,
                   help=f"redraw the table and figure of a results.json without training (no path: {KEPT.name})")
    p.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    a = p.parse_args(argv)
    if a.from_results:
        return redraw(a.from_results, Path(a.out))
    a.arms = [x for x in a.arms.split(",") if x]
    a.seeds = [int(s) for s in a.seeds.split(",") if s]
    unknown = set(a.arms) - set(ARMS)
    if unknown:
        p.error(f"unknown arms {sorted(unknown)}; choose from {sorted(ARMS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text())["runs"] if a.resume and res_path.exists() else []
    done = {(r["arm"], r["seed"]) for r in results}
    todo = [(arm, s) for s in a.seeds for arm in a.arms if (arm, s) not in done]

    from tqdm import tqdm

    save = lambda: res_path.write_text(json.dumps({"args": vars(a), "runs": results}, indent=1))  # noqa: E731
    with tqdm(total=len(todo) * a.steps, desc="RL steps", unit="step") as bar:
        if a.jobs <= 1:
            for arm, seed in todo:
                bar.set_postfix_str(f"{arm} seed {seed}")
                results.append(run_one(arm, seed, a, out, bar))
                save()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(_run_in_worker, arm, seed, a, out): (arm, seed) for arm, seed in todo}
                for fut in as_completed(futs):
                    results.append(fut.result())
                    bar.set_postfix_str(f"done {futs[fut][0]} seed {futs[fut][1]}")
                    bar.update(a.steps)
                    save()
    table = report(results, a, out)
    (out / "table.md").write_text(table)
    plot(results, a, out / "sample_efficiency.png")
    print(table)
    print(f"[bench] wrote {out / 'table.md'}, {out / 'sample_efficiency.png'}, {res_path}")


if __name__ == "__main__":
    main()
