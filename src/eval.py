"""Evaluate a policy (or saved predictions) on a task: `python src/eval.py [ckpt_path=...] [task=...] [predictions=...]`.

The last line printed is `accuracy=<x>`. See src/steprl/eval.py for the metrics and outputs.
"""
import os

import hydra
from omegaconf import DictConfig

from steprl.config import register_resolvers

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
register_resolvers()  # before Hydra composes (the run dir and the artifact location use them)


@hydra.main(config_path=CONF, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from steprl.eval import evaluate

    report = evaluate(cfg)
    print(f"accuracy={report['accuracy']:.6f}", flush=True)
    return report["accuracy"]


if __name__ == "__main__":
    main()
