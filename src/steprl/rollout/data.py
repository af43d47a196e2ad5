"""RolloutDataModule: prompt batches from a task, with a resumable position in an endless shuffled stream."""
from __future__ import annotations

import random

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from steprl.rollout.types import Sample


class StreamSampler(Sampler[int]):
    """Endless stream of dataset indices: epoch ``e`` is a permutation seeded by ``(seed, e)``.

    Position ``p`` maps to ``perm_{p // n}[p % n]``, so a stream can restart at any position in O(n).
    """

    def __init__(self, n: int, seed: int, start: int = 0, length: int = 10**9):
        if n < 1:
            raise ValueError("the task's training set is empty")
        self.n, self.seed, self.start, self.length = n, seed, start, length
        self._perm_epoch, self._perm = -1, []

    def index(self, pos: int) -> int:
        epoch = pos // self.n
        if epoch != self._perm_epoch:
            self._perm = list(range(self.n))
            random.Random(f"{self.seed}-{epoch}").shuffle(self._perm)
            self._perm_epoch = epoch
        return self._perm[pos % self.n]

    def __iter__(self):
        pos = self.start
        while pos < self.length:
            yield pos
            pos += 1

    def __len__(self) -> int:
        return self.length - self.start


class _Positioned(Dataset):
    """Wraps a dataset so that item ``pos`` is the stream's sample, tagged with ``meta['stream_pos']``."""

    def __init__(self, data: Dataset, sampler: StreamSampler):
        self.data, self.sampler = data, sampler

    def __getitem__(self, pos: int) -> Sample:
        s = self.data[self.sampler.index(pos)]
        s.meta = {**s.meta, "stream_pos": pos}
        return s

    def __len__(self) -> int:
        return len(self.sampler)


def _as_list(batch):
    return list(batch)


class RolloutDataModule(L.LightningDataModule):
    """Training prompts (``prompts_per_step`` a batch) and held-out validation problems of a task.

    ``consumed`` is the stream position after the last prompt a training step used; it is saved in
    checkpoints so a resumed run continues with exactly the prompts the uninterrupted run would see.
    Filters that drop groups refill from a second stream (``draw``), whose position is saved too.
    """

    def __init__(self, task, prompts_per_step: int, val_batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.task, self.prompts_per_step, self.val_batch_size, self.seed = task, prompts_per_step, val_batch_size, seed
        self.consumed = 0
        self.refill_pos = 0
        self._train = self._val = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            self._train = self.task.train_dataset()
            self._val = self.task.val_dataset()
            self._refill = StreamSampler(len(self._train), self.seed + 7919)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = StreamSampler(len(self._train), self.seed, start=self.consumed)
        return DataLoader(_Positioned(self._train, sampler), batch_size=self.prompts_per_step,
                          sampler=sampler, collate_fn=_as_list, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._val, batch_size=self.val_batch_size, shuffle=False, collate_fn=_as_list,
                          generator=torch.Generator().manual_seed(self.seed))

    def mark_consumed(self, batch: list[Sample]) -> None:
        self.consumed = max(s.meta["stream_pos"] for s in batch) + 1

    def draw(self, k: int) -> list[Sample]:
        """``k`` extra prompts from the refill stream (used when filters drop groups)."""
        self.setup()
        out = [self._train[self._refill.index(self.refill_pos + i)] for i in range(k)]
        self.refill_pos += k
        return out

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "refill_pos": self.refill_pos}

    def load_state_dict(self, state: dict) -> None:
        self.consumed, self.refill_pos = int(state["consumed"]), int(state["refill_pos"])
