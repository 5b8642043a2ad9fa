"""The fault tests run the trainer in this process beside real subprocesses (OMP_NUM_THREADS=1)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process runs on one thread, like the subprocesses: the same numbers, and no contention with the
    other processes of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
