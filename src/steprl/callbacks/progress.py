"""A rich progress bar that counts RL steps (Lightning's shows 'Epoch 0/-2' for step-bounded runs)."""
import sys

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        return "RL steps"

    @property
    def total_train_batches(self):
        """``trainer.max_steps``: the bar counts RL steps from 0 (a resumed run starts at its checkpoint's step;
        Lightning's total would be the steps left, showing e.g. ``53/2``)."""
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def _init_progress(self, trainer) -> None:
        # the live bar goes to the terminal itself, not into train.log (where the run's lines are copied)
        self._console_kwargs["file"] = getattr(sys.stdout, "stream", sys.stdout)
        super()._init_progress(trainer)
