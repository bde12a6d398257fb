"""Preprocessing as in the paper: images resized to 32 x 32, intensities mapped to [-1, 1] (:func:`prepare`).

* Resize: bilinear interpolation with pixel centres aligned (``torch.nn.functional.interpolate``,
  ``align_corners=False``; anti-aliased when shrinking). A 31 x 31 pixel at (r, c) lands at
  ``((r + 0.5) * 32 / 31 - 0.5, ...)``.
* Intensities: ``x' = clip(2 (x - lo) / (hi - lo) - 1, -1, 1)`` with ``lo``, ``hi`` the minimum and maximum of the
  resized *training* images (before the validation split), so validation and test use the training mapping.
* Validation split: a seeded random ``val_fraction`` of the training images, unless the dataset has its own.
* Test-only datasets (no training images, e.g. an Antolik folder without ``training_inputs.npy``): ``lo``, ``hi``
  are the test images' own range (for the Antolik files the 8-bit display range, which the test images span),
  the training and validation splits are empty, and asking for them (:meth:`Splits.tensors`, as training does)
  raises a :class:`~daenr_fast.data.DataError` naming the missing file.
* Degenerate results raise a :class:`~daenr_fast.data.DataError` naming the file and key, before any training:
  images of a split that are one constant value, or not finite, after preprocessing (:func:`prepare`), and
  training or test responses that are one constant value (:meth:`Splits.check_responses`, which the trainer
  calls for models with a readout).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .dataset import IN_MEMORY, NeuralDataset, fail

SPLITS = ("train", "val", "test")


def resize(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) -> (N, 1, size, size) float32 tensor, bilinear, pixel centres aligned."""
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    if x.shape[-2:] == (size, size):
        return x.clone()
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def to_unit_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``clip(2 (x - lo) / (hi - lo) - 1, -1, 1)``."""
    return (2.0 * (x - lo) / (hi - lo) - 1.0).clamp_(-1.0, 1.0)


class ResponseDataset(Dataset):
    """(image, response) pairs: image (1, S, S) float32 tensor, response (n,) float32 tensor."""

    def __init__(self, images: torch.Tensor, responses: torch.Tensor):
        if len(images) != len(responses):
            raise ValueError(f"images ({len(images)}) and responses ({len(responses)}) differ in length")
        self.images = images
        self.responses = responses

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.responses[index]


@dataclass
class Splits:
    """Preprocessed train / validation / test data.

    Attributes:
        train, val, test: :class:`ResponseDataset`; ``test`` yields the trial-averaged response.
        test_trials: (R, T, n) single-trial test responses.
        test_mean: (T, n) trial-averaged test responses.
        ground_truth: the dataset's ground truth with ``train_rates`` split into ``train_rates`` and
            ``val_rates`` like the images (and ``rf_centers`` in the coordinates of the ``size`` grid), or None.
        train_index, val_index: rows of the dataset's training set in each split (``val_index`` is None when
            the dataset has its own validation set).
        intensity_range: (lo, hi), the training-image intensities mapped to -1 and 1.
        name, meta: from the dataset.
        sources: key -> file each array came from (for error messages), from the dataset.
        test_only: from a test-only dataset: no training or validation data (module docstring).
    """

    train: ResponseDataset
    val: ResponseDataset
    test: ResponseDataset
    test_trials: torch.Tensor
    test_mean: torch.Tensor
    ground_truth: dict | None
    train_index: np.ndarray
    val_index: np.ndarray | None
    intensity_range: tuple[float, float]
    name: str = "dataset"
    meta: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    test_only: bool = False

    @property
    def n_neurons(self) -> int:
        return int(self.test_mean.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (N, 1, S, S), responses (N, n)) of ``split`` ("train", "val" or "test", trial-averaged)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if self.test_only and split != "test":
            raise fail(self.sources.get("train_images", IN_MEMORY), "train_images", f"training images (for the "
                       f"{split} split)", "nothing (missing file): this dataset has the test split only; it can be "
                       "evaluated (daenr evaluate RUN --data SPEC), not trained on")
        data = getattr(self, split)
        return data.images, data.responses

    def check_responses(self) -> None:
        """Raise a :class:`~daenr_fast.data.DataError` if the training or the trial-averaged test responses are
        one constant value (a readout has nothing to learn, a correlation nothing to measure)."""
        for key, values in (("train_responses", self.train.responses), ("test_responses", self.test_mean)):
            if values.numel() and bool((values == values.flatten()[0]).all()):
                raise fail(self.sources.get(key, IN_MEMORY), key, "responses that vary across images or neurons",
                           f"every {'trial-averaged ' if key == 'test_responses' else ''}response = "
                           f"{float(values.flatten()[0]):g}")


def _check_images(images: torch.Tensor, key: str, origin: str, lo: float, hi: float) -> None:
    """Preprocessed images of one split must be finite and not all one value."""
    if not images.numel():
        return
    if not bool(torch.isfinite(images).all()):
        raise fail(origin, key, "finite values after preprocessing",
                   f"NaN or inf: the training intensity range [{lo:g}, {hi:g}] is too wide for float32")
    first = images.flatten()[0]
    if bool((images == first).all()):
        raise fail(origin, key, "images that still vary after preprocessing (resized, then mapped to [-1, 1] with "
                   f"the training minimum {lo:g} and maximum {hi:g})",
                   f"every pixel = {float(first):g} (an outlier or a wrong intensity scale?)")


def prepare(dataset: NeuralDataset, val_fraction: float = 0.2, seed: int = 0, size: int = 32) -> Splits:
    """Resize, rescale and split ``dataset`` (module docstring).

    Args:
        dataset: any :class:`NeuralDataset`.
        val_fraction: fraction of the training images held out for validation, in [0, 1); ignored when the
            dataset has its own validation set.
        seed: seed of the validation split.
        size: side of the output images.

    Returns:
        :class:`Splits`.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if int(size) < 2:
        raise ValueError(f"size must be >= 2, got {size!r}")
    if dataset.test_only:
        return _prepare_test_only(dataset, size)
    train_x = resize(dataset.train_images, size)
    lo, hi = float(train_x.min()), float(train_x.max())
    if not hi > lo:
        raise fail(dataset.origin("train_images"), "train_images", "images that are not all one value",
                   f"every pixel = {lo:g} (cannot map intensities to [-1, 1])")
    train_x = to_unit_range(train_x, lo, hi)
    train_y = torch.as_tensor(dataset.train_responses)
    n_train = len(train_x)
    gt = dict(dataset.ground_truth) if dataset.ground_truth else None

    if dataset.val_images is not None:
        train_index, val_index = np.arange(n_train), None
        val = ResponseDataset(to_unit_range(resize(dataset.val_images, size), lo, hi),
                              torch.as_tensor(dataset.val_responses))
        train = ResponseDataset(train_x, train_y)
    else:
        n_val = int(round(val_fraction * n_train))
        if n_val >= n_train:
            raise ValueError(f"val_fraction={val_fraction} leaves no training images out of {n_train}")
        order = np.random.default_rng(seed).permutation(n_train)
        val_index, train_index = np.sort(order[:n_val]), np.sort(order[n_val:])
        tv, ti = torch.as_tensor(val_index), torch.as_tensor(train_index)
        train = ResponseDataset(train_x[ti], train_y[ti])
        val = ResponseDataset(train_x[tv], train_y[tv])
        if gt is not None and "train_rates" in gt:
            rates = np.asarray(gt["train_rates"])
            gt["train_rates"], gt["val_rates"] = rates[train_index], rates[val_index]

    if gt is not None and "rf_centers" in gt and size != 32:
        gt["rf_centers"] = (np.asarray(gt["rf_centers"]) + 0.5) * (size / 32) - 0.5

    test_trials = torch.as_tensor(dataset.test_responses)
    test_mean = test_trials.mean(dim=0)
    test = ResponseDataset(to_unit_range(resize(dataset.test_images, size), lo, hi), test_mean)
    val_key = "val_images" if dataset.val_images is not None else "train_images"
    for key, split in (("train_images", train), (val_key, val), ("test_images", test)):
        _check_images(split.images, key, dataset.origin(key), lo, hi)
    return Splits(train=train, val=val, test=test, test_trials=test_trials, test_mean=test_mean, ground_truth=gt,
                  train_index=train_index, val_index=val_index, intensity_range=(lo, hi), name=dataset.name,
                  meta=dict(dataset.meta), sources=dict(dataset.sources))


def _prepare_test_only(dataset: NeuralDataset, size: int) -> Splits:
    """:class:`Splits` of a test-only dataset (module docstring)."""
    test_x = resize(dataset.test_images, size)
    lo, hi = float(test_x.min()), float(test_x.max())
    if not hi > lo:
        raise fail(dataset.origin("test_images"), "test_images", "images that are not all one value",
                   f"every pixel = {lo:g} (cannot map intensities to [-1, 1])")
    test_trials = torch.as_tensor(dataset.test_responses)
    test_mean = test_trials.mean(dim=0)
    test = ResponseDataset(to_unit_range(test_x, lo, hi), test_mean)
    _check_images(test.images, "test_images", dataset.origin("test_images"), lo, hi)
    n = dataset.n_neurons
    empty = ResponseDataset(torch.empty(0, 1, size, size), torch.empty(0, n))
    gt = dict(dataset.ground_truth) if dataset.ground_truth else None
    return Splits(train=empty, val=empty, test=test, test_trials=test_trials, test_mean=test_mean, ground_truth=gt,
                  train_index=np.arange(0), val_index=None, intensity_range=(lo, hi), name=dataset.name,
                  meta=dict(dataset.meta), sources=dict(dataset.sources), test_only=True)
