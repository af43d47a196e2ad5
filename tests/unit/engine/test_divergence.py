"""Divergence is reported and stops the run (issue 17 item 10): through the real command line, ``optim.lr=1e3``
makes the first update blow the policy up; every later update has a non-finite gradient and is skipped. The run
warns on the console at the first skip and stops with a clear error, exit status non-zero, after
``algo.max_consecutive_skips`` skipped updates in a row."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow  # ~25 s on 2 shared cores (a real training process)
def test_lr_1e3_diverges_and_exits_non_zero(tmp_path):
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "experiment=grpo_tiny", "optim.lr=1e3",
           "batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=8", "batch.micro_batch_size=4",
           "trainer.max_steps=12", "algo.max_consecutive_skips=3", "trainer.num_sanity_val_steps=0",
           "trainer.val_check_interval=100", "logger=none", "callbacks.progress_bar=null", "torch_threads=1",
           f"paths.root_output={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "WARNING: non-finite gradient" in out, out[-3000:]
    assert "training diverged: 3 consecutive optimiser updates had a non-finite gradient" in out, out[-3000:]
    assert out.count("WARNING: non-finite gradient") == 1  # warned once, at the first skip
