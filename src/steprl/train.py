"""Compose -> check -> instantiate -> fit. ``src/train.py`` is the Hydra entry point that calls ``train``."""
from __future__ import annotations

import logging
import math
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from steprl.callbacks.lifecycle import RunInterrupted, RunLifecycle, StopRequest
from steprl.config import banner, check_config, register_resolvers
from steprl.rollout.data import RolloutDataModule
from steprl.utils.redact import redact

register_resolvers()
# Lightning prints through its own handler; without this, Hydra's root handler prints every line twice
logging.getLogger("lightning.pytorch").propagate = False


def build(cfg: DictConfig) -> tuple[L.LightningModule, RolloutDataModule, L.Trainer]:
    """Instantiate the module, data and trainer of a composed config (also used by tests)."""
    derived = check_config(cfg)
    print(banner(cfg, derived), flush=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = hydra.utils.instantiate(cfg.task)
    rollout = hydra.utils.instantiate(cfg.rollout)
    container = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    # objects are passed after instantiation: Hydra would turn dataclass instances back into configs
    algo = container(cfg.algo)
    # the reward components are built by the module (steprl.rewards.components.build_reward), the judge where it
    # scores (with the task and the algorithm's prompt): not by Hydra's recursive instantiation here
    reward = {"reward": algo.pop("reward")} if "reward" in algo else {}
    make = hydra.utils.instantiate(algo, _partial_=True, _convert_="all")
    module = make(model=container(cfg.model), task=task, rollout=rollout, optim=container(cfg.optim),
                  batch=container(cfg.batch), seed=cfg.seed, val=container(cfg.val),
                  total_steps=cfg.trainer.max_steps, **reward)
    data = RolloutDataModule(task, cfg.batch.prompts_per_step, cfg.val.batch_size, seed=cfg.seed)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    # a resumed run has measured its warm start already: no second full validation pass before training
    sanity = 0 if cfg.get("ckpt_path") else cfg.trainer.get("num_sanity_val_steps", 2)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger, num_sanity_val_steps=sanity)
    return module, data, trainer


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The whole resolved config as MLflow params (flattened) and as a ``config.yaml`` artifact."""
    from lightning.pytorch.loggers import MLFlowLogger

    for lg in trainer.loggers:
        if isinstance(lg, MLFlowLogger):
            resolved = OmegaConf.to_container(_without_hydra(cfg), resolve=True)
            resolved = redact(resolved)  # secrets masked in params and config.yaml (steprl.utils.redact)
            if cfg.logger.get("run_id"):  # a resumed run continues its MLflow run
                _log_resumed(lg, resolved)
                continue
            lg.log_hyperparams(resolved)
            lg.experiment.log_text(lg.run_id, OmegaConf.to_yaml(resolved), "config.yaml")
            tags = _run_tags()
            for key, value in tags.items():
                lg.experiment.set_tag(lg.run_id, key, value)
            if "sweep" in tags and trainer.is_global_zero:  # a multirun: nest the job under the sweep's parent run
                from steprl.utils.sweep import nest_in_sweep

                nest_in_sweep(lg, tags["sweep"])


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's config without Hydra's own node (present when a config is composed by the compose API)."""
    if "hydra" not in cfg:
        return cfg
    from omegaconf import open_dict

    out = cfg.copy()
    with open_dict(out):
        del out["hydra"]
    return out


