"""Shared settings of the model tests."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs with one intra-op thread (see tests/conftest.py)."""
    yield
