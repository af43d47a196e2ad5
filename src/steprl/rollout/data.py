"""RolloutDataModule: prompt batches from a task, with a resumable position in an endless shuffled stream."""
from __future__ import annotations

import random
import re
import warnings

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, Dataset, Sampler

from steprl.rollout.types import Sample


class StreamSampler(Sampler[int]):
    """Endless stream of dataset indices: epoch ``e`` is a permutation seeded by ``(seed, e)``.

    Position ``p`` maps to ``perm_{p // n}[p % n]``, so a stream can restart at any position in O(n).
    With several ranks, the stream is cut into blocks of ``block`` positions (one global batch) and this rank
    yields positions ``offset .. offset + part - 1`` of each block, so the ranks' prompts are distinct and
    together are exactly the prompts one process would draw.
    """

    def __init__(self, n: int, seed: int, start: int = 0, length: int = 10**9, block: int = 1, part: int = 1,
                 offset: int = 0):
        if n < 1:
            raise ValueError("the task's training set is empty")
        self.n, self.seed, self.start, self.length = n, seed, start, length
        self.block, self.part, self.offset = block, part, offset
        self._perm_epoch, self._perm = -1, []

    def index(self, pos: int) -> int:
        epoch = pos // self.n
        if epoch != self._perm_epoch:
            self._perm = list(range(self.n))
            random.Random(f"{self.seed}-{epoch}").shuffle(self._perm)
            self._perm_epoch = epoch
        return self._perm[pos % self.n]

    def __iter__(self):
        base = self.start
        while base < self.length:
            for j in range(self.part):
                yield base + self.offset + j
            base += self.block

    def __len__(self) -> int:
        return (self.length - self.start) // self.block * self.part


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


NOT_RESUMABLE_WARNING = ("You're resuming from a checkpoint that ended before the epoch ended and your dataloader is"
                         " not resumable")


class RolloutDataModule(L.LightningDataModule):
    """Training prompts (``prompts_per_step`` a batch) and held-out validation problems of a task.

    ``consumed`` is the stream position after the last prompt a training step used; it is saved in
    checkpoints so a resumed run continues with exactly the prompts the uninterrupted run would see.
    Filters that drop groups refill from a second stream (``draw``), whose position is saved too.

    Several ranks (DDP / FSDP): ``prompts_per_step`` is the GLOBAL number of prompts per step and must divide
    by the world size; rank ``r`` takes the ``r``-th slice of each global batch (all G samples of a prompt are
    generated on the rank that drew it), and refills from every ``world``-th position of the refill stream
    (its own position is saved per rank).
    """

    def __init__(self, task, prompts_per_step: int, val_batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.task, self.prompts_per_step, self.val_batch_size, self.seed = task, prompts_per_step, val_batch_size, seed
        self.consumed = 0
        self.refill_pos = 0
        self._stream_start = 0
        self._train = self._val = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            self._train = self.task.train_dataset()
            self._val = self.task.val_dataset()
            self._refill = StreamSampler(len(self._train), self.seed + 7919)

    def ranks(self) -> tuple[int, int]:
        """``(rank, world_size)`` of the trainer this data feeds (``(0, 1)`` outside a distributed run)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self.ranks()
        if self.prompts_per_step % world:
            raise ValueError(f"batch.prompts_per_step={self.prompts_per_step} is the global number of prompts per "
                             f"step and must be divisible by the world size {world} (devices x nodes)")
        part = self.prompts_per_step // world
        self._stream_start = self.consumed
        sampler = StreamSampler(len(self._train), self.seed, start=self.consumed, block=self.prompts_per_step,
                                part=part, offset=rank * part)
        return DataLoader(_Positioned(self._train, sampler), batch_size=part,
                          sampler=sampler, collate_fn=_as_list, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._val, batch_size=self.val_batch_size, shuffle=False, collate_fn=_as_list,
                          generator=torch.Generator().manual_seed(self.seed))

    def mark_consumed(self, batch: list[Sample]) -> None:
        """The stream position after the global batch this (rank's slice of a) batch belongs to."""
        pos = max(s.meta["stream_pos"] for s in batch)
        block = self.prompts_per_step
        self.consumed = self._stream_start + ((pos - self._stream_start) // block + 1) * block

    def draw(self, k: int) -> list[Sample]:
        """``k`` extra prompts from the refill stream (used when filters drop groups)."""
        self.setup()
        rank, world = self.ranks()
        out = [self._train[self._refill.index((self.refill_pos + i) * world + rank)] for i in range(k)]
        self.refill_pos += k
        return out

    def state_dict(self) -> dict:
        from steprl.utils import dist as D

        state = {"consumed": self.consumed, "refill_pos": self.refill_pos}
        if D.is_distributed():  # called on every rank when a checkpoint is written; rank 0 writes it
            state["refill_pos_ranks"] = D.all_gather_object(self.refill_pos)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.consumed, self.refill_pos = int(state["consumed"]), int(state["refill_pos"])
        # Lightning then warns on a mid-epoch resume that the dataloader "is not resumable" (it only knows loaders
        # with their own state_dict). Ours is: the stream restarts at the position restored here. Silence exactly
        # that message; every other warning stays.
        warnings.filterwarnings("ignore", message=re.escape(NOT_RESUMABLE_WARNING), category=PossibleUserWarning)
        rank, world = self.ranks()
        per_rank = state.get("refill_pos_ranks")
        if per_rank is not None:
            # resumed on another world size: continue past every position any rank used
            self.refill_pos = int(per_rank[rank]) if len(per_rank) == world else int(max(per_rank))
