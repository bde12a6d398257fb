"""One run of a sweep, in whichever process executes it: :func:`execute` (job dict in, result row out)."""
from __future__ import annotations

import functools
import time
import traceback
from pathlib import Path

import numpy as np

RECON_NAME = "recon.npz"
#: job fields that are not written to results.csv
INTERNAL = ("protocol_fields", "run_dir", "parent_dir", "threads", "device")
N_RECON = 10
#: results.csv column: the response term's share of the shared encoder's gradient, mean over the run's evaluation
#: steps (:mod:`daenr_fast.train.gradient_share`); 1 for a CNN baseline, empty for an autoencoder baseline
GRAD_SHARE = "grad_share_response"


@functools.lru_cache(maxsize=4)
def _load(spec: str):
    from daenr_fast import data

    return data.load(spec)


def _dataset(job: dict):
    """The job's data set, restricted to the parent run's (in)significant neurons for a subset run."""
    from daenr_fast.experiments.subsets import data_spec, significant_index, subset_neurons

    dataset = _load(data_spec(job["data"], job["region"]))
    if job["subset"] == "all":
        return dataset
    metrics = Path(job["parent_dir"]) / "metrics.json"
    if not metrics.exists():
        raise FileNotFoundError(f"parent run {job['parent_run']} has no metrics.json")
    index = significant_index(metrics, job["subset"])
    if index.size == 0:
        return None
    return subset_neurons(dataset, index)


def _config(job: dict):
    from daenr_fast.train import TrainConfig

    return TrainConfig(model=job["model"], layer=int(job["layer"]), data=job["data"], alpha=float(job["alpha"]),
                       beta=float(job["beta"]), seed=int(job["seed"]), out=job["run_dir"], progress=False,
                       figures=False, preset=job["preset"] or None, device=job.get("device", "cpu"),
                       **job["protocol_fields"])


def _train(config, splits):
    """Train, resuming from the run folder's checkpoint when an earlier attempt left one."""
    from daenr_fast.train import train

    if (Path(config.out) / "checkpoint.pt").exists():
        try:
            return train(config, splits, resume=True)
        except (ValueError, RuntimeError, KeyError, EOFError):
            pass
    return train(config, splits, overwrite=True)


def _save_reconstructions(result, splits, path: Path) -> None:
    from daenr_fast.train import predict

    images, _ = splits.tensors("test")
    recon, _ = predict(result.model, images[:N_RECON], result.config.response_activation)
    if recon is not None:
        np.savez_compressed(path, original=images[:N_RECON].numpy(), reconstruction=recon.numpy())


def _row(job: dict, metrics: dict, n_neurons: int, seconds: float) -> dict:
    row = {k: v for k, v in job.items() if k not in INTERNAL}
    row.update(status="ok", error="", n_neurons=n_neurons, wall_seconds=round(seconds, 2))
    run = metrics.get("run", {})
    row.update(steps=run.get("steps"), stop_reason=run.get("stop_reason"), train_seconds=run.get("train_seconds"))
    row.update(metrics.get("images", {}))
    neurons = metrics.get("neurons", {})
    for key in ("pcc", "pcc_median", "n_significant", "noise_ceiling_fraction", "corr_to_truth", "feve"):
        row[key] = neurons.get(key)
    row[GRAD_SHARE] = metrics.get("gradient_share", {}).get("mean", {}).get("response")
    return row


def execute(job: dict) -> dict:
    """Train one job (see :func:`daenr_fast.experiments.sweep.make_job`) and return its ``results.csv`` row.

    Failures do not raise: the row gets status ``failed`` and the error; a subset with no neuron gets
    status ``skipped``.
    """
    import torch

    start = time.perf_counter()
    torch.set_num_threads(int(job["threads"]))
    base = {k: v for k, v in job.items() if k not in INTERNAL}
    try:
        from daenr_fast import data

        dataset = _dataset(job)
        if dataset is None:
            return dict(base, status="skipped", error=f"no {job['subset']} neurons in the parent run", n_neurons=0)
        config = _config(job)
        splits = data.prepare(dataset, val_fraction=config.val_fraction, seed=config.seed)
        result = _train(config, splits)
        _save_reconstructions(result, splits, Path(job["run_dir"]) / RECON_NAME)
        return _row(job, result.metrics, dataset.n_neurons, time.perf_counter() - start)
    except Exception as err:  # a failed run is a result too; the sweep goes on
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        return dict(base, status="failed", error=last[:300], wall_seconds=round(time.perf_counter() - start, 2))
