"""ModelCheckpoint that always leaves ``last.ckpt``, also when max_steps is not a multiple of the interval."""
from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self.dirpath and self._last_global_step_saved != trainer.global_step:
            trainer.save_checkpoint(os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
            self._last_global_step_saved = trainer.global_step
