"""Fixtures of the training tests on the tiny in-memory data set (tiny_data.py)."""
import pytest
from tiny_data import tiny_dataset

from daenr_fast.data import prepare


@pytest.fixture(scope="session")
def tiny_splits():
    return prepare(tiny_dataset(), val_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    from daenr_fast.data import save_npz

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_npz(tiny_dataset(), path)
    return str(path)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs with one intra-op thread (see tests/conftest.py)."""
    yield
