"""Sample rollouts (prompt, response, reward, step scores) as an MLflow table every N training steps."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger


class SampleTable(L.Callback):
    def __init__(self, every_n_steps: int = 25):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        rows = (outputs or {}).get("last_samples")  # what RLModule.training_step returned
        if not rows or step % self.every_n_steps:
            return
        table = {k: [str(r[k]) if k == "steps" else r[k] for r in rows] for k in rows[0]}
        table["step"] = [step] * len(rows)
        for lg in trainer.loggers:
            if isinstance(lg, MLFlowLogger):
                lg.experiment.log_table(lg.run_id, data=table, artifact_file=f"samples/step_{step:06d}.json")
