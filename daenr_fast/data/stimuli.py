"""Natural-image stimuli cut from the photographs that scikit-image ships (no network access).

A stimulus is a square patch of a grayscale photograph: a window of ``size * scale`` pixels at a random
position, block-averaged down to ``size x size`` (so coarser scales are anti-aliased), randomly mirrored.
Intensities are in [0, 1] (0 = black), as float32.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

#: Photographs bundled with scikit-image itself (no pooch download needed).
PHOTOGRAPHS = (
    "camera", "astronaut", "coffee", "chelsea", "rocket", "grass", "gravel", "brick", "moon", "clock", "coins",
)

#: Integer down-sampling factors; a patch covers ``size * scale`` pixels of the photograph.
SCALES = (1, 2, 3, 4)


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


def natural_patches(n: int, rng: np.random.Generator, size: int = 31) -> np.ndarray:
    """Cut ``n`` random patches.

    Args:
        n: number of patches.
        rng: random generator (all randomness comes from it).
        size: patch side in pixels.

    Returns:
        (n, size, size) float32 array in [0, 1].
    """
    photos = photographs()
    out = np.empty((n, size, size), dtype=np.float32)
    which = rng.integers(len(photos), size=n)
    scales = rng.choice(SCALES, size=n)
    flips = rng.random(n) < 0.5
    for k in range(n):
        photo = photos[which[k]]
        s = int(min(scales[k], min(photo.shape) // size))
        w = size * s
        r = rng.integers(photo.shape[0] - w + 1)
        c = rng.integers(photo.shape[1] - w + 1)
        window = photo[r:r + w, c:c + w]
        patch = window.reshape(size, s, size, s).mean(axis=(1, 3))
        out[k] = patch[:, ::-1] if flips[k] else patch
    return out
