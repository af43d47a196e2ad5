"""Train a policy: `python src/train.py [algo=grpo] [model=tiny_arith] [task=arith] [key=value ...]`."""
import os

import hydra
from omegaconf import DictConfig

from steprl.cli import install_hydra_error_hints
from steprl.config import register_resolvers

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
register_resolvers()  # before Hydra composes: `--cfg job --resolve` and hydra.run.dir use them
install_hydra_error_hints()


@hydra.main(config_path=CONF, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from steprl.cli import preflight

    cfg = preflight(cfg)  # config and outside-world checks, one line each, before the heavy imports
    from steprl.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
