"""Run a few training steps of a composed config and write each step's logged metrics (rank 0) to a JSON file.

    python tests/distributed/run_steps.py OUT_JSON OUT_DIR [override ...]

Lightning's DDP / ModelParallel launchers start the other ranks by re-running this same command line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402

from steprl.train import build  # noqa: E402
from tests.helpers import compose_train  # noqa: E402


class Recorder(L.Callback):
    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def main() -> None:
    out_json, out_dir, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    cfg = compose_train(["logger=none", "callbacks.progress_bar=null", "callbacks.sample_table=null", *overrides],
                        out_dir)
    module, data, trainer = build(cfg)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
    if trainer.global_rank == 0:
        params = {n: float(p.detach().float().abs().sum()) for n, p in module.policy.named_parameters()
                  if p.requires_grad and not hasattr(p, "full_tensor")}
        out_json.write_text(json.dumps({"rows": rec.rows, "world": trainer.world_size,
                                        "consumed": data.consumed, "param_abs_sum": params}))


if __name__ == "__main__":
    main()
