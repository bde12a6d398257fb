"""Shared fixtures for the data tests: each simulated region is generated once per session; the real Antolik
et al. 2016 region folders (test-only layout) are in ``files/antolik2016`` (README there names the source)."""
import warnings
from pathlib import Path

import pytest

from daenr_fast.data import load_antolik, simulate

REAL = Path(__file__).parent / "files" / "antolik2016"


@pytest.fixture(scope="session")
def sim_regions():
    """{region: NeuralDataset} for regions 1, 2, 3 at seed 0."""
    return {region: simulate(region=region, seed=0) for region in (1, 2, 3)}


@pytest.fixture(scope="session")
def real_dir():
    """The folder holding the real ``region1`` .. ``region3`` folders."""
    return REAL


@pytest.fixture(scope="session")
def real_regions():
    """{region: NeuralDataset} of the real region folders (test only: no training images)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {region: load_antolik(REAL / f"region{region}") for region in (1, 2, 3)}
