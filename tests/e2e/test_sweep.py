"""A Hydra multirun sweep (`-m`) is grouped in MLflow: its jobs are child runs of one parent run, created once
per sweep; train.py returns the optimised metric (what an Optuna sweeper maximises)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_two_job_multirun_ends_with_two_children_under_one_parent(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "STEPRL_OUTPUTS": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "seed=0,1", "experiment=grpo_tiny",
           "trainer.max_steps=1", "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=1", "task.num_val=8",
           "rollout.max_new_tokens=16", "callbacks.model_checkpoint=null", "callbacks.sample_table=null",
           "callbacks.progress_bar=null", "torch_threads=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("steprl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("steprl.sweep_parent") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params["seed"] for r in children} == {"0", "1"}
    assert all("val/acc" in r.data.metrics for r in children)  # the metric train() returns to the sweeper
