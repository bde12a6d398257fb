"""Data specs per region and neuron subsets (Table 3 trains on only some of the recorded neurons)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from daenr_fast.data import NeuralDataset


def data_spec(data: str, region: int) -> str:
    """The :func:`daenr_fast.data.load` spec of ``region``.

    ``sim`` -> ``sim:region3``; ``sim:seed=1`` -> ``sim:region3:seed=1``; ``antolik:DIR`` -> ``antolik:DIR/region3``;
    a path containing ``{region}`` is formatted; any other spec (e.g. one ``.npz``) is used for every region.
    """
    if data == "sim" or data.startswith("sim:seed="):
        seed = data.partition(":")[2]
        return f"sim:region{region}" + (f":{seed}" if seed else "")
    if data.startswith("antolik:"):
        return f"{data.rstrip('/')}/region{region}"
    if "{region}" in data:
        return data.format(region=region)
    return data


def subset_neurons(dataset: NeuralDataset, index: Sequence[int]) -> NeuralDataset:
    """The same stimuli with only the neurons ``index`` (responses, ids and per-neuron ground truth sliced).

    Ground truth: arrays named ``*_rates`` are sliced on their last axis (images x neurons); other arrays whose
    first axis has one entry per neuron are sliced on it; anything else is kept.
    """
    idx = np.asarray(index, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("a neuron subset needs at least one neuron")
    n = dataset.n_neurons
    gt = None
    if dataset.ground_truth:
        gt = {}
        for key, value in dataset.ground_truth.items():
            arr = np.asarray(value)
            if key.endswith("_rates") and arr.ndim >= 1 and arr.shape[-1] == n:
                gt[key] = arr[..., idx]
            elif arr.ndim >= 1 and arr.shape[0] == n:
                gt[key] = arr[idx]
            else:
                gt[key] = value
    val = dataset.val_responses[:, idx] if dataset.val_responses is not None else None
    return NeuralDataset(
        train_images=dataset.train_images, train_responses=dataset.train_responses[:, idx],
        test_images=dataset.test_images, test_responses=dataset.test_responses[..., idx],
        val_images=dataset.val_images, val_responses=val, neuron_ids=np.asarray(dataset.neuron_ids)[idx],
        meta={**dataset.meta, "neuron_subset": idx.tolist()}, ground_truth=gt, name=f"{dataset.name}-subset")


def significant_index(metrics_path: Path, subset: str) -> np.ndarray:
    """Neuron indices with p <= 0.05 (``sig``) or p > 0.05 (``insig``) from a run's ``metrics.json``."""
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    significant = np.asarray(metrics["per_neuron"]["significant"], dtype=bool)
    if subset == "sig":
        return np.flatnonzero(significant)
    if subset == "insig":
        return np.flatnonzero(~significant)
    raise ValueError(f"subset must be 'sig' or 'insig', got {subset!r}")
