"""What ``daenr synthesize`` writes: :func:`table` (the JSON), :func:`write_report` (npz + JSON + PNG grid).

Files in the output folder:

* ``synthesis.npz``: ``neurons`` (K,), ``natural_images``, ``decoder_images``, ``pixel_images`` (K,32,32) on the
  model's [-1,1] scale (``meta`` says ``image_space: model``, so ``daenr predict`` reads them as they are),
  ``natural_test_index`` (K,), ``start_index`` (K,R), ``<method>_predicted`` / ``<method>_true`` (K,) and, on
  simulated data, ``true_rf`` (K,32,32) (the even Gabor filter of each neuron on the model grid);
* ``synthesis.json``: settings, per-neuron rates and image statistics, and the summary (:func:`table`);
* ``synthesis.png``: one row per neuron: best natural test image, decoder image, pixel image, true RF.

Image statistics (:mod:`daenr_fast.data.image_stats`, on ``(x + 1) / 2``): per image the RMS contrast
(std / mean) and the spectrum slope (log-log slope of the radially averaged power spectrum); per image set also
the set's spectrum slope and the Wasserstein-1 distance of its intensity distribution to the natural test
images'. A method "beats" another on a neuron when its score (:class:`~.objective.Objective`) is strictly
higher.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from daenr_fast.data import image_stats as S
from daenr_fast.synthesis import decoder_method, latent, pixel_method

NPZ_NAME, JSON_NAME, PNG_NAME = "synthesis.npz", "synthesis.json", "synthesis.png"
IMAGE_SPACE = "model"


def per_image_stats(images: np.ndarray) -> dict:
    """(K,S,S) model images -> ``rms_contrast`` (K,) and ``spectrum_slope`` (K,) (one image at a time)."""
    x = S.from_model_space(images)
    return {"rms_contrast": S.rms_contrast(x), "spectrum_slope": np.array([S.spectrum_slope(x[i:i + 1])
                                                                           for i in range(len(x))])}


def set_stats(images: np.ndarray, natural: np.ndarray) -> dict:
    """Statistics of one image set (K,S,S) beside the natural test images (T,S,S)."""
    x = S.from_model_space(images)
    per = per_image_stats(images)
    return {"rms_contrast_mean": _nanmean(per["rms_contrast"]),
            "spectrum_slope_mean": _nanmean(per["spectrum_slope"]),
            "spectrum_slope_of_set": S.spectrum_slope(x),
            "intensity_distance_to_natural": S.intensity_distance(x, S.from_model_space(natural))}


def _nanmean(a) -> float | None:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


def _f(v):
    v = float(v)
    return v if np.isfinite(v) else None


def true_receptive_fields(run, neurons: np.ndarray) -> np.ndarray | None:
    """(K,32,32) even Gabor filters of the neurons on the model grid (simulated data), else None."""
    if run.truth is None:
        return None
    from daenr_fast.data.neurons import gabor_filters

    sub = run.truth.subset(neurons)
    return gabor_filters(sub.population, size=run.image_size).astype(np.float32)


def table(result) -> dict:
    """The JSON-ready report of a :class:`~.synthesize.SynthesisResult` (module docstring)."""
    run, obj, k = result.run, result.objective, len(result.neurons)
    test_images = run.splits.tensors("test")[0][:, 0].numpy()
    nat = result.natural
    sets = {"natural": nat.images, **{m: r.images for m, r in result.methods.items()}}
    per = {name: per_image_stats(images) for name, images in sets.items()}
    ref = per_image_stats(test_images)
    cell_types = None
    if run.truth is not None:
        cell_types = run.truth.subset(result.neurons).population.cell_types
    rows = []
    for i, n in enumerate(result.neurons):
        row = {"neuron": int(n)}
        if cell_types is not None:
            row["cell_type"] = str(cell_types[i])
        row["natural"] = {"test_image": int(nat.test_index[i]), "recorded_rate": _f(nat.recorded[i]),
                          "predicted_rate": _f(nat.predicted[i])}
        if nat.true is not None:
            row["natural"]["true_rate"] = _f(nat.true[i])
            row["natural"]["best_true_rate_of_test_images"] = _f(nat.true_best[i])
        for m, r in result.methods.items():
            row[m] = {"predicted_rate": _f(r.predicted[i]), "best_restart": int(r.best_restart[i]),
                      "restart_predicted_rates": [_f(v) for v in r.restart_predicted[i]],
                      "start_predicted_rates": [_f(v) for v in r.start_predicted[i]]}
            if r.true is not None:
                row[m]["true_rate"] = _f(r.true[i])
        for name in sets:
            row[name]["rms_contrast"] = _f(per[name]["rms_contrast"][i])
            row[name]["spectrum_slope"] = _f(per[name]["spectrum_slope"][i])
        rows.append(row)
    summary = {}
    for name, images in sets.items():
        entry = set_stats(images, test_images)
        source = nat if name == "natural" else result.methods[name]
        entry["predicted_rate_mean"] = _f(np.mean(source.predicted))
        if source.true is not None:
            entry["true_rate_mean"] = _f(np.mean(source.true))
        summary[name] = entry
    comparisons = {}
    names = list(result.methods)
    for a in names:
        for b in [*names[names.index(a) + 1:], "natural"]:
            src_b = nat if b == "natural" else result.methods[b]
            for kind in ("predicted", "true"):
                va, vb = getattr(result.methods[a], kind), getattr(src_b, kind)
                if va is None or vb is None:
                    continue
                comparisons[f"{a}_beats_{b}_{kind}"] = float(np.mean(obj.score(va) > obj.score(vb)))
    summary["comparisons"] = comparisons
    settings = {"decoder_lr": decoder_method.LEARNING_RATE, "pixel_lr": pixel_method.LEARNING_RATE,
                "pixel_blur_sigma": pixel_method.PIXEL_BLUR_SIGMA, "natural_quantile": latent.NATURAL_QUANTILE}
    return {"run": str(run.run_dir), "model": run.label, "data": run.config.data, "objective": obj.label,
            "neurons_requested": k, "steps": result.steps, "restarts": result.restarts, "seed": result.seed,
            "methods": names, "ground_truth": run.truth is not None, "settings": settings,
            "natural_reference": {"images": "test", "n_images": int(len(test_images)),
                                  "rms_contrast_mean": _nanmean(ref["rms_contrast"]),
                                  "rms_contrast_sd": _f(np.nanstd(ref["rms_contrast"])),
                                  "spectrum_slope_mean": _nanmean(ref["spectrum_slope"]),
                                  "spectrum_slope_sd": _f(np.nanstd(ref["spectrum_slope"])),
                                  "spectrum_slope_of_set": S.spectrum_slope(S.from_model_space(test_images))},
            "summary": summary, "per_neuron": rows}


def arrays(result) -> dict:
    """The arrays of ``synthesis.npz`` (module docstring)."""
    nat = result.natural
    out = {"neurons": result.neurons, "natural_images": nat.images, "natural_test_index": nat.test_index,
           "start_index": result.start_index, "natural_predicted": nat.predicted,
           "meta": np.array(json.dumps({"image_space": IMAGE_SPACE, "run": str(result.run.run_dir),
                                        "objective": result.objective.label}))}
    if nat.true is not None:
        out["natural_true"] = nat.true
    for m, r in result.methods.items():
        out[f"{m}_images"] = r.images
        out[f"{m}_predicted"] = r.predicted
        if r.true is not None:
            out[f"{m}_true"] = r.true
    rf = true_receptive_fields(result.run, result.neurons)
    if rf is not None:
        out["true_rf"] = rf
    return out


def grid_figure(path, result, rows=None) -> None:
    """The PNG grid: one row per neuron (``rows``: positions in ``result.neurons``, default all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.arange(len(result.neurons)) if rows is None else np.asarray(rows)
    nat = result.natural
    rf = true_receptive_fields(result.run, result.neurons)
    columns = [("best natural", nat)] + [(f"{m} image", r) for m, r in result.methods.items()]
    n_col = len(columns) + (rf is not None)
    fig, axes = plt.subplots(len(rows), n_col, figsize=(1.9 * n_col, 1.9 * len(rows) + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j, (title, source) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(source.images[row], cmap="gray", vmin=-1, vmax=1)
            text = f"pred {source.predicted[row]:.2f}"
            if source.true is not None:
                text += f"\ntrue {source.true[row]:.2f}"
            ax.set_title(f"{title}\n{text}" if i == 0 else text, fontsize=7)
        if rf is not None:
            ax = axes[i, -1]
            lim = float(np.abs(rf[row]).max()) or 1.0
            ax.imshow(rf[row], cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title("true RF\n(even Gabor)", fontsize=7)
        axes[i, 0].set_ylabel(f"neuron {int(result.neurons[row])}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{result.run.label}, objective {result.objective.label}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def check_out(out) -> Path:
    """The output folder (may not exist yet); a ValueError naming ``--out`` if it is an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder")
    return out


def write_report(result, out) -> dict:
    """Write ``synthesis.npz``, ``synthesis.json`` and ``synthesis.png`` into ``out``; returns the JSON dict.

    Everything is computed first and written last, each file through a temporary name, so a failure leaves no
    partial file behind."""
    from daenr_fast.train.evaluate import json_safe

    out = check_out(out)
    report, data = json_safe(table(result)), arrays(result)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: out / f".{name}.tmp" for name in (NPZ_NAME, JSON_NAME, PNG_NAME)}
    try:
        with open(tmp[NPZ_NAME], "wb") as handle:
            np.savez_compressed(handle, **data)
        tmp[JSON_NAME].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        grid_figure(tmp[PNG_NAME], result)
    except BaseException:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        if created:
            out.rmdir()
        raise
    for name, path in tmp.items():
        path.replace(out / name)
    return report
