"""Record the golden per-step ``train/loss`` lists of every RL algorithm's ``experiment=<algo>_tiny`` recipe.

    PYTHONPATH=$PWD/src python tests/unit/engine/record_golden.py [--only grpo,prime,...]

rewrites ``tests/unit/engine/golden_losses.json`` (all recipes, or only the named ones, keeping the others);
``tests/unit/engine/test_golden_losses.py`` checks that a run equals them bit for bit. Re-record only when a
recipe or the numbers are meant to change, and say why in the commit.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("golden_losses.json")
STEPS = 2
# the 15 RL algorithms' CPU recipes (sft and the propa_puzzles variant are not RL algorithms of their own)
ALGOS = ["drgrpo", "drm", "e_grpo", "empg", "grpo", "oreal", "pc_grpo", "ppo", "ppr", "prime", "propa",
         "reinforce_pp", "rloo", "salt", "tp_grpo"]
# a fixed seed, STEPS steps, one torch thread; no validation, sanity pass, checkpoint, logger or progress bar
OVERRIDES = ["seed=0", "torch_threads=1", "logger=none", "callbacks.progress_bar=null",
             "callbacks.model_checkpoint=null", "callbacks.sample_table=null", f"trainer.max_steps={STEPS}",
             "trainer.val_check_interval=1000", "trainer.num_sanity_val_steps=0", "task.num_val=4"]


# Where a recipe's first STEPS steps log a loss of exactly 0 the safety net could not fail: OREAL's actor is frozen
# for its first 10 steps while its token RM warms up, so its run unfreezes it at once. Recipes whose full step takes
# minutes on a 2-core CPU run light here: the search recipes' multi-turn episodes and PC-GRPO's 132-token puzzle
# answers at 2 prompts x 4 instead of 16 x 8; PROPA (16 questions, an MCTS of 20 iterations each, ~55 s a step) at
# 2 questions and 4 iterations.
_LIGHT = ["batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
          "batch.micro_batch_size=8"]
EXTRA = {"oreal": ["algo.token_rm.actor_freeze_steps=0"],
         # the recipe's trained relevance encoder is the `steprl[drm]` extra: tests.helpers.TINY_RELEVANCE's stand-in
         "drm": ["algo.relevance.tiny={hidden_size:32,num_layers:2,num_heads:2,intermediate_size:64}"],
         "propa": ["batch.prompts_per_step=2", "batch.minibatch_size=8", "batch.micro_batch_size=8",
                   "algo.mcts.iterations=4"],
         **{a: _LIGHT for a in ("e_grpo", "empg", "pc_grpo", "ppr", "salt")}}


def losses(algo: str, out: Path) -> list[float]:
    """The per-step ``train/loss`` of ``experiment=<algo>_tiny`` run for STEPS steps in this process."""
    from steprl.train import build
    from tests.helpers import Recorder, compose_train

    cfg = compose_train([f"experiment={algo}_tiny", *OVERRIDES, *EXTRA.get(algo, [])], out)
    module, data, trainer = build(cfg)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data)
    return [r["train/loss"] for r in rec.rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated algorithms to re-record (default: all)")
    args = ap.parse_args()
    only = [a for a in args.only.split(",") if a] or ALGOS
    unknown = sorted(set(only) - set(ALGOS))
    if unknown:
        sys.exit(f"--only: unknown algorithms {unknown}; valid: {ALGOS}")
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for algo in only:
        with tempfile.TemporaryDirectory() as tmp:
            golden[algo] = losses(algo, Path(tmp))
        print(f"{algo}: {golden[algo]}", flush=True)
    GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
