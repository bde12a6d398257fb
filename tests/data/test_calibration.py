"""Each simulated region is within 20% of the statistics of the real Antolik et al. 2016 regions."""
import pytest

from daenr_fast.data import REGIONS, stats

TARGETS = {
    1: dict(mean_response=0.56, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.39),
    2: dict(mean_response=0.61, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.31),
    3: dict(mean_response=0.69, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.38),
}


@pytest.mark.parametrize("region", [1, 2, 3])
def test_region_within_20_percent_of_targets(sim_regions, region):
    assert REGIONS[region].targets == TARGETS[region]
    measured = stats(sim_regions[region])
    for key, target in TARGETS[region].items():
        assert abs(measured[key] - target) <= 0.2 * target, (key, measured[key], target)
