"""Natural-image stimuli cut from the photographs that scikit-image ships (no network access).

A patch (:func:`natural_patches`) is a window of ``size * scale`` pixels of a grayscale photograph at a random
position, block-averaged down to ``size x size`` (so coarser scales are anti-aliased), randomly mirrored; patches
with almost no contrast (pixel standard deviation below :data:`MIN_PATCH_STD`) are drawn again.

A stimulus (:func:`stimuli`) is a patch displayed as a region's experiment showed its images
(:class:`StimulusSpec`): standardised to zero mean and unit pixel variance ``z``, then given a per-image mean
luminance ``mu`` and RMS amplitude ``s``, clipped to the display range and quantised to 8 bits::

    x = round(255 * clip(mu + s z, 0, 1)) / 255,    mu ~ N(mean, mean_spread) clipped to [0.05, 0.95],
                                                    s ~ LogNormal(log(amplitude), amplitude_spread)

(or, with ``soft_range``, compressed into (0, 1) instead of clipped). The photographs, ``mu`` and ``s`` are
drawn evenly over consecutive stimuli (shuffled blocks, strata), so that a set of 50 has the statistics of the
whole.

Intensities are in [0, 1] (0 = black), as float32.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

#: Photographs bundled with scikit-image itself (no pooch download needed).
PHOTOGRAPHS = (
    "camera", "astronaut", "coffee", "chelsea", "rocket", "grass", "gravel", "brick", "moon", "clock", "coins",
)

#: Integer down-sampling factors; a patch covers ``size * scale`` pixels of the photograph.
SCALES = (1, 2, 3, 4)
#: Patches with a pixel standard deviation below this (intensities in [0, 1]) are drawn again.
MIN_PATCH_STD = 0.02
#: Display levels: stimuli are quantised to ``LEVELS`` grey levels (8 bits).
LEVELS = 256
#: Per-image luminance and amplitude are drawn stratified in blocks of this many consecutive stimuli, so that any
#: run of stimuli (e.g. the 50 test images) spans their distributions evenly.
STRATA = 10


@dataclass(frozen=True)
class StimulusSpec:
    """How one region's experiment displayed its images (module docstring).

    Attributes:
        scale_weights: probabilities of the down-sampling factors :data:`SCALES`.
        mean, mean_spread: normal distribution of the per-image mean luminance ``mu`` (in [0, 1]).
        amplitude, amplitude_spread: median and log-normal spread of the per-image RMS amplitude ``s`` before
            clipping.
        soft_range: compress instead of clipping: ``x = mu + h tanh(s z / h)``, ``h = min(mu, 1 - mu)``, which
            is ``mu + s z`` for small ``s z`` and never leaves (0, 1).
    """

    scale_weights: tuple[float, ...]
    mean: float
    mean_spread: float
    amplitude: float
    amplitude_spread: float
    soft_range: bool = False


@functools.lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The grayscale photographs, each (H, W) float32 in [0, 1]; ones that cannot load offline are skipped."""
    from skimage import data
    from skimage.color import rgb2gray

    images = []
    for name in PHOTOGRAPHS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = getattr(data, name)()
        except Exception:  # a photograph missing from this scikit-image install
            continue
        img = np.asarray(img)
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        elif img.dtype == np.uint8:
            img = img / 255.0
        images.append(np.ascontiguousarray(img, dtype=np.float32))
    if len(images) < 3:
        raise RuntimeError(
            "scikit-image ships fewer than 3 of the photographs "
            f"{', '.join(PHOTOGRAPHS)}; cannot build natural-image stimuli"
        )
    return tuple(images)


@functools.lru_cache(maxsize=1)
def _integral_images() -> tuple[np.ndarray, ...]:
    """Per photograph, its summed-area table ``I[r, c] = sum(photo[:r, :c])``, (H + 1, W + 1) float64."""
    return tuple(np.pad(p.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0))) for p in photographs())


