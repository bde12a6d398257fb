"""Loader for the Antolik et al. 2016 data layout (:func:`load_antolik`).

A region folder (``region1``, ``region2`` or ``region3``) holds::

    training_inputs.npy      (N, 961)            flattened 31 x 31 training images
    training_set.npy         (N, n)              responses to the training images
    validation_inputs.npy    (T, 961)            flattened test images (T = 50)
    raw_validation_set.npy   (R, T, n)           responses to every repeat of the test images

The files called "validation" are the test set; the validation split is taken from the training set later
(:func:`daenr_fast.data.prepare`). A folder without ``training_inputs.npy`` (the public copies lack the training
images) loads as a *test-only* dataset, with a warning naming the missing file: it can be evaluated (``daenr
evaluate RUN --data antolik:PATH``) and its statistics computed (``training_set.npy``, if present, is kept for the
response statistics), but not trained on. A file that cannot be read (empty, truncated, not a ``.npy``, pickled objects)
and every rule of :func:`daenr_fast.data.validate` (finite, fits in float32, shapes) is a
:class:`~daenr_fast.data.DataError` naming the file and the key.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

from .dataset import MissingDataFile, NeuralDataset, fail

NPY_MAGIC = b"\x93NUMPY"
FILES = {
    "train_images": "training_inputs.npy",
    "train_responses": "training_set.npy",
    "test_images": "validation_inputs.npy",
    "test_responses": "raw_validation_set.npy",
}


def _unflatten(images: np.ndarray, path: str, key: str) -> np.ndarray:
    """(N, P) flattened square images -> (N, s, s); already 3-D input passes through."""
    if images.ndim == 3:
        return images
    if images.ndim != 2:
        raise fail(path, key, "a 2-D array (images, pixels) of flattened square images", f"shape {images.shape}")
    side = math.isqrt(images.shape[1])
    if side < 2 or side * side != images.shape[1]:
        raise fail(path, key, "flattened square images (pixels per image a perfect square, e.g. 961 = 31 x 31)",
                   f"{images.shape[1]} pixels per image")
    return images.reshape(len(images), side, side)


def load_antolik(region_dir) -> NeuralDataset:
    """Load one region folder of the Antolik et al. 2016 layout (module docstring).

    Returns:
        A :class:`NeuralDataset` named after the folder; images (N, 31, 31) as stored.
    """
    region_dir = os.fspath(region_dir)
    if not os.path.isdir(region_dir):
        raise MissingDataFile(f"{region_dir}: no such folder (expected an Antolik region folder with "
                              f"{', '.join(FILES.values())})")
    arrays, sources = {}, {}
    test_only = not os.path.isfile(os.path.join(region_dir, FILES["train_images"]))
    for key, filename in FILES.items():
        path = os.path.join(region_dir, filename)
        sources[key] = path
        if test_only and key.startswith("train") and not os.path.isfile(path):
            continue
        if not os.path.isfile(path):
            raise MissingDataFile(f"{path} [{key}]: missing file (an Antolik region folder holds "
                                  f"{', '.join(FILES.values())})")
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise fail(path, key, "a .npy file with a plain numeric array",
                           "a file that is not in the .npy format (empty, damaged or another format)")
        try:
            arrays[key] = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            raise fail(path, key, "a .npy file with a plain numeric array",
                       f"an unreadable file ({type(err).__name__}: {err})") from None
        if key.endswith("images"):
            arrays[key] = _unflatten(np.asarray(arrays[key]), path, key)
    name = os.path.basename(os.path.normpath(region_dir))
    meta = {"source": "antolik2016", "path": os.path.abspath(region_dir)}
    if test_only:
        meta["missing"] = [FILES["train_images"]]
        warnings.warn(f"{sources['train_images']} [train_images]: missing file: loaded the test split only "
                      f"({FILES['test_images']}, {FILES['test_responses']}), for evaluation and statistics; "
                      "training needs the training images", UserWarning, stacklevel=2)
    return NeuralDataset(**arrays, meta=meta, name=name, sources=sources, test_only=test_only)
