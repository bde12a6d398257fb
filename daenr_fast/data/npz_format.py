"""The generic ``.npz`` format for anyone's recordings (:func:`save_npz` / :func:`load_npz`).

Keys (``N`` training images, ``V`` validation, ``T`` test, ``R`` repeats, ``n`` neurons, ``H x W`` pixels):

=================== ============== =========================================================
key                 shape          meaning
=================== ============== =========================================================
``train_images``    (N, H, W)      training stimuli, any real intensity scale
``train_responses`` (N, n)         one response per image and neuron (e.g. spike counts)
``test_images``     (T, H, W)      test stimuli
``test_responses``  (R, T, n)      ``R >= 1`` repeats of every test image
``val_images``      (V, H, W)      optional; with ``val_responses`` (V, n)
``neuron_ids``      (n,)           optional neuron identifiers (numbers or strings)
``meta``            ()             optional JSON string (a dict)
``gt_<name>``       any            optional ground truth, e.g. ``gt_test_rates`` (T, n)
=================== ============== =========================================================

Files are written without pickled objects and read with ``allow_pickle=False``. A member that cannot be read
(a corrupted or truncated archive, pickled objects) is a :class:`~daenr_fast.data.DataError` naming the file and
the key.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from .dataset import REQUIRED_KEYS, MissingDataFile, NeuralDataset, fail

OPTIONAL_KEYS = ("val_images", "val_responses", "neuron_ids", "meta")
GROUND_TRUTH_PREFIX = "gt_"
#: what reading a damaged archive member raises (bad CRC-32, bad deflate stream, truncated data)
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def save_npz(dataset: NeuralDataset, path) -> str:
    """Write ``dataset`` in the generic format (compressed); returns the path written."""
    path = os.fspath(path)
    arrays = {key: value for key, value in dataset.arrays().items() if value is not None}
    arrays["meta"] = np.array(json.dumps({"name": dataset.name, **dataset.meta}))
    for key, value in (dataset.ground_truth or {}).items():
        arrays[GROUND_TRUTH_PREFIX + key] = np.asarray(value)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _member(npz, path: str, key: str) -> np.ndarray:
    """``npz[key]``, with any failure to read it as a :class:`DataError` naming ``path`` and ``key``."""
    try:
        return npz[key]
    except READ_ERRORS as err:
        raise fail(path, key, "an intact archive member", f"a corrupted one ({type(err).__name__}: {err}); "
                   "the file is damaged: write or copy it again") from None
    except ValueError as err:
        raise fail(path, key, "a plain numeric array (no pickled objects)", str(err)) from None


def load_npz(path) -> NeuralDataset:
    """Read a dataset in the generic format; errors name the file and the key (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataFile(f"{path}: no such file (expected a .npz in the generic format)")
    if not zipfile.is_zipfile(path):
        raise fail(path, "*", "a .npz archive written by numpy.savez", "a file that is not a zip archive (empty, "
                   "truncated or another format)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise fail(path, "*", "a .npz archive written by numpy.savez", f"unreadable file ({err})") from None
    with npz:
        keys = set(npz.files)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if missing:
            raise fail(path, missing[0], f"the required keys {', '.join(REQUIRED_KEYS)}",
                       f"keys {sorted(keys)}")
        arrays = {key: _member(npz, path, key) for key in REQUIRED_KEYS + OPTIONAL_KEYS if key in keys}
        ground_truth = {k[len(GROUND_TRUTH_PREFIX):]: _member(npz, path, k) for k in npz.files
                        if k.startswith(GROUND_TRUTH_PREFIX)}
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except json.JSONDecodeError as err:
            raise fail(path, "meta", "a JSON string", f"invalid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise fail(path, "meta", "a JSON object (dict)", type(meta).__name__)
    name = meta.pop("name", os.path.splitext(os.path.basename(path))[0])
    return NeuralDataset(**arrays, meta=meta, ground_truth=ground_truth or None, name=str(name),
                         sources={key: path for key in REQUIRED_KEYS + OPTIONAL_KEYS})