def _block_means(table: np.ndarray, r: np.ndarray, c: np.ndarray, s: int, size: int) -> np.ndarray:
    """(m, size, size) means of the ``s x s`` blocks of the windows at corners (r, c) (m,), from a summed-area
    table."""
    steps = s * np.arange(size + 1)
    t = table[(r[:, None] + steps)[:, :, None], (c[:, None] + steps)[:, None, :]]
    return (t[:, 1:, 1:] - t[:, :-1, 1:] - t[:, 1:, :-1] + t[:, :-1, :-1]) / (s * s)


def _balanced(n_photos: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """(m,) photograph indices in shuffled blocks of ``n_photos`` that each hold every photograph once, so any
    run of consecutive stimuli (e.g. the test set) draws on the photographs almost equally."""
    blocks = -(-m // n_photos)
    return np.argsort(rng.random((blocks, n_photos)), axis=1).ravel()[:m]


def natural_patches(n: int, rng: np.random.Generator, size: int = 31, scale_weights=None) -> np.ndarray:
    """Cut ``n`` random patches (module docstring).

    Args:
        n: number of patches.
        rng: random generator (all randomness comes from it).
        size: patch side in pixels.
        scale_weights: probabilities of :data:`SCALES` (default uniform).

    Returns:
        (n, size, size) float32 array in [0, 1], every patch with a pixel standard deviation >= MIN_PATCH_STD.
    """
    photos, tables = photographs(), _integral_images()
    kept = []
    while sum(len(k) for k in kept) < n:
        m = n + 16
        which = _balanced(len(photos), m, rng)
        scales = rng.choice(SCALES, size=m, p=scale_weights)
        flips = rng.random(m) < 0.5
        corner = rng.random((m, 2))
        patches = np.empty((m, size, size))
        for i, photo in enumerate(photos):
            for scale in SCALES:
                sel = np.flatnonzero((which == i) & (scales == scale))
                if not sel.size:
                    continue
                s = int(min(scale, min(photo.shape) // size))
                w = size * s
                r = (corner[sel, 0] * (photo.shape[0] - w + 1)).astype(np.int64)
                c = (corner[sel, 1] * (photo.shape[1] - w + 1)).astype(np.int64)
                patches[sel] = _block_means(tables[i], r, c, s, size)
        patches[flips] = patches[flips, :, ::-1]
        kept.append(patches[patches.std(axis=(1, 2)) >= MIN_PATCH_STD])
    return np.concatenate(kept)[:n].astype(np.float32)


def _stratified_normal(n: int, rng: np.random.Generator, block: int = STRATA) -> np.ndarray:
    """(n,) standard-normal draws stratified in consecutive blocks of ``block``: each block holds one draw from
    each of ``block`` equal-probability strata (Latin hypercube), in random order."""
    from scipy.special import ndtri

    blocks = -(-n // block)
    strata = np.argsort(rng.random((blocks, block)), axis=1)
    return ndtri((strata + rng.random((blocks, block))) / block).ravel()[:n]


def display(patches: np.ndarray, spec: StimulusSpec, rng: np.random.Generator) -> np.ndarray:
    """Patches (n, S, S) shown as ``spec`` says (module docstring): (n, S, S) float32 in [0, 1], 8-bit levels."""
    x = np.array(patches, dtype=np.float32)
    n = len(x)
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    mu = np.clip(spec.mean + spec.mean_spread * _stratified_normal(n, rng), 0.05, 0.95)
    amp = spec.amplitude * np.exp(spec.amplitude_spread * _stratified_normal(n, rng))
    mu, amp = (v.astype(np.float32)[:, None, None] for v in (mu, amp))
    x -= mean
    x *= amp / std  # s z
    if spec.soft_range:
        head = np.minimum(mu, 1.0 - mu)
        x /= head
        np.tanh(x, out=x)
        x *= head
        x += mu
    else:
        x += mu
        np.clip(x, 0.0, 1.0, out=x)
    x *= LEVELS - 1
    np.rint(x, out=x)
    x /= LEVELS - 1
    return x


def stimuli(n: int, spec: StimulusSpec, rng: np.random.Generator, size: int = 31) -> np.ndarray:
    """``n`` stimuli of a region: :func:`natural_patches` shown by :func:`display`; (n, size, size) float32."""
    return display(natural_patches(n, rng, size, spec.scale_weights), spec, rng)
