"""Per-region response and image statistics (:func:`stats`) and their table (:func:`format_stats`).

* ``mean_response``: mean single-trial response over all training images and neurons.
* ``frac_zeros``: fraction of single-trial training responses that are exactly 0.
* ``lifetime_sparseness``: median over neurons of the Vinje-Gallant (2000) sparseness of the training
  responses, ``S = (1 - (sum_j r_j / N)^2 / (sum_j r_j^2 / N)) / (1 - 1/N)`` (0 = dense, 1 = one image).
* ``oracle_correlation``: median over neurons of the leave-one-out oracle: the Pearson correlation, over all
  repeats and test images, between a single trial and the mean of the other ``R - 1`` trials of that image.
  NaN when there is a single repeat.

* ``rms_contrast``, ``spectrum_slope``, ``intensity_mean``, ``intensity_std``: statistics of the test images
  (:mod:`.image_stats`; the test images are what every source has, also a test-only Antolik folder).

Neurons whose statistic is undefined (a silent neuron, a constant response) are left out of the medians. A
dataset without training responses has NaN training statistics.
"""
from __future__ import annotations

import numpy as np

from daenr_fast.metrics import oracle_correlation

from .dataset import NeuralDataset
from .image_stats import IMAGE_STAT_KEYS, image_stats

#: Keys of :func:`stats` that are compared with calibration targets, with their column titles.
STAT_COLUMNS = {
    "mean_response": "mean/trial",
    "frac_zeros": "zeros",
    "lifetime_sparseness": "sparseness",
    "oracle_correlation": "oracle r",
    "rms_contrast": "contrast",
    "spectrum_slope": "slope",
    "intensity_mean": "I mean",
    "intensity_std": "I std",
}
#: Statistics compared with their targets by difference (the others by relative deviation).
ABSOLUTE_KEYS = ("spectrum_slope",)


def lifetime_sparseness(responses: np.ndarray) -> np.ndarray:
    """Vinje-Gallant lifetime sparseness per neuron.

    Args:
        responses: (N, n) responses of ``n`` neurons to ``N`` stimuli.

    Returns:
        (n,) float64; NaN for a neuron whose responses are all 0.
    """
    r = np.asarray(responses, dtype=np.float64)
    n = r.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (1.0 - r.mean(axis=0) ** 2 / (r**2).mean(axis=0)) / (1.0 - 1.0 / n)
    return s


def _oracle(trials: np.ndarray) -> np.ndarray:
    """Leave-one-out oracle per neuron (:func:`daenr_fast.metrics.oracle_correlation`); NaN with one repeat."""
    if trials.shape[0] < 2:
        return np.full(trials.shape[-1], np.nan)
    return oracle_correlation(trials)


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def stats(dataset: NeuralDataset) -> dict:
    """Statistics of one dataset (definitions in the module docstring).

    Returns:
        dict with ``name``, ``n_neurons``, ``n_train``, ``n_test``, ``n_repeats``, ``mean_response``,
        ``frac_zeros``, ``lifetime_sparseness``, ``oracle_correlation``, ``rms_contrast``, ``spectrum_slope``,
        ``intensity_mean``, ``intensity_std`` (floats) and ``intensity_quantiles`` (list).
    """
    train = dataset.train_responses
    nan = float("nan")
    has_train = train is not None and train.size > 0
    images = image_stats(dataset.test_images)
    return {
        "name": dataset.name,
        "n_neurons": dataset.n_neurons,
        "n_train": int(len(train)) if train is not None else 0,
        "n_test": int(len(dataset.test_images)),
        "n_repeats": dataset.n_repeats,
        "mean_response": float(train.mean(dtype=np.float64)) if has_train else nan,
        "frac_zeros": float((train == 0).mean()) if has_train else nan,
        "lifetime_sparseness": _median(lifetime_sparseness(train)) if has_train else nan,
        "oracle_correlation": _median(_oracle(dataset.test_responses)),
        **{key: images[key] for key in IMAGE_STAT_KEYS},
        "intensity_quantiles": images["intensity_quantiles"],
    }


def _versus(value: float, target: float, key: str) -> str:
    """``"target (deviation)"``: the difference for :data:`ABSOLUTE_KEYS`, else the relative deviation."""
    if key in ABSOLUTE_KEYS:
        return f"{target:.2f} ({value - target:+.2f})"
    return f"{target:.2f} ({(value - target) / target:+.0%})"


def format_stats(rows: list[dict], targets: list[dict | None] | None = None) -> str:
    """A plain-text table of :func:`stats` results, one row per dataset.

    Args:
        rows: results of :func:`stats`.
        targets: optional, per row, a dict of target values (keys of ``STAT_COLUMNS``) printed on a line
            below the row, with the relative deviation of each statistic (the difference for the spectrum
            slope).
    """
    head = ["dataset", "neurons", "train", "test x rep"] + list(STAT_COLUMNS.values())
    lines = []
    for i, row in enumerate(rows):
        lines.append([
            str(row["name"]), str(row["n_neurons"]), str(row["n_train"]), f"{row['n_test']} x {row['n_repeats']}",
        ] + [f"{row[key]:.3f}" for key in STAT_COLUMNS])
        target = targets[i] if targets else None
        if target:
            lines.append(["  target", "", "", ""] + [_versus(row[k], target[k], k) if k in target else ""
                                                     for k in STAT_COLUMNS])
    widths = [max(len(r[c]) for r in [head] + lines) for c in range(len(head))]
    fmt = lambda r: "  ".join(  # noqa: E731
        cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule] + [fmt(r) for r in lines])