def _run_tags() -> dict[str, Any]:
    """``choices`` (the config-group options of this run) and, in a Hydra multirun, ``sweep`` (the sweep's
    directory, shared by all its jobs: filter on it in the MLflow UI to see one sweep) and ``job``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    tags = {"choices": " ".join(f"{k}={v}" for k, v in choices.items())}
    if hc.mode == RunMode.MULTIRUN:
        tags["sweep"] = str(hc.sweep.dir)
        tags["job"] = str(hc.job.num)
    return tags


def train(cfg: DictConfig) -> float | None:
    stop = StopRequest().install()
    console = ConsoleLog.open(cfg)
    try:
        quiet()
        prepare_mlflow_store(cfg)  # before the logger is built: building it opens (and may create) the store
        module, data, trainer = build(cfg)
        trainer.callbacks.append(RunLifecycle(cfg, stop))  # last-step validation, run config in checkpoints, stop
        log_config(trainer, cfg)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
        except RunInterrupted as stopped:
            report_interrupt(cfg, trainer, stopped)
            raise SystemExit(128 + stopped.signum) from None
        metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "val/acc")
        report_end(cfg, trainer, module)
        value = float(metric) if metric is not None else None
        return value if value is None or math.isfinite(value) else None
    finally:
        stop.restore()
        console.close()


# ---------------------------------------------------------------------------------------------- run lifecycle
# (what the user sees around the engine: quiet console, train.log, MLflow store, end-of-run and Ctrl-C reports)
KNOWN_HARMLESS = (
    r".*isinstance\(treespec, LeafSpec\)",              # torch pytree deprecation inside Lightning
    r"Found \d+ module\(s\) in eval mode",                # frozen reference / reward models are eval by design
    r"The '(train|val)_dataloader' does not have many workers",  # rollouts are generated in-process
    r".*is not resumable",                                # our stream sampler restores its own position
    r"Using ModelCheckpoint with manual optimization",     # our checkpoints hold the updated weights, as meant
    r"The dirpath has changed from",                      # a resumed run writes to its own new run directory
    r"You're resuming from a checkpoint that ended before the epoch ended",  # RL runs are one endless epoch
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


def quiet() -> None:
    """Silence warnings and log lines known to be harmless here; everything else still shows."""
    import warnings

    for pattern in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=pattern)
    import mlflow  # noqa: F401 - configures its loggers on import: set their level after that

    for name in ("mlflow", "alembic", "httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


class ConsoleLog:
    """Copies everything the run prints (stdout, stderr, Python log records) to ``<run dir>/train.log``."""

    def __init__(self, path):
        import sys

        self.file = open(path, "a", encoding="utf-8", buffering=1)
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.file), _Tee(sys.stderr, self.file)
        self.handlers = []
        # Lightning's handlers hold the streams they were made with; the root logger's records already reach
        # train.log through Hydra's file handler (conf/hydra: job_logging)
        for name in ("lightning.pytorch", "lightning.fabric"):
            for h in logging.getLogger(name).handlers:
                if type(h) is logging.StreamHandler and h.stream in self.saved:
                    self.handlers.append((h, h.stream))
                    h.setStream(sys.stdout if h.stream is self.saved[0] else sys.stderr)

    @classmethod
    def open(cls, cfg: DictConfig):
        import os

        try:
            out = str(cfg.paths.output_dir)
        except Exception:  # noqa: BLE001 - no run directory (a config composed without Hydra's runtime)
            return _NoLog()
        if not os.path.isdir(out):
            return _NoLog()
        return cls(os.path.join(out, "train.log"))

    def close(self) -> None:
        import sys

        for h, stream in self.handlers:
            h.setStream(stream)
        if isinstance(sys.stdout, _Tee) and sys.stdout.file is self.file:
            sys.stdout, sys.stderr = self.saved
        self.file.close()


class _NoLog:
    def close(self) -> None:
        pass


class _Tee:
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        if not self.file.closed:
            self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        if not self.file.closed:
            self.file.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def prepare_mlflow_store(cfg: DictConfig) -> None:
    """Create a local sqlite store and the experiment under a file lock: two runs starting together against a
    fresh store would otherwise both create its tables (one fails with "duplicate column name")."""
    lg = cfg.get("logger")
    if not lg or "MLFlowLogger" not in str(lg.get("_target_", "")):
        return
    uri = str(lg.tracking_uri)
    if not uri.startswith("sqlite:///"):
        return
    from pathlib import Path

    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=300):
        client = MlflowClient(tracking_uri=uri)
        name = str(lg.get("experiment_name") or "Default")
        if client.get_experiment_by_name(name) is None:
            location = lg.get("artifact_location")
            client.create_experiment(name, artifact_location=str(location) if location else None)


def _log_resumed(lg, resolved: dict) -> None:
    """A resumed run: the MLflow run is RUNNING again; params it has keep their first value (MLflow refuses to
    change them), new ones are added, and this session's config is an artifact of its own."""
    from lightning.fabric.utilities.logger import _flatten_dict  # Lightning's own flattening of params

    client, run_id = lg.experiment, lg.run_id
    client.update_run(run_id, status="RUNNING")
    have = set(client.get_run(run_id).data.params)
    params = {k: v for k, v in _flatten_dict(resolved, delimiter="/").items() if k not in have}
    if params:
        lg.log_hyperparams(params)
    n = sum(1 for a in client.list_artifacts(run_id) if a.path.startswith("config_resume"))
    client.log_text(run_id, OmegaConf.to_yaml(resolved), f"config_resume{n + 1}.yaml")


