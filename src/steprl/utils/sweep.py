"""Group the jobs of one Hydra multirun sweep under one MLflow parent run.

The first job of a sweep to get the lock creates the parent run (named after the sweep directory) and writes
its id to ``<sweep dir>/.mlflow_parent_run``; every job (on any machine that shares the sweep directory)
reads it and tags its own run ``mlflow.parentRunId`` (how the MLflow UI nests child runs).
"""
from __future__ import annotations

from pathlib import Path

PARENT_FILE = ".mlflow_parent_run"


def parent_run_id(client, experiment_id: str, sweep_dir: str | Path, tags: dict | None = None) -> str:
    """The id of the sweep's parent run, created once per sweep under a file lock in the sweep dir."""
    from filelock import FileLock

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / PARENT_FILE
    with FileLock(str(path) + ".lock", timeout=120):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        run = client.create_run(experiment_id, run_name=f"sweep {sweep_dir.name}",
                                tags={"sweep": str(sweep_dir), "steprl.sweep_parent": "true", **(tags or {})})
        client.set_terminated(run.info.run_id)  # a container for the jobs: it has no metrics of its own
        path.write_text(run.info.run_id)
        return run.info.run_id


def nest_in_sweep(logger, sweep_dir: str | Path) -> str:
    """Tag the run of an ``MLFlowLogger`` as a child of its sweep's parent run; returns the parent id."""
    client = logger.experiment
    parent = parent_run_id(client, logger.experiment_id, sweep_dir)
    client.set_tag(logger.run_id, "mlflow.parentRunId", parent)
    return parent
