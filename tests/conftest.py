"""Fixtures shared by the test packages."""
import pytest
import torch


@pytest.fixture
def single_thread():
    """One intra-op thread: tiny models are dominated by thread start-up/spin cost on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
