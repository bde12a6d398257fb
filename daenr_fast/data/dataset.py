"""The in-memory dataset every loader returns, and the checks every dataset passes.

Shapes (``N`` training images, ``V`` validation images, ``T`` test images, ``R`` test repeats, ``n`` neurons,
``H x W`` pixels)::

    train_images (N, H, W)    train_responses (N, n)
    val_images   (V, H, W)    val_responses   (V, n)      optional, both or neither
    test_images  (T, H, W)    test_responses  (R, T, n)   R >= 1 repeats of every test image
    neuron_ids   (n,)

Arrays are stored as float32, so every value must be finite both as read and once converted to float32 (a
float64 1e39 is refused, not turned into inf). Any violation raises :class:`DataError` (a ``ValueError``) naming
the file, the key and what was expected. Negative responses are valid data (e.g. dF/F) but not valid Poisson
targets: they only warn. A *test-only* dataset (``test_only=True``, for evaluation) has no training or validation
images; its ``train_responses`` are optional and serve response statistics only.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Malformed data: names the file, the key and what was expected."""


class MissingDataFile(FileNotFoundError, ValueError):
    """A data file that does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


IMAGE_KEYS = ("train_images", "val_images", "test_images")
RESPONSE_KEYS = ("train_responses", "val_responses", "test_responses")
REQUIRED_KEYS = ("train_images", "train_responses", "test_images", "test_responses")
#: What a test-only dataset (evaluation only, e.g. an Antolik folder without training images) must have.
TEST_ONLY_KEYS = ("test_images", "test_responses")
IN_MEMORY = "<in-memory dataset>"
STORAGE_DTYPE = np.float32


def fail(origin: str, key: str, expected: str, got: str) -> DataError:
    """The error for ``key`` read from ``origin``: ``"{origin} [{key}]: expected ..., got ..."``."""
    return DataError(f"{origin} [{key}]: expected {expected}, got {got}")


def _check_array(value, key: str, origin: str, ndim: int, layout: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise fail(origin, key, f"a numeric array {layout}", f"dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise fail(origin, key, f"a real-valued array {layout}", f"dtype {arr.dtype}")
    if arr.ndim != ndim:
        extra = ""
        if key in IMAGE_KEYS:
            extra = " (a stack of 2-D grayscale images)"
        elif key == "test_responses" and arr.ndim == 2:
            extra = " (add a repeat axis, e.g. responses[None], for a single repeat)"
        raise fail(origin, key, f"a {ndim}-D array {layout}{extra}", f"shape {arr.shape}")
    if key in IMAGE_KEYS and (arr.shape[1] < 2 or arr.shape[2] < 2):
        raise fail(origin, key, f"2-D images {layout} with H, W >= 2", f"shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise fail(origin, key, "finite values (no NaN or inf)",
                   f"{arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    if arr.size and arr.dtype.kind == "f" and arr.dtype.itemsize > np.dtype(STORAGE_DTYPE).itemsize:
        with np.errstate(over="ignore"):
            overflow = ~np.isfinite(arr.astype(STORAGE_DTYPE))
        if overflow.any():
            bad = tuple(int(i) for i in np.argwhere(overflow)[0])
            raise fail(origin, key, f"values that fit in float32 (|x| <= {np.finfo(STORAGE_DTYPE).max:.4g})",
                       f"{arr[bad]} at index {bad}")
    return arr


def validate(arrays: dict, sources: dict | None = None, test_only: bool = False) -> None:
    """Check a dataset's arrays; raise :class:`DataError` at the first problem.

    Args:
        arrays: key -> array for the keys in the module docstring (optional ones may be missing or None).
        sources: key -> file the array came from (for the message); default ``"<in-memory dataset>"``.
        test_only: a dataset for evaluation only: no training or validation images; ``train_responses`` may
            still be given (response statistics), without images to pair them with.
    """
    sources = sources or {}
    where = lambda key: sources.get(key, IN_MEMORY)  # noqa: E731
    for key in TEST_ONLY_KEYS if test_only else REQUIRED_KEYS:
        if arrays.get(key) is None:
            raise fail(where(key), key, "this required array", "nothing (missing)")
    if test_only:
        for key in ("train_images", "val_images", "val_responses"):
            if arrays.get(key) is not None:
                raise fail(where(key), key, "no such array in a test-only dataset", "an array")
    if (arrays.get("val_images") is None) != (arrays.get("val_responses") is None):
        have = "val_images" if arrays.get("val_images") is not None else "val_responses"
        other = "val_responses" if have == "val_images" else "val_images"
        raise fail(where(other), other, f"'{other}' together with '{have}'", "only one of them")
    layouts = {
        "train_images": (3, "(N, H, W)"), "train_responses": (2, "(N, neurons)"),
        "val_images": (3, "(V, H, W)"), "val_responses": (2, "(V, neurons)"),
        "test_images": (3, "(T, H, W)"), "test_responses": (3, "(repeats, T, neurons)"),
    }
    arr = {}
    for key, (ndim, layout) in layouts.items():
        if arrays.get(key) is not None:
            arr[key] = _check_array(arrays[key], key, where(key), ndim, layout)
    first = "test_responses" if test_only else "train_responses"
    n_neurons = arr[first].shape[-1]
    if n_neurons == 0:
        raise fail(where(first), first, "at least one neuron", "0 neurons")
    for split, img_key, resp_key, axis in (
        ("train", "train_images", "train_responses", 0),
        ("val", "val_images", "val_responses", 0),
        ("test", "test_images", "test_responses", 1),
    ):
        if img_key not in arr:
            if resp_key in arr and arr[resp_key].shape[-1] != n_neurons:
                raise fail(where(resp_key), resp_key, f"{n_neurons} neurons as in '{first}'",
                           f"{arr[resp_key].shape[-1]} (shape {arr[resp_key].shape})")
            continue
        images, responses = arr[img_key], arr[resp_key]
        if len(images) == 0:
            raise fail(where(img_key), img_key, f"at least one {split} image", "0 images")
        if responses.shape[axis] != len(images):
            raise fail(where(resp_key), resp_key,
                       f"one response row per image in '{img_key}' ({len(images)} images)",
                       f"{responses.shape[axis]} rows (shape {responses.shape})")
        if responses.shape[-1] != n_neurons:
            raise fail(where(resp_key), resp_key,
                       f"{n_neurons} neurons as in '{first}'", f"{responses.shape[-1]} (shape {responses.shape})")
        if "train_images" in arr and images.shape[1:] != arr["train_images"].shape[1:]:
            raise fail(where(img_key), img_key, f"images of size {arr['train_images'].shape[1:]} as in 'train_images'",
                       f"{images.shape[1:]}")
    if arr["test_responses"].shape[0] == 0:
        raise fail(where("test_responses"), "test_responses", "at least one repeat", "0 repeats")
    ids = arrays.get("neuron_ids")
    if ids is not None and np.asarray(ids).shape != (n_neurons,):
        raise fail(where("neuron_ids"), "neuron_ids", f"shape ({n_neurons},)", f"shape {np.asarray(ids).shape}")
    for key in RESPONSE_KEYS:
        if key in arr and arr[key].size and arr[key].min() < 0:
            warnings.warn(
                f"{where(key)} [{key}]: {int((arr[key] < 0).sum())} negative responses (min {arr[key].min():.4g}). "
                "They are kept, but they are not valid Poisson targets: train with a Gaussian (MSE) readout loss "
                "or transform the responses (e.g. shift or rectify) before using the Poisson loss.",
                UserWarning, stacklevel=3,
            )


@dataclass
class NeuralDataset:
    """Images shown to a population of neurons and the recorded responses (shapes in the module docstring).

    Attributes:
        train_images, train_responses, test_images, test_responses: required arrays (float32).
        val_images, val_responses: an optional validation split of the data's own (float32 or None).
        neuron_ids: (n,) identifiers; default ``arange(n)``.
        meta: free-form metadata (JSON-serialisable).
        ground_truth: for simulated data, noise-free ``train_rates`` (N, n), ``test_rates`` (T, n),
            ``rf_centers`` (n, 2) as (row, col) on the 32 x 32 preprocessed image, ``cell_types`` (n,) and
            the other receptive-field parameters; None for recordings.
        name: short label (e.g. ``"sim-region3"``).
        sources: key -> file the array came from, used in error messages (see :meth:`origin`).
        test_only: a dataset for evaluation only (see :func:`validate`): ``train_images`` is None (e.g. an
            Antolik folder without ``training_inputs.npy``); :func:`daenr_fast.data.prepare` gives its test split
            and refuses to give training data.
    """

    train_images: np.ndarray | None = None
    train_responses: np.ndarray | None = None
    test_images: np.ndarray | None = None
    test_responses: np.ndarray | None = None
    val_images: np.ndarray | None = None
    val_responses: np.ndarray | None = None
    neuron_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    ground_truth: dict | None = None
    name: str = "dataset"
    sources: dict | None = field(default=None, repr=False, compare=False)
    test_only: bool = False

    def __post_init__(self):
        self.sources = dict(self.sources or {})
        validate(self.arrays(), self.sources, test_only=self.test_only)
        for key in IMAGE_KEYS + RESPONSE_KEYS:
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, np.ascontiguousarray(value, dtype=STORAGE_DTYPE))
        if self.neuron_ids is None:
            self.neuron_ids = np.arange(self.n_neurons)
        else:
            self.neuron_ids = np.asarray(self.neuron_ids)
        self.meta = dict(self.meta or {})

    def origin(self, key: str) -> str:
        """The file array ``key`` came from, or ``"<in-memory dataset>"``."""
        return self.sources.get(key, IN_MEMORY)

    def arrays(self) -> dict:
        """The data arrays by key (optional ones may be None)."""
        keys = IMAGE_KEYS + RESPONSE_KEYS + ("neuron_ids",)
        return {key: getattr(self, key) for key in keys}

    @property
    def n_neurons(self) -> int:
        return int(self.test_responses.shape[-1])

    @property
    def n_repeats(self) -> int:
        return int(self.test_responses.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.test_images.shape[1:])

    def __repr__(self) -> str:
        val = f", val={len(self.val_images)}" if self.val_images is not None else ""
        gt = ", ground_truth" if self.ground_truth else ""
        train = "none (test only)" if self.test_only else str(len(self.train_images))
        return (f"NeuralDataset({self.name!r}: {self.n_neurons} neurons, train={train}{val}, "
                f"test={len(self.test_images)}x{self.n_repeats} repeats, images {self.image_shape}{gt})")
