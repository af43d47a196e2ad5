"""task=code trains end to end on CPU: rollouts from a tiny model are graded in the sandbox, garbage scores 0."""
from __future__ import annotations

import math

from steprl.train import build
from tests.helpers import compose_train


def test_code_task_trains_two_steps(tmp_path):
    cfg = compose_train(["logger=none", "callbacks.progress_bar=null", "task=code", "model=tiny",
                         "task.num_synthetic=64", "task.num_val=4", "trainer.max_steps=2",
                         "trainer.val_check_interval=2", "batch.prompts_per_step=2", "batch.samples_per_prompt=2",
                         "batch.minibatch_size=4", "batch.micro_batch_size=4", "rollout.max_new_tokens=16",
                         "val.batch_size=4", "torch_threads=1"], tmp_path)
    module, data, trainer = build(cfg)
    trainer.fit(module, datamodule=data)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert trainer.global_step == 2
    assert math.isfinite(m["train/loss"]) and m["reward/errors"] == 0 and m["reward/timeouts"] == 0
    assert 0.0 <= m["train/reward"] <= 1.0
    assert [s for s, _ in module.val_history] == [0, 2]
