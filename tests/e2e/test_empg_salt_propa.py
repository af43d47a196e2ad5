"""experiment=empg_tiny / salt_tiny (and propa_tiny) run 2 RL steps end to end on CPU; paper recipes compose."""
from __future__ import annotations

import math

import pytest

from steprl.config import check_config
from tests.e2e.test_train import run
from tests.helpers import compose_train

FAST = ["trainer.max_steps=2", "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=100",
        "batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
        "batch.micro_batch_size=8", "rollout.max_new_tokens=24"]


@pytest.mark.parametrize("algo", ["empg", "salt"])
def test_tiny_runs_two_steps(algo, tmp_path):
    rows, _ = run([f"experiment={algo}_tiny", *FAST], tmp_path)
    assert len(rows) == 2
    assert all(math.isfinite(r["train/loss"]) for r in rows)
    if algo == "empg":
        assert all(r["empg/g_mean"] == pytest.approx(1.0, abs=1e-5) for r in rows)
        assert all(r["empg/steps_per_traj"] >= 1 for r in rows)
    else:
        assert all(0.0 <= r["salt/merged_frac"] <= 1.0 for r in rows)


@pytest.mark.parametrize("recipe", ["empg_grpo_qwen7b", "empg_dapo_qwen7b", "salt_grpo_qwen7b"])
def test_paper_recipes_compose(recipe, tmp_path):
    cfg = compose_train([f"experiment={recipe}", "logger=none"], tmp_path)
    derived = check_config(cfg)
    assert derived["rollouts_per_step"] == 128 and cfg.optim.lr == 1e-6
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct" and cfg.rollout.max_new_tokens == 512
    algo = recipe.split("_")[0]
    assert cfg.algo._target_ == f"steprl.algos.{algo}.{algo.upper()}"
    if recipe == "empg_dapo_qwen7b":
        assert cfg.algo.loss.clip_eps_high == 0.28 and cfg.algo.kl.coef == 0 and cfg.algo.filters.zero_variance
    else:
        assert cfg.algo.kl.coef == 0.01 and cfg.algo.kl.estimator == "k3"
    if algo == "empg":
        assert dict(cfg.algo.empg) == {"k": 1.0, "k_future": 1.0, "zeta": 0.1, "eps": 1e-8, "final_norm": "mean"}


def test_propa_tiny_runs_two_steps(tmp_path):
    """One outer PROPA iteration per step: MCTS, GRPO on sibling groups, SFT on unsolved questions, PRM."""
    # 2 questions and 4 MCTS iterations (the recipe's 16 questions x 20 iterations take ~55 s a step here)
    rows, m, out = run(["experiment=propa_tiny", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
                        "trainer.val_check_interval=100", "batch.prompts_per_step=2", "batch.minibatch_size=8",
                        "batch.micro_batch_size=8", "algo.mcts.iterations=4"], tmp_path, outputs=True)
    assert len(rows) == 2
    for r in rows:  # a step trains on its sibling groups, or says it skipped (no tree found a correct path)
        assert ("train/loss" in r and math.isfinite(r["train/loss"])) or r.get("train/skipped_steps") == 1.0
        assert 0.0 <= r["train/reward"] <= 1.0
        assert r["propa/expansions"] >= 1 and r["propa/tree_nodes"] > 1
        assert math.isfinite(r["propa/prm_loss"])
        assert r["propa/sft_questions"] == 2 * (1 - r["propa/solved_frac"])
        assert r["time/prm"] > 0 and r["time/sft"] >= 0  # the phases after the update are timed apart
    ro, rw = out["step"].unfiltered
    assert ((rw.outcome >= 0) & (rw.outcome <= 1)).all()
    assert ro.response_ids.shape[0] == rw.outcome.shape[0] == 4 * int(rows[-1]["propa/groups"])


def test_propa_recipe_composes(tmp_path):
    cfg = compose_train(["experiment=propa_qwen2_5_vl_3b", "logger=none"], tmp_path)
    assert check_config(cfg)["rollouts_per_step"] == 160
    assert cfg.algo.kl.coef == 0.001 and cfg.algo.loss.agg == "seq-mean-token-mean" and cfg.optim.max_grad_norm == 0.5
    assert cfg.algo.mcts.iterations == 20 and cfg.algo.mcts.expand_temperature == 1.2
    assert cfg.model.path == "Qwen/Qwen2.5-VL-3B-Instruct"
