"""TP-GRPO with an OpenAI-compatible judge that answers its start-up probe and then fails every call: the run
warns on the console and stops with a clear error after `judge.max_failed_steps` steps, instead of training on
without the judge's signal (it used to log 16/16 failures at DEBUG and go on)."""
from __future__ import annotations

import logging

import pytest

from steprl.rewards.judges import JudgeFailing
from steprl.train import train
from tests.helpers import compose_train
from tests.unit.rewards.chat_server import ChatServer


@pytest.mark.slow
def test_tp_grpo_stops_when_every_judge_call_fails(tmp_path, caplog):
    with ChatServer(lambda messages: "unused") as srv:
        srv.plan.extend(["500"] * 10_000)  # every chat completion fails; GET /models (the probe) answers
        cfg = compose_train(["experiment=tp_grpo_tiny", "judge=openai", f"judge.openai.base_url={srv.base_url}",
                             "judge.openai.retries=0", "judge.max_failed_steps=2", "algo.tp_grpo.round_steps=1",
                             "trainer.max_steps=6", "trainer.num_sanity_val_steps=0",
                             # 4 prompts x 4 samples, one update (the recipe's 16 x 8 costs minutes a step here)
                             "batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=16",
                             "batch.micro_batch_size=16", "trainer.val_check_interval=100",
                             "logger=none", "callbacks.progress_bar=null", "torch_threads=1"], tmp_path)
        with caplog.at_level(logging.WARNING, logger="steprl.rewards.judges"), \
                pytest.raises(JudgeFailing, match=r"every call failed in 2 judged batches in a row.*HTTP 500"):
            train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "calls failed in this batch" in r.getMessage()]
    assert warnings and "16 of 16 calls failed" in warnings[0]
    posts = [r for r in srv.requests if "messages" in r["body"]]
    assert len(posts) == 2 * 16  # two steps of 4 prompts x 4 samples, one attempt each, then the stop
