"""The model as a data engine (``daenr predict``): predicted rates, and on simulated data the true rates, for any
images.

Input: a ``.npz`` whose image keys (the generic format's ``train_images``, ``val_images``, ``test_images``, or any
other key ending in ``_images``, such as those ``daenr synthesize`` writes) hold (N, H, W) stacks. Two image
spaces:

* ``stimulus`` (the generic format's meaning): raw images of the run's data size (e.g. 31 x 31 for the simulated
  regions) on the data's intensity scale, preprocessed exactly as the run's data (resized to 32 x 32, mapped to
  [-1, 1] with the run's training intensity range, clipped);
* ``model``: images the model sees, (N, 32, 32) in [-1, 1] (``daenr synthesize`` output, whose ``meta`` says so).

Output (:func:`predict_file`): ``<name>_predicted`` (N, n) and, on simulated data, ``<name>_true`` (N, n) for each
key ``<name>_images``, plus ``neurons`` (n,).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

SPACES = ("stimulus", "model")
SUFFIX = "_images"


def read_images(path, keys=None, space=None) -> tuple[dict, str]:
    """The image stacks of ``path`` and their space: ({key: (N,H,W) float32}, ``"stimulus"`` or ``"model"``).

    ``keys``: the keys to read (default every key ending in ``_images``); ``space``: as given, else the file's
    ``meta["image_space"]``, else ``stimulus``. Errors name ``--images`` (and the key) or ``--space``.
    """
    path = os.fspath(path)
    if space is not None and space not in SPACES:
        raise ValueError(f"--space must be one of {', '.join(SPACES)}, got {space!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--images {path}: no such file (expected a .npz with (N, H, W) image stacks)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--images {path}: not a .npz archive")
    with np.load(path, allow_pickle=False) as npz:
        names = list(npz.files)
        wanted = [k for k in names if k.endswith(SUFFIX)] if keys is None else list(keys)
        if not wanted:
            raise ValueError(f"--images {path}: no image keys (train_images, val_images, test_images or any "
                             f"*_images); keys found: {', '.join(names) or 'none'}")
        missing = [k for k in wanted if k not in names]
        if missing:
            raise ValueError(f"--images {path}: no key {missing[0]!r}; keys found: {', '.join(names)}")
        stacks = {k: npz[k] for k in wanted}
        file_space = None
        if "meta" in names:
            try:
                file_space = json.loads(str(npz["meta"])).get("image_space")
            except (json.JSONDecodeError, AttributeError):
                file_space = None
    if space is not None and file_space is not None and space != file_space:
        raise ValueError(f"--space {space}: the file {path} says its images are in {file_space} space")
    space = space or file_space or "stimulus"
    if space not in SPACES:
        raise ValueError(f"--images {path}: meta image_space must be one of {', '.join(SPACES)}, got {space!r}")
    for key, value in stacks.items():
        if value.dtype == object or not np.issubdtype(value.dtype, np.number) \
                or np.issubdtype(value.dtype, np.complexfloating):
            raise ValueError(f"--images {path} [{key}]: expected real numbers, got dtype {value.dtype}")
        if value.ndim != 3 or value.shape[0] == 0:
            raise ValueError(f"--images {path} [{key}]: expected a stack of images (N, H, W) with N >= 1, "
                             f"got shape {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"--images {path} [{key}]: expected finite values, got NaN or inf")
        stacks[key] = value.astype(np.float32)
    return stacks, space


def to_model_space(run, images: np.ndarray, space: str, where: str = "images") -> torch.Tensor:
    """(N,H,W) images -> (N,1,32,32) model images (module docstring); a ValueError naming ``where`` for the wrong
    size or, in model space, values outside [-1, 1]."""
    from daenr_fast.data.preprocess import resize, to_unit_range

    size = run.image_size
    if space == "model":
        if images.shape[1:] != (size, size):
            raise ValueError(f"{where}: model-space images must be {size} x {size}, got {images.shape[1]} x "
                             f"{images.shape[2]}")
        if images.min() < -1 or images.max() > 1:
            raise ValueError(f"{where}: model-space images must lie in [-1, 1], got values in "
                             f"[{images.min():g}, {images.max():g}]")
        return torch.as_tensor(images)[:, None]
    shape = stimulus_shape(run)
    if images.shape[1:] != shape:
        raise ValueError(f"{where}: expected images of {shape[0]} x {shape[1]} pixels (the size of the run's data "
                         f"{run.config.data}), got {images.shape[1]} x {images.shape[2]} (model-space images: "
                         "--space model)")
    lo, hi = run.splits.intensity_range
    return to_unit_range(resize(images, size), lo, hi)


def stimulus_shape(run) -> tuple:
    """(H, W) of the run's raw data images."""
    if run.truth is not None:
        return (run.truth.population.size,) * 2
    from daenr_fast import data

    return tuple(data.load(run.config.data).image_shape)


def predict_images(run, images) -> dict:
    """Model images (N,1,32,32) (tensor or array) -> ``{"predicted": (N,n), "true": (N,n) or None}`` float64."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.dim() == 3:
        x = x[:, None]
    out = {"predicted": run.predict(x), "true": None}
    if run.truth is not None:
        out["true"] = run.truth.rates(x.numpy())
    return out


def predict_file(run, path, out, keys=None, space=None) -> dict:
    """Predict every image stack of ``path`` and write ``out`` (.npz); returns {key: {"n", "predicted_mean",
    "true_mean"}}. Everything is checked before anything is written."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {str(out)!r}")
    if out.exists() and out.resolve() == Path(path).resolve():
        raise ValueError(f"--out {out} is the --images file itself")
    stacks, space = read_images(path, keys, space)
    models = {k: to_model_space(run, v, space, f"--images {path} [{k}]") for k, v in stacks.items()}
    arrays, summary = {"neurons": np.arange(run.n_neurons)}, {}
    for key, x in models.items():
        name = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
        rates = predict_images(run, x)
        arrays[f"{name}_predicted"] = rates["predicted"].astype(np.float32)
        summary[key] = {"n": int(x.shape[0]), "predicted_mean": float(rates["predicted"].mean())}
        if rates["true"] is not None:
            arrays[f"{name}_true"] = rates["true"].astype(np.float32)
            summary[key]["true_mean"] = float(rates["true"].mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return summary
