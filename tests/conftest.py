"""Fixtures and settings shared by the test packages."""
import os

import pytest
import torch


def pytest_configure(config):
    """Without a visible CUDA device the Triton backend can only run under the interpreter: switch it on for the
    whole run (before any test imports ``daenr_fast.kernels``, whose modules read it at import), unless the caller
    set ``TRITON_INTERPRET`` either way. With a GPU the Triton kernels run compiled; ``TRITON_INTERPRET=1`` on the
    command line then runs them under the interpreter on CPU tensors instead."""
    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def single_thread():
    """One intra-op thread: tiny models are dominated by thread start-up/spin cost on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
