"""Fixtures shared by the whole suite, and ``--torch-threads``."""
import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=None, metavar="N",
                     help="run every test with N torch threads: each torch.set_num_threads call (the one_thread "
                          "fixture, tests, build()'s torch_threads) sets N, and subprocesses get OMP_NUM_THREADS=N; "
                          "to check that float comparisons hold under another thread count")


def pytest_configure(config):
    n = config.getoption("--torch-threads")
    if n is None:
        return
    if n < 1:
        raise pytest.UsageError(f"--torch-threads must be >= 1, got {n}")
    os.environ["OMP_NUM_THREADS"] = str(n)
    real = torch.set_num_threads
    real(n)
    torch.set_num_threads = lambda _requested: real(n)


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
