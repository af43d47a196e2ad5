"""GPU check of every algorithm through the config a user runs: ``experiment=<algo>_tiny`` composed with Hydra's
compose API (the config ``src/train.py`` would compose, plus the check's overrides), built by
``steprl.train.build`` and trained for a few RL steps on the device, once per precision. No algorithm class is
imported: what runs is each algorithm's own recipe, its stages, judge, reward models and update as configured.

    python scripts/gpu_check.py                              # every algorithm, fp32 and bf16-mixed, on one GPU
    python scripts/gpu_check.py --algos grpo,tp_grpo,drm     # a subset
    python scripts/gpu_check.py --device cpu --algos grpo    # the same steps on CPU, with small batches
    python scripts/gpu_check.py --dry-run                    # compose and check every algorithm's config only

Each run must log a finite ``train/loss`` and ``train/grad_norm`` at every step and a non-zero gradient at some
step (unless every rollout of the run had the same outcome: no learning signal), with the policy on the device;
a line per run gives the seconds per step, the loss, the gradient norm, the accuracy of the rollouts and the peak
GPU memory. ``--dry-run`` composes each algorithm's config for the device and checks it
(``steprl.config.check_config``: keys, batch arithmetic) without building a model, so it needs no GPU.
``STEPRL_CHECK_CPU=1`` is ``--device cpu``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# the 15 RL algorithms, each with its own CPU recipe (experiment=<algo>_tiny: its task, warm start and settings)
ALGOS = ("grpo", "rloo", "drgrpo", "reinforce_pp", "ppo", "prime", "ppr", "tp_grpo", "empg", "salt", "e_grpo",
         "oreal", "drm", "propa", "pc_grpo")
PRECISIONS = {"fp32": ["trainer.precision=32-true"], "bf16": ["trainer.precision=bf16-mixed"]}
STEPS = 2
# a fixed seed, STEPS steps; no validation, sanity pass, checkpoint, logger or progress bar
COMMON = ["seed=0", "logger=none", "callbacks.progress_bar=null", "callbacks.model_checkpoint=null",
          "callbacks.sample_table=null", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=1000",
          "trainer.num_sanity_val_steps=0", "+trainer.enable_progress_bar=false", "task.num_val=8"]
DEVICE = {"cuda": ["hardware=gpu"], "cpu": ["hardware=cpu", "torch_threads=1"]}
# OREAL's actor waits 10 steps for its token RM in the recipe: here it trains at once (else its loss is 0).
# PROPA's 16 questions x 20 MCTS iterations take a minute a step: 2 questions, 4 iterations here.
EXTRA = {"oreal": ["algo.token_rm.actor_freeze_steps=0"],
         "propa": ["batch.prompts_per_step=2", "batch.minibatch_size=8", "batch.micro_batch_size=8",
                   "algo.mcts.iterations=4"]}
# on CPU every recipe runs 2 prompts x 4 samples (the recipes' 16 x 8 take minutes a step on a 2-core CPU)
SMALL = ["batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
         "batch.micro_batch_size=8", "rollout.max_new_tokens=48"]


def overrides(algo: str, device: str, precision: str) -> list[str]:
    """The Hydra overrides of one check: the algorithm's recipe, the device, the precision, a short run."""
    small = SMALL if device == "cpu" else []
    return [f"experiment={algo}_tiny", *DEVICE[device], *PRECISIONS[precision], *COMMON, *small,
            *EXTRA.get(algo, [])]


