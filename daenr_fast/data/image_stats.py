"""Statistics of a set of stimulus images, one definition for the simulator's calibration, ``daenr data-stats``
and the tests.

All functions take raw intensities with 0 = black, ``(N, H, W)`` (any positive scale: the Antolik files' 0 ..
2.55e-4, the simulator's 0 .. 1). For the models' images in [-1, 1] pass ``(x + 1) / 2`` (:func:`from_model_space`).

* RMS contrast (:func:`rms_contrast`): per image ``c = std(x) / mean(x)`` over its pixels, averaged over the
  images whose mean is > 0.
* Spectrum slope (:func:`spectrum_slope`): the power spectrum ``P(k) = mean_images |FFT2(x - mean(x))|^2``,
  radially averaged in unit-width rings of spatial frequency ``|k|`` (cycles per image; ring ``j = 1 ..
  floor(min(H, W) / 2)`` holds ``j - 1/2 <= |k| < j + 1/2``), and the least-squares slope of ``log P_j``
  against ``log k_j``, ``k_j`` the mean ``|k|`` of ring ``j`` (natural images: about -2).
* Intensity distribution (:func:`intensity_quantiles`, :func:`intensity_distance`): every pixel of the set mapped
  to [0, 1] by the set's own minimum and maximum (the affine map the preprocessing applies), pooled; summarised by
  its mean, standard deviation and the quantiles :data:`QUANTILES`, compared by the Wasserstein-1 distance
  (mean absolute difference of the quantile functions, in units of the full range).

:func:`image_stats` collects them in one dict (keys :data:`IMAGE_STAT_KEYS`).
"""
from __future__ import annotations

import numpy as np

#: Quantiles of the pooled, [0, 1]-mapped intensities reported by :func:`image_stats`.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Scalar keys of :func:`image_stats` (the quantiles come as ``intensity_quantiles``).
IMAGE_STAT_KEYS = ("rms_contrast", "spectrum_slope", "intensity_mean", "intensity_std")


def image_stack(images, name: str = "images", size=None) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) real finite numpy/torch images -> (N, H, W) float64. With ``size``, H = W = size
    (model images, the output of :func:`daenr_fast.data.prepare`); else N >= 1 and H, W >= 4. Anything else raises
    a ``TypeError`` / ``ValueError`` naming ``name``."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if size is not None and (x.ndim != 3 or x.shape[1:] != (size, size)):
        raise ValueError(f"{name}: expected model images of shape (N, {size}, {size}) or (N, 1, {size}, {size}) "
                         f"(the output of daenr_fast.data.prepare), got shape {x.shape}")
    if x.ndim != 3 or x.shape[0] < 1 or min(x.shape[1:]) < 4:
        raise ValueError(f"{name}: expected (N, H, W) or (N, 1, H, W) images with N >= 1 and H, W >= 4, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return x.astype(np.float64, copy=False)


def from_model_space(images) -> np.ndarray:
    """Model images in [-1, 1] as intensities in [0, 1] with 0 = black: ``(x + 1) / 2``."""
    return (image_stack(images) + 1.0) / 2.0


def rms_contrast(images) -> np.ndarray:
    """(N,) per-image RMS contrast ``std / mean``; NaN where the mean is <= 0 (an all-black image)."""
    x = image_stack(images)
    mean = x.mean(axis=(1, 2))
    std = x.std(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.nan)


def mean_rms_contrast(images) -> float:
    """Mean of :func:`rms_contrast` over the images with a positive mean; NaN if there are none."""
    c = rms_contrast(images)
    c = c[np.isfinite(c)]
    return float(c.mean()) if c.size else float("nan")


def radial_power_spectrum(images) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the mean-subtracted images (module docstring).

    Returns:
        ``(k, power)``: (K,) mean frequency of each ring ``j = 1 .. floor(min(H, W) / 2)`` in cycles per image,
        and (K,) its mean power.
    """
    x = image_stack(images)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    h, w = x.shape[1:]
    side = min(h, w)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h) * side, np.fft.fftfreq(w) * side, indexing="ij"))
    ring = np.rint(radius).astype(np.int64).ravel()
    j = np.arange(1, side // 2 + 1)
    counts = np.bincount(ring, minlength=j[-1] + 1)[j]
    power_sums = np.bincount(ring, weights=power.ravel(), minlength=j[-1] + 1)[j]
    radius_sums = np.bincount(ring, weights=radius.ravel(), minlength=j[-1] + 1)[j]
    return radius_sums / counts, power_sums / counts


def spectrum_slope(images) -> float:
    """Least-squares slope of log power against log frequency of :func:`radial_power_spectrum`; NaN for images
    without any contrast."""
    k, power = radial_power_spectrum(images)
    if not (power > 0).all():
        return float("nan")
    return float(np.polyfit(np.log(k), np.log(power), 1)[0])


def normalized_intensities(images) -> np.ndarray:
    """Every pixel of the set mapped to [0, 1] by the set's minimum and maximum, flattened (M,)."""
    x = image_stack(images).ravel()
    lo, hi = x.min(), x.max()
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def intensity_quantiles(images, q=QUANTILES) -> np.ndarray:
    """Quantiles ``q`` of :func:`normalized_intensities`."""
    return np.quantile(normalized_intensities(images), q)


def intensity_distance(a, b) -> float:
    """Wasserstein-1 distance between the [0, 1]-mapped intensity distributions of two image sets."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(normalized_intensities(a), normalized_intensities(b)))


def image_stats(images) -> dict:
    """``rms_contrast``, ``spectrum_slope``, ``intensity_mean``, ``intensity_std`` (floats) and
    ``intensity_quantiles`` (list at :data:`QUANTILES`) of one image set."""
    v = normalized_intensities(images)
    return {
        "rms_contrast": mean_rms_contrast(images),
        "spectrum_slope": spectrum_slope(images),
        "intensity_mean": float(v.mean()),
        "intensity_std": float(v.std()),
        "intensity_quantiles": [float(t) for t in np.quantile(v, QUANTILES)],
    }
