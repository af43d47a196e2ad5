"""A rich progress bar that counts RL steps (Lightning's shows 'Epoch 0/-2' for step-bounded runs)."""
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        return "RL steps"
