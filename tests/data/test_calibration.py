"""Each simulated region is calibrated to its real Antolik et al. 2016 region (the copies in files/antolik2016):
responses within 20% of the real statistics, test images with the real RMS contrast (within 15%), spectrum slope
(within 0.15) and intensity distribution (Wasserstein-1 distance below the one between the real regions)."""
import numpy as np
import pytest

from daenr_fast.data import REGIONS, stats
from daenr_fast.data.image_stats import image_stats, intensity_distance

TARGETS = {
    1: dict(mean_response=0.56, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.39),
    2: dict(mean_response=0.61, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.31),
    3: dict(mean_response=0.69, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.38),
}
#: The real regions 1 and 3 are 0.058 apart: a simulated region must be clearly closer to its own.
MAX_INTENSITY_DISTANCE = 0.04


@pytest.mark.parametrize("region", [1, 2, 3])
def test_targets_are_the_real_statistics(real_regions, region):
    measured = stats(real_regions[region])
    for key, target in TARGETS[region].items():  # two-decimal summaries
        assert measured[key] == pytest.approx(target, abs=0.025), (key, measured[key], target)
    for key, target in REGIONS[region].image_targets.items():
        assert measured[key] == pytest.approx(target, abs=1e-3), (key, measured[key], target)


@pytest.mark.parametrize("region", [1, 2, 3])
def test_region_within_20_percent_of_targets(sim_regions, region):
    assert REGIONS[region].targets == TARGETS[region]
    measured = stats(sim_regions[region])
    for key, target in TARGETS[region].items():
        assert abs(measured[key] - target) <= 0.2 * target, (key, measured[key], target)


@pytest.mark.parametrize("region", [1, 2, 3])
@pytest.mark.parametrize("split", ["test", "train"])
def test_images_match_the_real_test_images(sim_regions, real_regions, region, split):
    real = real_regions[region].test_images
    sim = getattr(sim_regions[region], f"{split}_images")
    measured, target = image_stats(sim), image_stats(real)
    assert abs(measured["rms_contrast"] - target["rms_contrast"]) <= 0.15 * target["rms_contrast"], measured
    assert abs(measured["spectrum_slope"] - target["spectrum_slope"]) <= 0.15, measured
    assert intensity_distance(sim, real) <= MAX_INTENSITY_DISTANCE


def test_regions_differ_like_the_real_ones(sim_regions):
    s1, s3 = (image_stats(sim_regions[r].test_images) for r in (1, 3))
    assert s3["rms_contrast"] < s1["rms_contrast"] and s3["spectrum_slope"] > s1["spectrum_slope"]
    assert intensity_distance(sim_regions[1].test_images, sim_regions[3].test_images) > MAX_INTENSITY_DISTANCE
