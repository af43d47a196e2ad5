"""Compose the real Hydra configs for tests (no mocks: the same tree `src/train.py` uses)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"


def compose_train(overrides: list[str], out_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The composed training config, with Hydra's runtime set so `${hydra:...}` interpolations resolve."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if out_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out_dir)
            cfg.paths.root_output = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
