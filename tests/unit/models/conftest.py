"""Shared set-up of the engine tests: one torch thread.

The test machine has 2 cores and other work on it; with 2 intra-op threads each tiny forward pass waits on a
busy core (~100x slower), with 1 it takes milliseconds. The previous setting is restored afterwards.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
