"""RolloutDataModule / StreamSampler: an endless, seeded, resumable stream of training prompts.

ArithTask samples carry their dataset index in ``meta["index"]``, so a batch can be mapped back to the
dataset positions it used.
"""
from __future__ import annotations

import itertools

import pytest

from steprl.rollout.data import RolloutDataModule, StreamSampler
from steprl.tasks import ArithTask

N_TRAIN = 7


def _task(seed: int = 0) -> ArithTask:
    return ArithTask(num_train=N_TRAIN, num_val=4, seed=seed)


def _dm(prompts_per_step: int = 3, seed: int = 0) -> RolloutDataModule:
    return RolloutDataModule(_task(), prompts_per_step, val_batch_size=4, seed=seed)


def _batches(dm: RolloutDataModule, k: int) -> list[list]:
    return list(itertools.islice(iter(dm.train_dataloader()), k))


def _key(batch) -> list[tuple[int, int, str]]:
    return [(s.meta["stream_pos"], s.meta["index"], s.uid) for s in batch]


# ------------------------------------------------------------------------------------------ StreamSampler
def test_stream_epochs_are_seeded_permutations():
    n = 5
    s = StreamSampler(n, seed=3)
    seq = [s.index(p) for p in range(4 * n)]
    epochs = [seq[e * n:(e + 1) * n] for e in range(4)]
    for ep in epochs:
        assert sorted(ep) == list(range(n))  # every epoch uses each item exactly once
    assert len({tuple(ep) for ep in epochs}) > 1  # epochs are reshuffled
    assert [StreamSampler(n, seed=3).index(p) for p in range(4 * n)] == seq  # deterministic
    assert [StreamSampler(n, seed=4).index(p) for p in range(4 * n)] != seq  # the seed matters
    # random access in any order (a restart anywhere) gives the same mapping
    fresh = StreamSampler(n, seed=3)
    for p in [17, 2, 11, 0, 19, 5, 6]:
        assert fresh.index(p) == seq[p]


def test_stream_iterates_positions_from_start():
    s = StreamSampler(4, seed=0, start=6, length=10)
    assert list(s) == [6, 7, 8, 9] and len(s) == 4
    assert len(StreamSampler(4, seed=0)) == 10**9  # endless for practical purposes
    with pytest.raises(ValueError, match="empty"):
        StreamSampler(0, seed=0)


# ------------------------------------------------------------------------------------------ data module
def test_batches_are_deterministic_and_walk_the_stream():
    dm = _dm()
    got = _batches(dm, 5)  # 15 positions = two whole epochs of 7 and one more
    assert all(len(b) == 3 for b in got)
    flat = [k for b in got for k in _key(b)]
    assert [pos for pos, _, _ in flat] == list(range(15))
    idx = [i for _, i, _ in flat]
    assert sorted(idx[:7]) == list(range(7)) and sorted(idx[7:14]) == list(range(7))
    # the same sample the task gives for that index
    task = _task()
    for s in got[0]:
        assert s.uid == task.train_dataset()[s.meta["index"]].uid
        assert s.prompt == task.train_dataset()[s.meta["index"]].prompt
    assert [_key(b) for b in _batches(_dm(), 5)] == [_key(b) for b in got]
    assert [_key(b) for b in _batches(_dm(seed=1), 5)] != [_key(b) for b in got]


@pytest.mark.parametrize("restart", [2, 4])
def test_restart_at_consumed_reproduces_the_continuation(restart):
    """``restart`` batches of 3 were used (positions 0 .. 3*restart-1); a new data module loaded with that state
    yields exactly the batches the uninterrupted one went on to yield (crossing the epoch boundary at 7)."""
    full = _batches(_dm(), 6)
    first = _dm()
    used = _batches(first, restart)
    first.mark_consumed(used[-1])
    assert first.consumed == 3 * restart
    state = first.state_dict()
    resumed = _dm()
    resumed.load_state_dict(state)
    assert resumed.consumed == 3 * restart
    assert [_key(b) for b in _batches(resumed, 6 - restart)] == [_key(b) for b in full[restart:]]


def test_restart_mid_batch_position():
    """consumed need not be a multiple of prompts_per_step (e.g. after a change of batch size)."""
    full = [k for b in _batches(_dm(), 4) for k in _key(b)]  # positions 0..11
    dm = _dm()
    dm.load_state_dict({"consumed": 5, "refill_pos": 0})
    assert [k for b in _batches(dm, 2) for k in _key(b)] == full[5:11]


def test_draw_refill_stream_is_deterministic_and_checkpointed():
    ref = _dm().draw(2 * N_TRAIN + 3)
    idx = [s.meta["index"] for s in ref]
    assert sorted(idx[:N_TRAIN]) == list(range(N_TRAIN))  # also a stream of permutations
    assert sorted(idx[N_TRAIN:2 * N_TRAIN]) == list(range(N_TRAIN))
    dm = _dm()
    a, b = dm.draw(2), dm.draw(3)
    assert [s.uid for s in a + b] == [s.uid for s in ref[:5]]  # draws continue one stream
    state = dm.state_dict()
    assert state == {"consumed": 0, "refill_pos": 5}
    resumed = _dm()
    resumed.load_state_dict(state)
    assert [s.uid for s in resumed.draw(4)] == [s.uid for s in ref[5:9]]
    assert [s.uid for s in dm.draw(4)] == [s.uid for s in ref[5:9]]
    # drawing does not move the training stream
    assert dm.consumed == 0
    assert [_key(x) for x in _batches(dm, 2)] == [_key(x) for x in _batches(_dm(), 2)]


def test_val_dataloader_is_the_fixed_validation_split():
    dm = _dm()
    val = [s for b in dm.val_dataloader() for s in b]
    task = _task()
    assert [s.uid for s in val] == [task.val_dataset()[i].uid for i in range(4)]
    train_prompts = {task.train_dataset()[i].prompt for i in range(N_TRAIN)}
    assert not train_prompts & {s.prompt for s in val}
