"""Record the golden per-step numbers of every RL algorithm's ``experiment=<algo>_tiny`` recipe.

Per step: ``train/loss``, ``train/grad_norm`` (the mean over the step's optimiser updates of the policy's
gradient norm before clipping), ``train/entropy`` (the policy's token entropy on the loss tokens: it covers the
forward, the masks and the micro-batching where nothing else moves) and ``adv_abs_sum`` (the sum of
``|advantage|`` over the loss tokens of the rows trained on, from the step's ``extras["advantages"]``). Several
recipes' losses are ~1e-8 (RLOO, REINFORCE++, PRIME: whitened or leave-one-out advantages average to 0 over the
batch) or 0, so the loss alone would let most changes to the rewards or the advantages through; the advantages'
absolute sum and the gradient norm do not. E-GRPO and SALT run at 4 questions x 4 episodes, where groups from
the search warm start have mixed outcomes (at 2 x 4 every episode scored 0 and only the entropy could move).

    PYTHONPATH=$PWD/src python tests/unit/engine/record_golden.py [--only grpo,prime,...]

rewrites ``tests/unit/engine/golden_losses.json`` (all recipes, or only the named ones, keeping the others);
``tests/unit/engine/test_golden_losses.py`` checks that a run equals them up to float32 rounding (bit for bit on
the machine that recorded them). Re-record only when a recipe or the numbers are meant to change, and say why in
the commit.
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
# minutes on a 2-core CPU run light here: the search recipes' multi-turn episodes and PC-GRPO's puzzle
# answers at 2 prompts x 4 instead of 16 x 8; PROPA (16 questions, an MCTS of 20 iterations each, ~55 s a step) at
# 2 questions and 4 iterations.
_LIGHT = ["batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
          "batch.micro_batch_size=8"]
EXTRA = {"oreal": ["algo.token_rm.actor_freeze_steps=0"],
         # the recipe's trained relevance encoder is the `steprl[drm]` extra: tests.helpers.TINY_RELEVANCE's stand-in
         "drm": ["algo.relevance.tiny={hidden_size:32,num_layers:2,num_heads:2,intermediate_size:64}"],
         "propa": ["batch.prompts_per_step=2", "batch.minibatch_size=8", "batch.micro_batch_size=8",
                   "algo.mcts.iterations=4"],
         **{a: _LIGHT for a in ("empg", "pc_grpo", "ppr")},
         # 4 questions x 4 episodes: at 2 x 4 every episode of both steps scored 0 (zero advantages, a golden that
         # cannot fail); with the search warm start (0.766 held out) 4 groups of 4 have mixed outcomes
         **{a: ["batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=16",
                "batch.micro_batch_size=8"] for a in ("e_grpo", "salt")}}


KEYS = ("train/loss", "train/grad_norm", "train/entropy", "adv_abs_sum")


def numbers(algo: str, out: Path) -> dict[str, list[float | None]]:
    """The per-step :data:`KEYS` of ``experiment=<algo>_tiny`` run for STEPS steps in this process (None where
    a step does not log one)."""
    from steprl.train import build
    from tests.helpers import Recorder, compose_train

    class Record(Recorder):  # the logged metrics, and the advantages' absolute sum from each step's outputs
        adv: list[float | None] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            step = outputs["step"]
            adv = step.extras.get("advantages")
            self.adv.append(None if adv is None else float((adv.detach() * step.ro.loss_mask).abs().sum()))

    cfg = compose_train([f"experiment={algo}_tiny", *OVERRIDES, *EXTRA.get(algo, [])], out)
    module, data, trainer = build(cfg)
    rec = Record()
    rec.adv = []
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data)
    got = {k: [r.get(k) for r in rec.rows] for k in KEYS[:-1]}
    got["adv_abs_sum"] = rec.adv
    return got


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
            golden[algo] = numbers(algo, Path(tmp))
        print(f"{algo}: {golden[algo]}", flush=True)
    GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
