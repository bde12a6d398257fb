"""A model V1 population: simple cells (one Gabor filter) and complex cells (energy of a quadrature pair).

Every neuron ``i`` has a Gabor receptive field on the ``S x S`` stimulus grid (pixel coordinates, row then
column), centred at ``c_i``, with orientation ``theta_i``, envelope width ``sigma_i``, wavelength ``lambda_i``,
phase ``phi_i`` and aspect ratio ``gamma_i``::

    g_i(p) = exp(-(u^2 + gamma^2 v^2) / (2 sigma^2)) * cos(2 pi u / lambda + phi),   (u, v) = R(theta)(p - c)

made zero-mean (a neuron sees contrast, not luminance) and unit-norm. The linear drive is ``L_i(x) = <g_i, x>``;
the quadrature partner uses ``phi + pi/2``. A simple cell's drive is ``L_i``, a complex cell's is the energy
``sqrt(L_even^2 + L_odd^2)``. Drives are standardised with their mean and spread over a reference stimulus set,
then pass through the rate nonlinearity of :func:`rates`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Population:
    """Receptive-field parameters of ``n`` model neurons (all arrays have length ``n``).

    Attributes:
        centers: (n, 2) RF centres, (row, col) in stimulus pixels.
        orientation: (n,) radians in [0, pi).
        sigma: (n,) Gaussian envelope width, pixels.
        wavelength: (n,) carrier wavelength, pixels.
        phase: (n,) carrier phase, radians.
        aspect: (n,) envelope aspect ratio gamma.
        complex_cell: (n,) bool, True for an energy-model complex cell.
        mean_rate: (n,) target mean spike count per stimulus.
        slope: (n,) gain of the standardised drive inside the nonlinearity (see :func:`calibrate_slopes`).
        size: stimulus side ``S`` in pixels.
    """

    centers: np.ndarray
    orientation: np.ndarray
    sigma: np.ndarray
    wavelength: np.ndarray
    phase: np.ndarray
    aspect: np.ndarray
    complex_cell: np.ndarray
    mean_rate: np.ndarray
    slope: np.ndarray
    size: int

    @property
    def n(self) -> int:
        return len(self.orientation)

    @property
    def cell_types(self) -> np.ndarray:
        """(n,) strings ``"simple"`` / ``"complex"``."""
        return np.where(self.complex_cell, "complex", "simple")


def _rotated_envelope(pop: Population, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """On pixel coordinates ``grid`` (stimulus pixels, per axis): the coordinate ``u`` along each neuron's
    preferred direction and its Gaussian envelope ``exp(-(u^2 + (aspect v)^2) / (2 sigma^2))``, both (n, g, g)."""
    dr = grid[None, :, None] - pop.centers[:, 0, None, None]
    dc = grid[None, None, :] - pop.centers[:, 1, None, None]
    cos_t = np.cos(pop.orientation)[:, None, None]
    sin_t = np.sin(pop.orientation)[:, None, None]
    u = dc * cos_t + dr * sin_t
    v = -dc * sin_t + dr * cos_t
    sig = pop.sigma[:, None, None]
    return u, np.exp(-(u**2 + (pop.aspect[:, None, None] * v) ** 2) / (2 * sig**2))


def gabor_filters(pop: Population, phase_shift: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-norm Gabor filters.

    Returns:
        (n, S, S) float64, carrier phase ``phase + phase_shift``.
    """
    u, env = _rotated_envelope(pop, np.arange(pop.size, dtype=np.float64))
    carrier = np.cos(2 * np.pi * u / pop.wavelength[:, None, None] + (pop.phase + phase_shift)[:, None, None])
    g = env * carrier
    g -= env * (g.sum(axis=(1, 2)) / env.sum(axis=(1, 2)))[:, None, None]
    g /= np.linalg.norm(g.reshape(pop.n, -1), axis=1)[:, None, None]
    return g


def envelopes(pop: Population, size: int) -> np.ndarray:
    """Gaussian RF envelopes on a ``size x size`` grid covering the same field as the stimulus.

    Returns:
        (n, size, size) float32, peak 1.
    """
    scale = size / pop.size
    _, env = _rotated_envelope(pop, (np.arange(size) + 0.5) / scale - 0.5)
    return (env / env.max(axis=(1, 2), keepdims=True)).astype(np.float32)


