"""Test-set evaluation of a trained model: every metric of paper section 4.1, ``metrics.json`` and the table.

Images (test set, [-1,1] scale): MSE, PSNR (data range 2, per image), SSIM (per image).
Neurons (prediction r = act(z) for each test image vs the T x n trial-averaged response):

* ``pcc``: Pearson correlation per neuron (the paper's PCC), its ``p_value`` and ``significant`` (p <= 0.05);
* ``single_trial_corr``, ``oracle_corr`` (leave-one-out) and ``feve`` (NaN where FEV <= 0), when R >= 2 repeats;
  the FEVe summary averages the neurons with FEV >= 0.15 (:data:`MIN_FEV`, the usual exclusion threshold), as
  FEVe of a neuron with almost no explainable variance is unbounded;
* simulated data only: ``corr_to_truth`` (vs the noise-free rate), ``noise_ceiling_fraction`` and, for FR/FM/GR
  readouts, ``rf_peak_distance`` (pixels between the mask peak and the true RF centre on the 32 x 32 image).

Summaries are means (``nanmean``) over neurons; medians for the noise-ceiling fraction, whose ratio is heavy
tailed. Per-neuron arrays are kept under ``per_neuron``; NaN is written to JSON as null.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from daenr_fast import metrics as M
from daenr_fast.models.readouts import activate
from daenr_fast.models.registry import display_name, split_name
from daenr_fast.train.config import TrainConfig

EVAL_BATCH = 256
#: FEV threshold of the FEVe summary
MIN_FEV = 0.15


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, activation: str = "elu1",
            batch: int = EVAL_BATCH) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Eval-mode reconstructions (N,1,32,32) and predicted responses ``act(z)`` (N,n) (None where absent)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    recon, rates = [], []
    for start in range(0, images.shape[0], batch):
        out = model(images[start:start + batch].to(device).float())
        if out.reconstruction is not None:
            recon.append(out.reconstruction.cpu())
        if out.response is not None:
            rates.append(activate(out.response, activation).cpu())
    model.train(was_training)
    return (torch.cat(recon) if recon else None), (torch.cat(rates) if rates else None)


def _mean(a) -> Optional[float]:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and np.isfinite(a).any() else None


def _median(a) -> Optional[float]:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmedian(a)) if a.size and np.isfinite(a).any() else None


def evaluate_model(model: nn.Module, splits, config: TrainConfig) -> dict:
    """All test metrics for ``model`` on ``splits`` (see the module docstring); JSON-ready dict."""
    images, _ = splits.tensors("test")
    recon, rates = predict(model, images, config.response_activation)
    result = {"model": display_name(config.model, config.layer), "name": config.model, "layer": config.layer,
              "data": config.data, "alpha": config.alpha, "beta": config.beta, "n_test_images": int(images.shape[0])}
    if recon is not None:
        result["images"] = {"mse": float(M.mse(recon, images)), "psnr": float(M.psnr(recon, images)),
                            "ssim": float(M.ssim(recon, images))}
    if rates is not None:
        result.update(_neuron_metrics(model, rates.numpy().astype(np.float64), splits, config))
    return result


def _neuron_metrics(model: nn.Module, pred: np.ndarray, splits, config: TrainConfig) -> dict:
    trials = np.asarray(splits.test_trials, dtype=np.float64)
    mean = np.asarray(splits.test_mean, dtype=np.float64)
    r, p = M.pearson_per_neuron(pred, mean)
    sig = M.significant_neurons(p)
    per = {"pcc": r, "p_value": p, "significant": sig}
    if trials.shape[0] >= 2:
        per["single_trial_corr"] = M.single_trial_correlation(pred, trials)
        per["oracle_corr"] = M.oracle_correlation(trials)
        per["feve"] = M.feve(pred, trials)
        feve_summary = M.feve(pred, trials, min_fev=MIN_FEV)
    truth = getattr(splits, "ground_truth", None)
    if truth:
        rates = np.asarray(truth["test_rates"], dtype=np.float64)
        per["corr_to_truth"] = M.correlation_to_truth(pred, rates)
        per["noise_ceiling_fraction"] = M.noise_ceiling_fraction(pred, trials, rates)
        masks = model.masks() if split_name(config.model)[1] in ("fr", "fm", "gr") else None
        if masks is not None and "rf_centers" in truth:
            per["rf_peak_distance"] = M.rf_peak_distance(masks.cpu().numpy(), np.asarray(truth["rf_centers"]),
                                                         image_size=splits.tensors("test")[0].shape[-1])
    summary = {"n_neurons": int(r.shape[0]), "pcc": _mean(r), "pcc_median": _median(r),
               "n_significant": int(np.sum(sig))}
    for key in ("single_trial_corr", "oracle_corr", "corr_to_truth", "rf_peak_distance"):
        if key in per:
            summary[key] = _mean(per[key])
    if "feve" in per:
        summary["feve"] = _mean(feve_summary)
        summary["n_feve"] = int(np.isfinite(feve_summary).sum())
    if "noise_ceiling_fraction" in per:
        summary["noise_ceiling_fraction"] = _median(per["noise_ceiling_fraction"])
    return {"neurons": summary, "per_neuron": {k: np.asarray(v).tolist() for k, v in per.items()}}


def run_summary(state: dict, model: nn.Module) -> dict:
    """Run statistics from a trainer/checkpoint ``state``: steps, rounds, best validation loss, time, size."""
    return {"steps": state["step"], "rounds": state["round"], "best_val_loss": state["best_val"],
            "best_step": state["best_step"], "stop_reason": state["stop_reason"],
            "train_seconds": round(state["train_seconds"], 3),
            "n_parameters": sum(p.numel() for p in model.parameters())}


def json_safe(value):
    """``value`` with numpy scalars made python and NaN/inf floats made None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_metrics(path, metrics: dict) -> None:
    Path(path).write_text(json.dumps(json_safe(metrics), indent=1) + "\n", encoding="utf-8")