def _mlflow(trainer: L.Trainer):
    from lightning.pytorch.loggers import MLFlowLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def _where(trainer: L.Trainer) -> list[str]:
    import os

    lines = []
    lc = next((cb for cb in trainer.callbacks if isinstance(cb, RunLifecycle)), None)
    if lc is not None and os.path.exists(lc.last_path(trainer)):
        lines.append(f"[steprl] checkpoint: {os.path.relpath(lc.last_path(trainer))}")
    lg = _mlflow(trainer)
    if lg is not None and lg._run_id:
        uri = lg._tracking_uri
        exp = lg._experiment_id
        lines.append(f"[steprl] MLflow run {lg.run_id} (experiment {lg._experiment_name}); to open it:")
        lines.append(f"    mlflow ui --backend-store-uri {uri}   # then http://127.0.0.1:5000/#/experiments/{exp}/runs/"
                     f"{lg.run_id}")
    return lines


def report_end(cfg: DictConfig, trainer: L.Trainer, module) -> None:
    import os

    if not trainer.is_global_zero:
        return
    hist = getattr(module, "val_history", [])
    if hist:
        (s0, a0), (s1, a1) = hist[0], hist[-1]
        print(f"[steprl] val/acc {a0:.3f} (step {s0}) -> {a1:.3f} (step {s1})", flush=True)
    print(f"[steprl] done: {trainer.global_step} steps; run dir: {os.path.relpath(str(cfg.paths.output_dir))}",
          flush=True)
    for line in _where(trainer):
        print(line, flush=True)


def report_interrupt(cfg: DictConfig, trainer: L.Trainer, stopped: RunInterrupted) -> None:
    import signal

    name = signal.Signals(stopped.signum).name
    lg = _mlflow(trainer)
    if lg is not None and lg._run_id:
        try:
            lg.experiment.set_terminated(lg.run_id, status="KILLED")
        except Exception as e:  # noqa: BLE001 - the report below matters more
            print(f"[steprl] could not mark MLflow run {lg.run_id} KILLED: {e}", flush=True)
    if not trainer.is_global_zero:
        return
    import os

    if stopped.saved:
        ckpt = os.path.relpath(stopped.saved)
        print(f"[steprl] stopped by {name} after step {stopped.step} of {cfg.trainer.max_steps}; saved {ckpt}",
              flush=True)
        print(f"[steprl] resume with: python src/train.py ckpt_path={ckpt}", flush=True)
    else:
        why = "the step in progress was abandoned" if stopped.abandoned else "no step had finished"
        print(f"[steprl] stopped by {name} at step {stopped.step} of {cfg.trainer.max_steps}; {why}, nothing saved",
              flush=True)
        lc = next((cb for cb in trainer.callbacks if isinstance(cb, RunLifecycle)), None)
        folder = os.path.dirname(lc.last_path(trainer)) if lc is not None else None
        saved = sorted((os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".ckpt")),
                       key=os.path.getmtime) if folder and os.path.isdir(folder) else []
        if saved:
            print(f"[steprl] latest checkpoint: {os.path.relpath(saved[-1])}; resume with: python src/train.py "
                  f"ckpt_path={os.path.relpath(saved[-1])}", flush=True)
    print(f"[steprl] run dir: {os.path.relpath(str(cfg.paths.output_dir))}", flush=True)
