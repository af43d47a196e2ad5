"""experiment=empg_tiny / salt_tiny (and propa_tiny) run 2 RL steps end to end on CPU; paper recipes compose."""
from __future__ import annotations

import math

import pytest

from steprl.config import check_config
from tests.e2e.test_train import run
from tests.helpers import compose_train

FAST = ["trainer.max_steps=2", "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=100",
        "batch.prompts_per_step=2", "batch.minibatch_size=8", "rollout.max_new_tokens=24"]


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