def write_outputs(out, model: nn.Module, splits, config: TrainConfig, metrics: dict, figures: bool = True) -> None:
    """Write ``metrics.json`` and (if ``figures``) ``reconstructions.png`` / ``neurons.png`` into ``out``."""
    from daenr_fast.train import figures as F

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out / "metrics.json", metrics)
    if figures:
        images, _ = splits.tensors("test")
        recon, _ = predict(model, images, config.response_activation)
        if recon is not None:
            F.reconstructions_figure(out / "reconstructions.png", images, recon, metrics)
        if "per_neuron" in metrics:
            F.neurons_figure(out / "neurons.png", metrics)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(metrics: dict) -> str:
    """The metrics as a plain-text table (what ``daenr evaluate`` prints)."""
    rows = [("model", metrics.get("model", "?")), ("data", metrics.get("data", "?")),
            ("alpha : beta", f"{metrics.get('alpha', '?'):g} : {metrics.get('beta', '?'):g}"),
            ("test images", str(metrics.get("n_test_images", "?")))]
    img = metrics.get("images")
    if img:
        rows += [("MSE", _fmt(img["mse"], ".4f")), ("PSNR (dB)", _fmt(img["psnr"], ".3f")),
                 ("SSIM", _fmt(img["ssim"], ".3f"))]
    neu = metrics.get("neurons")
    if neu:
        rows += [("neurons", str(neu["n_neurons"])), ("PCC (mean)", _fmt(neu["pcc"], ".3f")),
                 ("PCC (median)", _fmt(neu["pcc_median"], ".3f")),
                 ("significant (p<=0.05)", f"{neu['n_significant']}/{neu['n_neurons']}")]
        labels = {"single_trial_corr": ("single-trial corr", ".3f"), "oracle_corr": ("oracle corr", ".3f"),
                  "feve": (f"FEVe (mean, FEV>={MIN_FEV})", ".3f"), "corr_to_truth": ("corr to true rate", ".3f"),
                  "noise_ceiling_fraction": ("noise-ceiling fraction (median)", ".3f"),
                  "rf_peak_distance": ("RF peak distance (px)", ".2f")}
        rows += [(label, _fmt(neu[key], spec)) for key, (label, spec) in labels.items() if key in neu]
    run = metrics.get("run")
    if run:
        rows += [("steps / rounds", f"{run['steps']} / {run['rounds']} ({run['stop_reason']})"),
                 ("best validation loss", _fmt(run["best_val_loss"], ".5g")),
                 ("training time (s)", _fmt(run["train_seconds"], ".1f"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def load_run(run_dir, device: str = "cpu") -> Tuple[TrainConfig, nn.Module, dict]:
    """Rebuild a trained model from ``run_dir/checkpoint.pt``: returns (config, model in eval mode, checkpoint).

    A finished run's checkpoint holds the best parameters as ``model``; an unfinished one (killed run) is
    evaluated with its best parameters so far (``best_model``). A damaged or missing ``checkpoint.pt`` is a
    :class:`~daenr_fast.train.checkpoint.CheckpointError` even when ``checkpoint.prev.pt`` is intact (that one
    holds an earlier state, whose metrics would not be the run's): the message says how to resume from it.
    """
    from daenr_fast.models.registry import build_model
    from daenr_fast.train.checkpoint import CheckpointError, load_run_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    found = load_run_checkpoint(run_dir)
    if found.passed_over is not None:
        problem = found.passed_over
        raise CheckpointError(problem.path, problem.reason,
                              f"the previous checkpoint {found.path} (step {found.step}) is intact: "
                              f"'daenr train --resume --out {run_dir}' continues the run from it")
    payload = found.payload
    config = TrainConfig.from_dict(payload["config"])
    model = build_model(config.model, layer=config.layer, n_neurons=payload["n_neurons"], **config.model_options)
    finished = payload["state"].get("finished", False)
    model.load_state_dict(payload["model"] if finished else payload["best_model"])
    return config, model.to(device).eval(), payload
