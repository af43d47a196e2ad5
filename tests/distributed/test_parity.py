"""2-process DDP and FSDP2 on CPU (gloo) give the losses of 1 process on the same global batch, and a
distributed run resumes from its checkpoint with the same losses (per-rank data position and RNG streams).

Rollouts are made deterministic (``rollout.top_k=1``) so both world sizes see the same global batch: rank 0
draws the first half of each step's prompts, rank 1 the second half. All G samples of a prompt are then equal,
the group advantage is 0, and the loss is the entropy bonus, a token-mean over the minibatch: it equals the
1-process value only if the normaliser counts the tokens of BOTH ranks (responses differ in length), and the
second step equals it only if the first update (gradients averaged over ranks) did.
Every run is a subprocess with a timeout, so a hang fails the test instead of blocking it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.gloo import run_steps

COMMON = ["experiment=grpo_tiny", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
          "trainer.val_check_interval=100", "rollout.top_k=1", "algo.loss.entropy_coef=0.01",
          "batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=16", "batch.micro_batch_size=4",
          "callbacks.model_checkpoint.every_n_train_steps=1"]
KEYS = ("train/loss", "train/entropy", "train/grad_norm", "train/response_len", "train/reward")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def run(out: Path, *overrides: str, timeout: int = 420) -> dict:
    m = run_steps(out, *COMMON, *overrides, timeout=timeout)
    return json.loads(m.read_text())


def close(a: dict, b: dict, keys=KEYS, tol=1e-5):
    for k in keys:
        assert abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])), (k, a[k], b[k])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run(tmp_path_factory.mktemp("one"))


@pytest.mark.parametrize("hardware", ["ddp_cpu", "fsdp_cpu"])
def test_two_ranks_equal_one_process(hardware, one_process, tmp_path):
    two = run(tmp_path, f"hardware={hardware}")
    assert two["world"] == 2 and one_process["world"] == 1
    assert len(two["rows"]) == len(one_process["rows"]) == 2
    for a, b in zip(one_process["rows"], two["rows"]):
        close(a, b)
    assert two["consumed"] == one_process["consumed"] == 8  # the global stream position


@pytest.mark.parametrize("hardware", ["ddp_cpu", "fsdp_cpu"])
def test_distributed_resume_gives_the_same_losses(hardware, one_process, tmp_path):
    full = run(tmp_path / "full", f"hardware={hardware}", "algo.loss.entropy_coef=0.0", "rollout.top_k=0")
    ckpt = tmp_path / "full" / "checkpoints" / "step000001.ckpt"
    assert ckpt.exists()
    resumed = run(tmp_path / "resumed", f"hardware={hardware}", "algo.loss.entropy_coef=0.0", "rollout.top_k=0",
                  f"ckpt_path={ckpt}")
    assert len(resumed["rows"]) == 1
    close(full["rows"][1], resumed["rows"][0], keys=KEYS + ("train/clip_frac",))
    assert resumed["consumed"] == full["consumed"] == 8
