"""Train a policy: `python src/train.py [algo=grpo] [model=tiny_arith] [task=arith] [key=value ...]`."""
import os

import hydra
from omegaconf import DictConfig

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")


@hydra.main(config_path=CONF, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from steprl.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
