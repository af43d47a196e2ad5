"""Compose -> check -> instantiate -> fit. ``src/train.py`` is the Hydra entry point that calls ``train``."""
from __future__ import annotations

import logging
import math
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

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
    make = hydra.utils.instantiate(container(cfg.algo), _partial_=True, _convert_="all")
    module = make(model=container(cfg.model), task=task, rollout=rollout, optim=container(cfg.optim),
                  batch=container(cfg.batch), seed=cfg.seed, val=container(cfg.val),
                  total_steps=cfg.trainer.max_steps)
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
    module, data, trainer = build(cfg)
    log_config(trainer, cfg)
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "val/acc")
    if module.val_history:
        first, last = module.val_history[0], module.val_history[-1]
        print(f"[steprl] val/acc {first[1]:.3f} (step {first[0]}) -> {last[1]:.3f} (step {last[0]})", flush=True)
    value = float(metric) if metric is not None else None
    return value if value is None or math.isfinite(value) else None
