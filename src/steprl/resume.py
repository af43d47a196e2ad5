"""Resume a run with its own settings: ``python src/train.py ckpt_path=<run>/checkpoints/last.ckpt [key=value ...]``.

The checkpoint carries the run's config (``steprl_run``: the unresolved config, the command-line overrides that
made it, its MLflow run id; older checkpoints: the run directory's ``.hydra/``). The resumed run trains with that
config; the overrides given now apply on top of it, each difference is printed, and those that cannot apply to
the saved state (another model, algorithm, task or batch layout) are refused. A run that has reached
``trainer.max_steps`` says so and trains nothing. An MLflow run continues under its own run id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from steprl import job
from steprl.config import ConfigError

RUN_KEY = "steprl_run"
#: changes a checkpoint cannot take: its weights, its algorithm's state and its data stream belong to these
FROZEN = ("model.path", "model.tiny", "model.lora", "model.quantization", "algo._target_", "task._target_",
          "batch.prompts_per_step", "batch.samples_per_prompt")
_MISSING = object()
#: groups a resumed run cannot change
FROZEN_GROUPS = ("algo", "model", "task")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped), or a ConfigError saying it is not a steprl checkpoint."""
    p = Path(path)
    if p.is_dir() and (p / "meta.pt").is_file():  # a distributed (sharded) checkpoint: its non-tensor state
        p = p / "meta.pt"
    if not p.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    import torch

    try:
        try:
            ck = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever torch says, the file is not ours
        raise ConfigError(f"ckpt_path={path} is not a steprl checkpoint (torch.load cannot read it as one); give "
                          f"a <run dir>/checkpoints/*.ckpt written by src/train.py") from None
    if not isinstance(ck, dict) or not ({"steprl", "global_step"} <= set(ck) or p.name == "meta.pt"):
        raise ConfigError(f"ckpt_path={path} is not a steprl checkpoint (no steprl training state in it); give a "
                          f"<run dir>/checkpoints/*.ckpt written by src/train.py")
    return ck


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists, empty mappings and None are leaves."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def override_key(o: str) -> str:
    return o.split("=", 1)[0].lstrip("+~")


def saved_run(ck: dict, ckpt_path: str) -> tuple[dict | None, list[str], dict, str]:
    """``(config, overrides, run info, where it came from)`` of the run that wrote the checkpoint."""
    info = dict(ck.get(RUN_KEY) or {})
    hydra_dir = Path(ckpt_path).resolve().parent.parent / ".hydra"
    if info.get("choices") is None and (hydra_dir / "hydra.yaml").is_file():
        hc = yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) or {}
        info["choices"] = ((hc.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    if info.get("config") is not None:
        return info["config"], list(info.get("overrides") or []), info, "the checkpoint"
    if (hydra_dir / "config.yaml").is_file():
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text())
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) \
            if (hydra_dir / "overrides.yaml").is_file() else []
        return config, list(overrides or []), info, str(hydra_dir / "config.yaml")
    return None, [], info, ""


