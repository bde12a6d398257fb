"""A model V1 population: simple cells (one Gabor filter) and complex cells (energy of a quadrature pair).

Every neuron ``i`` has a Gabor receptive field on the ``S x S`` stimulus grid (pixel coordinates, row then
column), centred at ``c_i``, with orientation ``theta_i``, envelope width ``sigma_i``, wavelength ``lambda_i``,
phase ``phi_i`` and aspect ratio ``gamma_i``::

    g_i(p) = exp(-(u^2 + gamma^2 v^2) / (2 sigma^2)) * cos(2 pi u / lambda + phi),   (u, v) = R(theta)(p - c)

made zero-mean (a neuron sees contrast, not luminance) and unit-norm. The linear drive is ``L_i(x) = <g_i, x>``;
the quadrature partner uses ``phi + pi/2``. A simple cell's drive is ``L_i``, a complex cell's is the energy
``sqrt(L_even^2 + L_odd^2)``.

End-stopped cells (``norm_sigma_i`` finite) divide that drive by the energy in their two end zones: the same
quadrature pair (orientation, wavelength, envelope) centred at ``c_i +- surround_i sigma_i e_i``, with ``e_i`` the
unit vector along the preferred orientation (along the bars)::

    S_i(x) = (E_i(x; c_i + d_i) + E_i(x; c_i - d_i)) / 2,     D_i = drive_i / (norm_sigma_i + S_i(x))

so a bar or edge that extends beyond the RF suppresses the response (end-stopping, iso-orientation surround
suppression), and the response saturates with contrast when ``norm_sigma_i`` is small against ``S_i``. The filters can be sampled on any grid covering the stimulus field (the simulator
applies them to the 32 x 32 preprocessed images the models see). Drives are mapped to normal scores through their
quantiles over a reference stimulus set (:func:`gaussianize`), then pass through the rate nonlinearity of
:func:`rates`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

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
        slope: (n,) gain of the standardised drive inside the nonlinearity (see :func:`slopes_for_oracle`).
        size: stimulus side ``S`` in pixels.
        norm_sigma: (n,) semi-saturation constant of the end-stopping suppression (drive units); ``inf`` for a
            cell without it.
        surround: (n,) distance of the end zones from the RF centre in units of ``sigma``.
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
    norm_sigma: np.ndarray
    surround: np.ndarray

    @property
    def n(self) -> int:
        return len(self.orientation)

    def select(self, index) -> "Population":
        """The neurons ``index`` (indices or a boolean mask) as a new population."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "size"})

    @property
    def end_stopped(self) -> np.ndarray:
        """(n,) bool, True for an end-stopped cell."""
        return np.isfinite(self.norm_sigma)

    @property
    def cell_types(self) -> np.ndarray:
        """(n,) strings ``"simple"``, ``"complex"``, ``"simple-end-stopped"``, ``"complex-end-stopped"``."""
        base = np.where(self.complex_cell, "complex", "simple").astype(object)
        return np.where(self.end_stopped, base + "-end-stopped", base).astype(str)


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


def _grid(pop: Population, size: int) -> np.ndarray:
    """Stimulus-pixel coordinates of the pixel centres of a ``size``-pixel grid covering the stimulus field
    (``(k + 0.5) * S / size - 0.5``; the identity for ``size == S``)."""
    return (np.arange(size, dtype=np.float64) + 0.5) * (pop.size / size) - 0.5


def gabor_filters(pop: Population, phase_shift: float = 0.0, size: int | None = None) -> np.ndarray:
    """Zero-mean, unit-norm Gabor filters sampled on a ``size x size`` grid covering the stimulus field.

    Args:
        phase_shift: added to every carrier phase.
        size: grid side (default ``pop.size``, the stimulus grid).

    Returns:
        (n, size, size) float64, carrier phase ``phase + phase_shift``.
    """
    u, env = _rotated_envelope(pop, _grid(pop, pop.size if size is None else int(size)))
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
    _, env = _rotated_envelope(pop, _grid(pop, size))
    return (env / env.max(axis=(1, 2), keepdims=True)).astype(np.float32)


def _end_zone_centres(pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) centres of each neuron's two end zones, ``c_i +- surround_i sigma_i e_i`` (module docstring)."""
    along = np.stack([np.cos(pop.orientation), -np.sin(pop.orientation)], axis=1)
    offset = (pop.surround * pop.sigma)[:, None] * along
    return pop.centers + offset, pop.centers - offset


