"""On resume the datamodule restores the prompt-stream position, so Lightning's generic "your dataloader is not
resumable" warning is silenced, and only that one."""
from __future__ import annotations

import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from steprl.rollout.data import RolloutDataModule
from steprl.tasks import ArithTask

# the text Lightning 2.x emits from its training epoch loop on a mid-epoch resume
LIGHTNING_MESSAGE = ("You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not "
                     "resumable. This can cause unreliable results if further training is done. Consider using an "
                     "end-of-epoch checkpoint or make your dataloader resumable by implementing the `state_dict` / "
                     "`load_state_dict` interface.")


def test_only_the_not_resumable_warning_is_silenced_after_restore():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dm = RolloutDataModule(ArithTask(num_val=4), prompts_per_step=2)
        rank_zero_warn(LIGHTNING_MESSAGE, category=PossibleUserWarning)
        assert len(seen) == 1  # before a restore it is shown
        dm.load_state_dict({"consumed": 6, "refill_pos": 2})
        assert (dm.consumed, dm.refill_pos) == (6, 2)
        rank_zero_warn(LIGHTNING_MESSAGE, category=PossibleUserWarning)
        rank_zero_warn("another possible user warning", category=PossibleUserWarning)
        rank_zero_warn(LIGHTNING_MESSAGE, category=UserWarning)  # same text, other category: still shown
    assert [str(w.message) for w in seen[1:]] == ["another possible user warning", LIGHTNING_MESSAGE]