def merge(saved: dict, saved_overrides: list[str], now_overrides: list[str]) -> tuple[dict, list[str]]:
    """The saved config with what ``now_overrides`` change (relative to the saved run's own overrides) on top.
    Returns the merged (flat) config and the effective overrides."""
    from hydra import compose

    now = [o for o in now_overrides if override_key(o) != "ckpt_path" and not o.startswith("hydra.")]
    now_keys = {override_key(o) for o in now}
    saved_all = [o for o in saved_overrides if override_key(o) != "ckpt_path" and not o.startswith("hydra.")]
    before = [o for o in saved_all if override_key(o) not in now_keys]
    plain = lambda c: OmegaConf.to_container(c, resolve=False)  # noqa: E731
    base = flatten(plain(compose("train", overrides=saved_all)))
    mine = flatten(plain(compose("train", overrides=before + now)))
    changed = {k for k in set(base) | set(mine) if base.get(k, _MISSING) != mine.get(k, _MISSING)}
    # a key given now applies even where it equals what today's files would give (the saved value may differ)
    for key in now_keys:
        changed |= {k for k in set(base) | set(mine) if k == key or k.startswith(key + ".")}
    merged = flatten(saved)
    for key in changed:  # first what the command line removes, then what it sets
        if key not in mine:
            merged.pop(key, None)
    for key in sorted(k for k in changed if k in mine):
        # a node that became a leaf (logger=none) or the other way round: drop what was under / above it
        for k in [k for k in merged if k.startswith(key + ".") or key.startswith(k + ".")]:
            del merged[k]
        merged[key] = mine[key]
    return merged, before + now


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config to resume ``cfg.ckpt_path`` with; exits (status 0) when that run has nothing left to train."""
    ckpt_path = str(cfg.ckpt_path)
    ck = read_checkpoint(ckpt_path)
    step = int(ck.get("global_step", 0))
    saved, saved_overrides, info, source = saved_run(ck, ckpt_path)
    if saved is None:
        print(f"[steprl] resume: {ckpt_path} holds no config and its run directory has no .hydra/config.yaml; "
              f"resuming with the config of this command line", flush=True)
        out = cfg
    else:
        saved = {k: v for k, v in saved.items() if k != "hydra"}
        choices = {k: v for k, v in (info.get("choices") or {}).items() if v is not None}
        for o in overrides:
            key, _, value = o.partition("=")
            if key in FROZEN_GROUPS and choices.get(key) not in (None, value):
                raise ConfigError(f"cannot resume {ckpt_path} with {key}={value}: the run was trained with "
                                  f"{key}={choices[key]}, and its weights, optimiser and data position belong to "
                                  f"it (start a new run without ckpt_path)")
            if key in choices and "." not in key and not key.startswith(("+", "~")):
                choices[key] = value
        job.effective_choices = choices
        merged, job.effective_overrides = merge(saved, saved_overrides, overrides)
        merged["ckpt_path"] = ckpt_path
        old = flatten(saved)
        diffs = [(k, old.get(k, _MISSING), merged.get(k, _MISSING)) for k in sorted(set(old) | set(merged))
                 if k != "ckpt_path" and old.get(k, _MISSING) != merged.get(k, _MISSING)]
        frozen = [d for d in diffs if d[0].startswith(FROZEN)]
        if frozen:
            k, a, b = frozen[0]
            raise ConfigError(f"cannot resume {ckpt_path} with {k}={_show(b)}: the run was trained with "
                              f"{k}={_show(a)}, and its weights, optimiser and data position belong to that "
                              f"(model, algorithm, task and batch layout stay; start a new run without ckpt_path)")
        print(f"[steprl] resuming {ckpt_path} at step {step} with the run's own config (from {source})",
              flush=True)
        for k, a, b in diffs:
            print(f"[steprl] resume: {k}: {_show(a)} (checkpoint) -> {_show(b)} (command line)", flush=True)
        out = OmegaConf.create(unflatten(merged))
        OmegaConf.set_struct(out, True)
        _set_mlflow_run(out, info)
        _save_run_config(out)
    max_steps = OmegaConf.select(out, "trainer.max_steps")
    if max_steps is not None and step >= int(max_steps):
        hist = (ck.get("steprl") or {}).get("val_history") or []
        val = (f" val/acc {hist[0][1]:.3f} (step {hist[0][0]}) -> {hist[-1][1]:.3f} (step {hist[-1][0]})."
               if hist else "")
        print(f"[steprl] {ckpt_path} is a finished run: step {step} of trainer.max_steps={max_steps}, nothing to "
              f"train.{val} To train on, raise it: trainer.max_steps={int(max_steps) * 2}", flush=True)
        raise SystemExit(0)
    return out


def _show(v: Any) -> str:
    return "(unset)" if v is _MISSING else repr(v) if isinstance(v, str) and not v else str(v)


def _set_mlflow_run(cfg: DictConfig, info: dict) -> None:
    """Continue the checkpoint's MLflow run when this run logs to the same store."""
    from omegaconf import open_dict

    run_id, uri = info.get("mlflow_run_id"), info.get("tracking_uri")
    lg = cfg.get("logger")
    if not run_id or not lg or "MLFlowLogger" not in str(lg.get("_target_", "")):
        return
    try:
        same = str(lg.tracking_uri) == uri
    except Exception:  # noqa: BLE001 - an unresolvable URI is reported where the logger is built
        same = False
    if same:
        with open_dict(cfg):
            cfg.logger.run_id = run_id
        print(f"[steprl] resume: continuing MLflow run {run_id}", flush=True)


def _save_run_config(cfg: DictConfig) -> None:
    """The run directory's ``.hydra/config.yaml`` shows the config the run really trains with."""
    try:
        from hydra.core.hydra_config import HydraConfig

        out = Path(HydraConfig.get().runtime.output_dir) / ".hydra" / "config.yaml"
    except Exception:  # noqa: BLE001 - no Hydra run directory
        return
    if out.parent.is_dir():
        OmegaConf.save(cfg, out)


def run_info(cfg: DictConfig, trainer) -> dict[str, Any]:
    """What a checkpoint stores about its run (see ``RUN_KEY``)."""
    from lightning.pytorch.loggers import MLFlowLogger

    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    overrides = job.effective_overrides if job.effective_overrides is not None else job.task_overrides()
    info: dict[str, Any] = {"config": plain,
                            "overrides": [o for o in overrides if override_key(o) != "ckpt_path"
                                          and not o.startswith("hydra.")],
                            "choices": dict(job.effective_choices if job.effective_choices is not None
                                        else job.hydra_choices())}
    for lg in trainer.loggers:
        if isinstance(lg, MLFlowLogger):
            info["mlflow_run_id"] = lg.run_id
            info["tracking_uri"] = str(cfg.logger.tracking_uri)
    return info