def drive_components(pop: Population, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of :func:`raw_drive`, from one product of the images with every filter involved.

    Args:
        images: (N, G, G) images on any square grid covering the stimulus field (the filters are sampled on it).

    Returns:
        ``(drive, end)``: (N, n) float64 Gabor drives ``L_i`` (simple) or energies (complex) before any
        suppression, and (N, k) end-zone energies ``S_i`` of the k end-stopped cells (in population order).
    """
    size = images.shape[-1]
    x = images.reshape(len(images), -1).astype(np.float64)
    stopped = pop.select(pop.end_stopped)
    pops = [pop] + ([replace(stopped, centers=c) for c in _end_zone_centres(stopped)] if stopped.n else [])
    bank = np.concatenate([gabor_filters(p, shift, size).reshape(p.n, -1) for p in pops for shift in (0.0, np.pi / 2)])
    linear = x @ bank.T
    n, k = pop.n, stopped.n
    even, odd = linear[:, :n], linear[:, n:2 * n]
    drive = np.where(pop.complex_cell[None, :], np.sqrt(even**2 + odd**2), even)
    ends = linear[:, 2 * n:].reshape(len(x), 2, 2, k)  # (N, zone, even/odd, k)
    end = np.sqrt((ends**2).sum(axis=2)).mean(axis=1)
    return drive, end


def raw_drive(pop: Population, images: np.ndarray) -> np.ndarray:
    """Unstandardised drive: ``L_i`` for simple cells, ``sqrt(L_even^2 + L_odd^2)`` for complex cells, divided
    by ``norm_sigma_i + S_i`` for end-stopped cells (module docstring).

    Args:
        images: (N, G, G) images on any square grid covering the stimulus field (the filters are sampled on it).

    Returns:
        (N, n) float64.
    """
    drive, end = drive_components(pop, images)
    stopped = pop.end_stopped
    drive[:, stopped] /= pop.norm_sigma[stopped] + end
    return drive


#: Fraction of the reference drives at each end whose quantiles set the slope of the linear extrapolation.
TAIL_FRACTION = 0.01


def normal_scores(m: int) -> np.ndarray:
    """(m,) standard-normal quantiles at the mid-ranks ``Phi^-1((k + 1/2) / m)``, k = 0 .. m - 1."""
    from scipy.special import ndtri

    return ndtri((np.arange(m) + 0.5) / m)


def gaussianize(drive: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map drives to standard-normal scores through their quantiles over the reference stimuli.

    Each neuron's sorted reference drives ``d_(0) <= ... <= d_(M-1)`` are matched to the normal scores
    ``z_k = Phi^-1((k + 1/2) / M)`` (histogram equalisation to natural images), and ``z(d)`` is the piecewise-linear
    interpolation through the points ``(d_(k), z_k)``: a reference drive maps to its own score, so ``z`` is
    standard normal over the reference set. Beyond the reference range ``z`` continues linearly with the slope
    of the chord over the outer ``TAIL_FRACTION`` of the quantiles (at least one gap) at that end, so the map is
    continuous, strictly increasing and defined for any drive (e.g. images of higher contrast than any reference).

    Args:
        drive: (N, n) raw drives.
        reference: (M, n) raw drives of the reference stimuli (sorted or not), M >= 2.

    Returns:
        (N, n) float64.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64), axis=0)
    drive = np.asarray(drive, dtype=np.float64)
    m = ref.shape[0]
    if m < 2:
        raise ValueError(f"reference: expected at least 2 reference stimuli, got {m}")
    z_nodes = normal_scores(m)
    q = max(1, int(round(TAIL_FRACTION * m)))
    tiny = np.finfo(np.float64).tiny
    slope_lo = (z_nodes[q] - z_nodes[0]) / np.maximum(ref[q] - ref[0], tiny)
    slope_hi = (z_nodes[-1] - z_nodes[-1 - q]) / np.maximum(ref[-1] - ref[-1 - q], tiny)
    z = np.empty(drive.shape, dtype=np.float64)
    for i in range(drive.shape[1]):
        z[:, i] = np.interp(drive[:, i], ref[:, i], z_nodes)
    below, above = drive < ref[0], drive > ref[-1]
    z = np.where(below, z_nodes[0] + slope_lo * (drive - ref[0]), z)
    return np.where(above, z_nodes[-1] + slope_hi * (drive - ref[-1]), z)


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
