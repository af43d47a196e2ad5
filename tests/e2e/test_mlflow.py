"""MLflow round trip: what a run logs (params, metrics, config artifact, sample tables) can be read back,
and the plotting code draws a learning curve from it."""
from __future__ import annotations

import json

import yaml
from mlflow.tracking import MlflowClient

from steprl.plot import latest_run, plot_run
from steprl.report import metric_history
from steprl.train import train
from tests.helpers import SMOKE, compose_train


def test_mlflow_round_trip(tmp_path):
    cfg = compose_train(["experiment=grpo_tiny", "callbacks.progress_bar=null", "callbacks.sample_table.every_n_steps=2",
                         "trainer.val_check_interval=2", "algo.log_samples=3", *SMOKE, "trainer.max_steps=4",
                         "callbacks.model_checkpoint.every_n_train_steps=4"], tmp_path)
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    train(cfg)

    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    run_id = latest_run(client, "steprl")
    run = client.get_run(run_id)
    assert run.data.params["batch/prompts_per_step"] == "4"
    assert run.data.params["algo/loss/agg"] == "token-mean"
    assert run.data.params["advantage/kind"] == "grpo"

    steps, losses = metric_history(client, run_id, "train/loss")
    assert steps == [1, 2, 3, 4]
    val_steps, val = metric_history(client, run_id, "val/acc")
    assert val_steps == [0, 2, 4]  # 0: the warm start, measured by the sanity pass
    assert all(0.0 <= v <= 1.0 for v in val)
    for key in ("train/reward", "train/acc", "train/entropy", "time/rollout", "perf/tokens_per_s"):
        assert len(client.get_metric_history(run_id, key)) == 4, key

    root = client.download_artifacts(run_id, "", str(tmp_path / "dl"))
    logged = yaml.safe_load(open(f"{root}/config.yaml"))
    assert logged["batch"]["samples_per_prompt"] == 4 and logged["seed"] == 0
    table = json.load(open(f"{root}/samples/step_000002.json"))
    assert set(table["columns"]) >= {"prompt", "response", "reward", "steps", "step"}
    assert len(table["data"]) == 3

    png = plot_run(client, run_id, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