def raw_drive(pop: Population, images: np.ndarray) -> np.ndarray:
    """Unstandardised drive: ``L_i`` for simple cells, ``sqrt(L_even^2 + L_odd^2)`` for complex cells.

    Args:
        images: (N, S, S) stimuli.

    Returns:
        (N, n) float64.
    """
    x = images.reshape(len(images), -1).astype(np.float64)
    even = x @ gabor_filters(pop).reshape(pop.n, -1).T
    odd = x @ gabor_filters(pop, np.pi / 2).reshape(pop.n, -1).T
    energy = np.sqrt(even**2 + odd**2)
    return np.where(pop.complex_cell[None, :], energy, even)


def gaussianize(drive: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map drives to standard-normal scores through their distribution over the reference stimuli.

    ``z = Phi^-1(F(d))`` with ``F`` the empirical CDF of each neuron's reference drives (mid-ranks,
    ``(rank + 1/2) / M``): the neuron's response curve is matched to the statistics of natural images
    (histogram equalisation), so ``z`` is standard normal over the reference set.

    Args:
        drive: (N, n) raw drives.
        reference: (M, n) raw drives of the reference stimuli.

    Returns:
        (N, n) float64.
    """
    from scipy.special import ndtri

    m = reference.shape[0]
    ref = np.sort(reference, axis=0)
    z = np.empty(drive.shape, dtype=np.float64)
    for i in range(drive.shape[1]):
        below = np.searchsorted(ref[:, i], drive[:, i], side="left")
        upto = np.searchsorted(ref[:, i], drive[:, i], side="right")
        z[:, i] = ndtri(np.clip((0.5 * (below + upto)) / m, 0.5 / m, 1.0 - 0.5 / m))
    return z


def rates(z: np.ndarray, pop: Population) -> np.ndarray:
    """Noise-free spike rates ``rate_i = m_i * exp(b_i z_i - b_i^2 / 2)``.

    For standard-normal ``z`` (:func:`gaussianize`) the rate is log-normal with mean ``m_i`` (``pop.mean_rate``)
    and squared coefficient of variation ``exp(b_i^2) - 1`` (``b_i`` = ``pop.slope``).

    Args:
        z: (N, n) standardised drives.

    Returns:
        (N, n) float64, all > 0.
    """
    return pop.mean_rate * np.exp(pop.slope * z - 0.5 * pop.slope**2)


def reliability(oracle: np.ndarray, repeats: int) -> np.ndarray:
    """Single-trial reliability ``rho`` whose leave-one-out oracle correlation with ``R`` repeats is ``oracle``.

    With signal variance ``v`` and noise variance ``e`` of a single trial, ``rho = v / (v + e)`` and the
    correlation of one trial with the mean of the other ``R - 1`` is ``o = rho / sqrt(rho + (1 - rho)/(R - 1))``;
    this inverts it: ``rho = (a + sqrt(a^2 + 4 o^2 / (R - 1))) / 2`` with ``a = o^2 (R - 2) / (R - 1)``.
    """
    o2 = np.asarray(oracle, dtype=np.float64) ** 2
    a = o2 * (repeats - 2) / (repeats - 1)
    return 0.5 * (a + np.sqrt(a * a + 4.0 * o2 / (repeats - 1)))


def slopes_for_oracle(oracle: np.ndarray, mean_rate: np.ndarray, repeats: int) -> np.ndarray:
    """Slopes ``b_i`` that give Poisson neurons of log-normal rate the expected oracle correlation ``oracle``.

    Poisson noise has variance ``m`` (the mean rate), so reliability ``rho`` needs signal variance
    ``v = m rho / (1 - rho)``, i.e. a rate coefficient of variation ``c^2 = v / m^2`` and ``b = sqrt(log(1 + c^2))``.

    Args:
        oracle: (n,) target oracle correlations in (0, 1).
        mean_rate: (n,) mean rates ``m``.

    Returns:
        (n,) float64.
    """
    rho = reliability(oracle, repeats)
    cv2 = rho / ((1.0 - rho) * mean_rate)
    return np.sqrt(np.log1p(cv2))
