"""experiment=ppr_tiny and experiment=e_grpo_tiny run 2 RL steps end to end on CPU and log their own metrics;
the paper recipes compose and pass the config checks."""
from __future__ import annotations

import math

import pytest

from steprl.config import check_config
from tests.e2e.test_train import run
from tests.helpers import compose_train


@pytest.mark.slow  # tests/e2e/test_train.py runs both recipes (4 steps) in the fast suite; this adds metric checks
@pytest.mark.parametrize("exp,keys", [
    ("ppr_tiny", {"ppr/judged_turns", "ppr/process_reward", "judge/requests", "train/kl"}),
    ("e_grpo_tiny", {"e_grpo/match_rate", "e_grpo/over_length", "agent/turns", "agent/format_errors"}),
])
def test_agent_tiny_experiments_run_two_steps(exp, keys, tmp_path):
    rows, module = run([f"experiment={exp}", "trainer.max_steps=2", "trainer.val_check_interval=2",
                        "task.num_val=8", "callbacks.model_checkpoint.every_n_train_steps=2"], tmp_path)
    assert len(rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rows)
    assert keys <= set(rows[-1])
    assert module.val_history and module.val_history[-1][0] == 2
    if exp == "ppr_tiny":
        assert rows[-1]["ppr/judged_turns"] > 0 and rows[-1]["judge/parse_failures"] == 0


@pytest.mark.parametrize("exp", ["ppr_7b", "e_grpo_7b"])
def test_paper_recipes_compose(exp, tmp_path):
    cfg = compose_train([f"experiment={exp}", "logger=none"], tmp_path)
    derived = check_config(cfg)
    assert derived["rollouts_per_step"] == cfg.batch.prompts_per_step * cfg.batch.samples_per_prompt
    assert "{question}" in cfg.task.prompt_template
