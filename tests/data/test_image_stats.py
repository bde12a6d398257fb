"""Image statistics (daenr_fast.data.image_stats) on images with known answers and on the real test images."""
import numpy as np
import pytest
import torch

from daenr_fast.data import REGIONS
from daenr_fast.data.image_stats import (from_model_space, image_stats, intensity_distance, intensity_quantiles,
                                         mean_rms_contrast, radial_power_spectrum, rms_contrast, spectrum_slope)


def power_law_noise(n, size, slope, seed=0):
    """Gaussian images whose power spectrum is |k|^slope (k in cycles per image)."""
    rng = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size) * size, np.fft.fftfreq(size) * size, indexing="ij"))
    amplitude = np.where(k > 0, np.maximum(k, 1e-9) ** (slope / 2), 0.0)
    noise = np.fft.fft2(rng.standard_normal((n, size, size)))
    return np.real(np.fft.ifft2(noise * amplitude))


def test_rms_contrast_of_a_grating():
    x = np.arange(32)
    grating = 0.5 + 0.25 * np.sin(2 * np.pi * x / 8)[None, :].repeat(32, 0)
    images = np.stack([grating, 2 * grating, np.zeros((32, 32))])
    c = rms_contrast(images)
    np.testing.assert_allclose(c[:2], 0.25 / np.sqrt(2) / 0.5)
    assert np.isnan(c[2])  # an all-black image has no contrast
    assert mean_rms_contrast(images) == pytest.approx(0.25 / np.sqrt(2) / 0.5)
    assert mean_rms_contrast(torch.as_tensor(images[:2])[:, None]) == pytest.approx(0.25 / np.sqrt(2) / 0.5)


@pytest.mark.parametrize("slope", [-1.5, -2.0, -3.0])
def test_spectrum_slope_of_power_law_noise(slope):
    images = power_law_noise(200, 32, slope) + 10.0  # an offset changes nothing: the mean is subtracted
    assert spectrum_slope(images) == pytest.approx(slope, abs=0.05)
    k, power = radial_power_spectrum(images)
    np.testing.assert_allclose(k, np.arange(1, 17), atol=0.25)  # mean |k| of each unit-width ring
    assert power.shape == (16,) and (power > 0).all()


def test_grating_power_sits_at_its_frequency():
    x = np.arange(32)
    grating = np.cos(2 * np.pi * 4 * x / 32)[None, :].repeat(32, 0)[None]
    k, power = radial_power_spectrum(grating)
    assert round(k[np.argmax(power)]) == 4 and np.count_nonzero(power > 1e-9 * power.max()) == 1
    assert np.isnan(spectrum_slope(np.full((2, 8, 8), 0.5)))  # no contrast: no slope


def test_intensity_distribution():
    rng = np.random.default_rng(0)
    uniform = rng.random((40, 16, 16))
    np.testing.assert_allclose(intensity_quantiles(uniform), [0.05, 0.25, 0.5, 0.75, 0.95], atol=0.01)
    np.testing.assert_allclose(intensity_quantiles(3 * uniform + 1), intensity_quantiles(uniform))  # affine-free
    assert intensity_distance(uniform, 7 * uniform) == pytest.approx(0.0, abs=1e-12)
    squared = uniform**2  # mean 1/3 instead of 1/2 on [0, 1]: W1 = integral |q - q^2| = 1/6
    assert intensity_distance(uniform, squared) == pytest.approx(1 / 6, abs=0.01)
    stats = image_stats(uniform)
    assert stats["intensity_mean"] == pytest.approx(0.5, abs=0.01)
    assert stats["intensity_std"] == pytest.approx(np.sqrt(1 / 12), abs=0.01)


def test_from_model_space():
    x = np.linspace(-1, 1, 4 * 4 * 2).reshape(2, 4, 4)
    np.testing.assert_allclose(from_model_space(x), (x + 1) / 2)


def test_real_test_images_match_the_region_targets(real_regions):
    for region, dataset in real_regions.items():
        stats = image_stats(dataset.test_images)
        for key, target in REGIONS[region].image_targets.items():
            assert stats[key] == pytest.approx(target, abs=1e-3), (region, key)
    assert intensity_distance(real_regions[1].test_images, real_regions[3].test_images) > 0.05


@pytest.mark.parametrize("images,error,match", [
    (np.zeros((2, 31)), ValueError, r"\(N, H, W\)"),
    (np.zeros((1, 2, 2)), ValueError, "H, W >= 4"),
    (np.full((1, 8, 8), np.inf), ValueError, "finite"),
    (np.array([[["a"] * 8] * 8]), TypeError, "numeric"),
])
def test_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        image_stats(images)