def run(algo: str, device: str, precision: str, out_dir: Path, dry_run: bool) -> str:
    """One algorithm in one precision: compose, check, (unless ``dry_run``) train STEPS steps and check each."""
    import lightning as L

    from steprl.config import check_config, compose_run

    cfg = compose_run(overrides(algo, device, precision), out_dir)
    check_config(cfg)
    if cfg.trainer.accelerator != ("gpu" if device == "cuda" else "cpu"):
        raise AssertionError(f"{algo}: trainer.accelerator={cfg.trainer.accelerator} for --device {device}")
    shape = f"{cfg.batch.prompts_per_step} x {cfg.batch.samples_per_prompt}"
    if dry_run:
        return f"{algo} {precision}: composed ({cfg.algo._target_}, task {cfg.task._target_.rsplit('.', 1)[1]}, " \
               f"{shape} rollouts a step, {cfg.trainer.accelerator} {cfg.trainer.precision})"
    import torch

    from steprl.train import build, quiet

    class Steps(L.Callback):
        def __init__(self):
            self.rows, self.t = [], time.time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.time()
            self.rows.append({"s": now - self.t, **{k: float(v) for k, v in trainer.callback_metrics.items()}})
            self.t = now

    quiet()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    module, data, trainer = build(cfg)
    steps = Steps()
    trainer.callbacks.append(steps)
    trainer.fit(module, datamodule=data)
    where = next(module.policy.parameters()).device.type
    if where != device:
        raise AssertionError(f"{algo} {precision}: the policy trained on {where}, not {device}")
    if len(steps.rows) != STEPS:
        raise AssertionError(f"{algo} {precision}: {len(steps.rows)} steps ran, not {STEPS}")
    for i, r in enumerate(steps.rows):
        loss, gn = r.get("train/loss", math.nan), r.get("train/grad_norm", math.nan)
        if not (math.isfinite(loss) and math.isfinite(gn)):
            raise AssertionError(f"{algo} {precision} step {i + 1}: train/loss {loss}, train/grad_norm {gn}")
    # a step whose rollouts all got the same outcome (accuracy 0 or 1) may carry no learning signal at all
    flat = all(r.get("train/acc") in (0.0, 1.0) for r in steps.rows)
    if not flat and not any(r["train/grad_norm"] > 0 for r in steps.rows):
        raise AssertionError(f"{algo} {precision}: no step had a gradient (train/grad_norm 0 at every step)")
    last = steps.rows[-1]
    mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
    return (f"{algo} {precision}: {STEPS} steps of {shape}, {sum(r['s'] for r in steps.rows) / STEPS:.1f} s/step, "
            f"loss {last['train/loss']:.4g}, grad_norm {last['train/grad_norm']:.4g}, "
            f"acc {last.get('train/acc', math.nan):.3f}{mem}{' (every outcome equal: no signal)' if flat else ''}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", default=",".join(ALGOS), help=f"comma-separated subset of {','.join(ALGOS)}")
    ap.add_argument("--device", choices=("cuda", "cpu"),
                    default="cpu" if os.environ.get("STEPRL_CHECK_CPU") == "1" else "cuda")
    ap.add_argument("--precisions", default=None,
                    help=f"comma-separated subset of {','.join(PRECISIONS)} (default: all on cuda, fp32 on cpu)")
    ap.add_argument("--dry-run", action="store_true", help="compose and check the configs only (no model, no GPU)")
    args = ap.parse_args(argv)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if bad:
        ap.error(f"--algos: unknown algorithm {bad[0]!r}; choose from {', '.join(ALGOS)}")
    precisions = (args.precisions or ("fp32,bf16" if args.device == "cuda" else "fp32")).split(",")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        ap.error(f"--precisions: unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
    if args.device == "cuda" and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device (--device cpu runs the same steps on CPU, --dry-run composes only)")
    for precision in precisions:
        for algo in algos:
            with tempfile.TemporaryDirectory() as tmp:
                print(f"[gpu_check] {run(algo, args.device, precision, Path(tmp), args.dry_run)}", flush=True)
    if args.device == "cuda" and not args.dry_run:
        import torch

        where = torch.cuda.get_device_name()
    else:
        where = f"{args.device}{' (dry run: composed only)' if args.dry_run else ''}"
    print(f"[gpu_check] {', '.join(algos)} OK on {where}", flush=True)
    print("GPU_CHECK_OK")


if __name__ == "__main__":
    main()
