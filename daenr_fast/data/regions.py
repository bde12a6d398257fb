"""The three simulated V1 regions: sizes from the paper's Table 7 and the parameters that calibrate them.

Calibration targets are the statistics of the Antolik et al. 2016 response files (see :mod:`.stats`). The
simulated responses are Poisson spike counts, whose fraction of zeros can never fall below ``exp(-mean)``
(Jensen's inequality on ``E[exp(-rate)]``); the real files are deconvolved calcium signals with small
non-integer values and reach ~50% zeros at a mean of ~0.6. The simulated mean rates therefore sit a little
above the targets for regions 1 and 2, trading a few percent of mean for a zero fraction near its target.
Likewise Poisson noise fixes the single-trial lifetime sparseness by the mean and the reliability
(``S ~ 1 - m^2 / (m^2 + m + v)``), which lands ~12-15% below the calcium data's 0.78.

Stimuli (:class:`~daenr_fast.data.stimuli.StimulusSpec`) are fitted to each region's 50 real test images
(:mod:`.image_stats`: RMS contrast, spectrum slope, intensity distribution): regions 1 and 2 (which saw the same
images) show clipped patches of widely varying luminance and contrast, region 3 patches of nearly fixed luminance
and contrast, compressed rather than clipped, and at a coarser scale (a flatter spectrum). A 50-image set of
either generator has a spectrum slope with a spread of about 0.09 (regions 1, 2) and 0.05 (region 3) around the
expected value, as the real test images have too.

End-stopped cells (:mod:`.neurons`) make the population harder to fit for a small CNN; their fraction per region
sets the noise-ceiling fraction CNN-FR2 reaches to what it reaches on the real regions (the paper's CNN-FR2 PCC,
Table 6, over the real data's noise ceiling: about 0.56, 0.54 and 0.44 in regions 1, 2, 3).
"""
from __future__ import annotations

from dataclasses import dataclass

from .stimuli import StimulusSpec


@dataclass(frozen=True)
class RegionSpec:
    """One simulated recording region.

    Attributes:
        region: 1, 2 or 3.
        n_neurons, n_train, n_test, n_repeats: Table 7 sizes.
        center: (row, col) centre of the RF cluster, stimulus pixels (31 x 31 grid).
        center_spread: standard deviation of RF centres around ``center``, pixels.
        mean_rate: population mean spike count per stimulus.
        oracle: median over neurons of the drawn per-neuron expected leave-one-out oracle correlations
            (:func:`daenr_fast.data.neurons.slopes_for_oracle`); set so that the measured median, estimated
            from 50 test images, lands on the target (8% above it in regions 1 and 3).
        targets: statistics of the real region (keys of :func:`daenr_fast.data.stats`).
        stimulus: how the region's images were displayed, fitted to its real test images
            (:class:`~daenr_fast.data.stimuli.StimulusSpec`).
        image_targets: statistics of the real test images (keys of :func:`daenr_fast.data.image_stats`).
        end_stopped_fraction: fraction of the neurons that are end-stopped (:mod:`.neurons`).
    """

    region: int
    n_neurons: int
    n_train: int
    n_test: int
    n_repeats: int
    center: tuple[float, float]
    center_spread: float
    mean_rate: float
    oracle: float
    targets: dict
    stimulus: StimulusSpec
    image_targets: dict
    end_stopped_fraction: float


#: Stimulus side, pixels (as in the paper's data).
STIMULUS_SIZE = 31
#: Fraction of complex cells.
COMPLEX_FRACTION = 0.5
#: Range of Gaussian envelope widths (pixels, log-uniform) and of envelope width / wavelength.
SIGMA_RANGE = (2.0, 4.5)
SIGMA_PER_WAVELENGTH = (0.35, 0.6)
ASPECT_RANGE = (0.6, 1.0)
#: Log-normal spread of per-neuron mean rates around the region value.
MEAN_RATE_SPREAD = 0.15
#: Spread (standard deviation in logit units) of per-neuron reliability targets around the region median.
ORACLE_SPREAD = 0.6
#: End-stopped cells: log-uniform range of the semi-saturation constant (a multiple of the median end-zone energy
#: over the training images) and of the distance of the end zones from the RF centre (in units of sigma).
STOP_STRENGTH_RANGE = (0.05, 0.2)
SURROUND_RANGE = (1.5, 2.5)

#: Regions 1 and 2 saw the same kind of images (the same 50 test images): clipped, widely varying luminance and
#: contrast. Region 3's images have a narrow range of luminance and contrast and are compressed, not clipped.
DISPLAY_CLIPPED = StimulusSpec(scale_weights=(1.0, 0.0, 0.0, 0.0), mean=0.45, mean_spread=0.2, amplitude=0.28,
                               amplitude_spread=0.3)
DISPLAY_NORMALISED = StimulusSpec(scale_weights=(0.0, 0.0, 1.0, 0.0), mean=0.5, mean_spread=0.03, amplitude=0.38,
                                  amplitude_spread=0.05, soft_range=True)

REGIONS = {
    1: RegionSpec(
        region=1, n_neurons=103, n_train=1800, n_test=50, n_repeats=10,
        center=(14.0, 16.5), center_spread=2.5, mean_rate=0.62, oracle=0.42,
        targets=dict(mean_response=0.56, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.39),
        stimulus=DISPLAY_CLIPPED, image_targets=dict(rms_contrast=0.617, spectrum_slope=-2.491, intensity_mean=0.447, intensity_std=0.296),
        end_stopped_fraction=0.6,
    ),
    2: RegionSpec(
        region=2, n_neurons=55, n_train=1260, n_test=50, n_repeats=8,
        center=(16.5, 14.0), center_spread=2.0, mean_rate=0.65, oracle=0.31,
        targets=dict(mean_response=0.61, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.31),
        stimulus=DISPLAY_CLIPPED, image_targets=dict(rms_contrast=0.617, spectrum_slope=-2.491, intensity_mean=0.447, intensity_std=0.296),
        end_stopped_fraction=0.4,
    ),
    3: RegionSpec(
        region=3, n_neurons=102, n_train=1800, n_test=50, n_repeats=12,
        center=(15.0, 15.0), center_spread=3.0, mean_rate=0.67, oracle=0.41,
        targets=dict(mean_response=0.69, frac_zeros=0.50, lifetime_sparseness=0.78, oracle_correlation=0.38),
        stimulus=DISPLAY_NORMALISED, image_targets=dict(rms_contrast=0.531, spectrum_slope=-2.314, intensity_mean=0.494, intensity_std=0.265),
        end_stopped_fraction=0.8,
    ),
}


def region_spec(region: int) -> RegionSpec:
    """The :class:`RegionSpec` of ``region`` (1, 2 or 3); ``ValueError`` otherwise."""
    try:
        return REGIONS[int(region)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"region must be one of {sorted(REGIONS)}, got {region!r}") from None
