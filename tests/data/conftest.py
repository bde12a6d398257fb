"""Shared fixtures for the data tests: each simulated region is generated once per session."""
import pytest

from daenr_fast.data import simulate


@pytest.fixture(scope="session")
def sim_regions():
    """{region: NeuralDataset} for regions 1, 2, 3 at seed 0."""
    return {region: simulate(region=region, seed=0) for region in (1, 2, 3)}
