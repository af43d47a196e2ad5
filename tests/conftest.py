"""Fixtures shared by the whole suite."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests, restored afterwards.

    The test machine has 2 cores and often other work on it; with 2 intra-op threads each tiny forward pass
    waits on a busy core (~100x slower), with 1 it takes milliseconds.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
