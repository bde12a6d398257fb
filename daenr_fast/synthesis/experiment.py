"""Does synthesis through the decoder drive the real neuron better than pixel-space synthesis?

    python -m daenr_fast.synthesis.experiment --out benchmarks/results/synthesis [--work DIR] [--seeds 0 1 2]

On simulated region 3 (a snapshot written once to ``WORK/region3.npz``, with its ground truth saved beside it, so
a later change of the simulator cannot mix two datasets), for each seed: train CAE-FR2 (Table 9 weights, alpha 0.4,
beta 1) and CNN-FR2 (Poisson loss only) with the quick protocol, then for every neuron synthesise a decoder image
(CAE-FR2), a pixel image on CAE-FR2 and a pixel image on CNN-FR2 (the usual MEI setting) with the same starting
images, and show them, with the best natural test image, to the simulator's true neuron. The runs and each run's
``synthesis.{npz,json,png}`` stay in WORK; ``--out`` receives ``report.md``, ``results.json``, ``summary.png`` and
``examples.png``. Fractions are per seed over all neurons, then mean and 95% t-interval over the seeds
(:func:`daenr_fast.experiments.stats.mean_ci`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from daenr_fast.synthesis import report as R

REGION = 3
#: (label, model, alpha, beta, preset)
ARMS = (("CAE-FR2", "cae-fr", 0.4, 1.0, "table9:region3:cae-fr2"), ("CNN-FR2", "cnn-fr", 0.0, 1.0, None))
STEPS, RESTARTS = 100, 2
#: the image sets compared: (key, run label, method)
SETS = (("decoder", "CAE-FR2", "decoder"), ("pixel_cae", "CAE-FR2", "pixel"), ("pixel_cnn", "CNN-FR2", "pixel"))
SET_LABELS = {"natural": "best natural test image", "natural_test": "natural test images",
              "decoder": "decoder (CAE-FR2)",
              "pixel_cae": "pixel (CAE-FR2)", "pixel_cnn": "pixel (CNN-FR2)"}
#: (a, b) pairs compared on the true rate
PAIRS = (("decoder", "pixel_cae"), ("decoder", "pixel_cnn"), ("decoder", "natural"), ("pixel_cae", "natural"),
         ("pixel_cnn", "natural"), ("decoder", "natural_true_best"), ("pixel_cnn", "natural_true_best"))


def snapshot(work: Path) -> str:
    """Write region 3 and its ground truth once; returns the data spec (the absolute .npz path)."""
    from daenr_fast.data import save_npz, simulate
    from daenr_fast.data.ground_truth import ground_truth_for

    path = (work / f"region{REGION}.npz").resolve()
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        ground_truth_for(f"sim:region{REGION}").save(work / "ground_truth.npz")
        save_npz(simulate(region=REGION, seed=0), path)
    return str(path)


def train_arm(work: Path, data: str, arm, seed: int, log, max_steps=None) -> Path:
    """Train (or reuse) one run; its folder holds the data's saved ground truth."""
    import shutil

    from daenr_fast.data.ground_truth import RUN_FILENAME
    from daenr_fast.experiments.protocol import QUICK
    from daenr_fast.train import TrainConfig, train

    label, model, alpha, beta, preset = arm
    out = work / "runs" / f"{label.lower()}-seed{seed}"
    if (out / "metrics.json").exists():
        log(f"{label} seed {seed}: reused {out}")
    else:
        start = time.perf_counter()
        protocol = QUICK.with_overrides(max_steps=max_steps)
        config = TrainConfig(model=model, layer=2, data=data, alpha=alpha, beta=beta, seed=seed, out=str(out),
                             progress=False, figures=False, preset=preset, **protocol.train_fields())
        result = train(config, overwrite=True)
        log(f"{label} seed {seed}: trained in {time.perf_counter() - start:.0f} s, test PCC "
            f"{result.metrics['neurons']['pcc']:.3f}")
    shutil.copyfile(work / "ground_truth.npz", out / RUN_FILENAME)
    return out


def synthesize_run(run_dir: Path, log, n_neurons=None, steps=STEPS, restarts=RESTARTS) -> dict:
    """All neurons of one run; writes ``run_dir/synthesis/`` and returns its table plus the arrays needed."""
    from daenr_fast.synthesis import open_run, synthesize, write_report

    start = time.perf_counter()
    run = open_run(run_dir)
    neurons = list(range(run.n_neurons if n_neurons is None else min(n_neurons, run.n_neurons)))
    result = synthesize(run, neurons, steps=steps, restarts=restarts, seed=0, progress=False)
    table = write_report(result, run_dir / "synthesis")
    log(f"{run.label} {run_dir.name}: {len(neurons)} neurons synthesised in {time.perf_counter() - start:.0f} s")
    return {"table": table, "result": result}


SYNTHESISED = ("decoder", "pixel_cae", "pixel_cnn")
#: a synthesised image "far beyond" the natural one drives the true neuron at least this many times as much
FAR_BEYOND = 10.0


def derived(raw: dict) -> dict:
    """The per-seed numbers computed from one seed's per-neuron rates (``per_neuron_true`` / ``_predicted``)."""
    true = {k: np.asarray(v, dtype=np.float64) for k, v in raw["per_neuron_true"].items()}
    pred = {k: np.asarray(v, dtype=np.float64) for k, v in raw["per_neuron_predicted"].items()}
    natural_pred = {"decoder": pred["natural_cae"], "pixel_cae": pred["natural_cae"], "pixel_cnn": pred["natural_cnn"]}
    return {"fractions": {f"{a}>{b}": float(np.mean(true[a] > true[b])) for a, b in PAIRS},
            "median_ratio_to_natural": {k: float(np.median(true[k] / true["natural"])) for k in SYNTHESISED},
            "far_beyond_natural": {k: float(np.mean(true[k] >= FAR_BEYOND * true["natural"])) for k in SYNTHESISED},
            "predicted_beats_natural": {k: float(np.mean(pred[k] > natural_pred[k])) for k in SYNTHESISED},
            "median_true": {k: float(np.median(v)) for k, v in true.items()},
            "mean_true": {k: float(np.mean(v)) for k, v in true.items()},
            "median_predicted": {k: float(np.median(v)) for k, v in pred.items()}}


def summarize(rows: dict) -> dict:
    """Mean and 95% t-interval over the seeds of every per-seed number (rows: seed -> raw + derived)."""
    from daenr_fast.experiments.stats import mean_ci

    seeds = sorted(rows)

    def over_seeds(getter) -> dict:
        ci = mean_ci([getter(rows[seed]) for seed in seeds])
        return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}

    first = rows[seeds[0]]
    summary = {group: {k: over_seeds(lambda r, g=group, k=k: r[g][k]) for k in first[group]}
               for group in ("fractions", "median_ratio_to_natural", "far_beyond_natural", "predicted_beats_natural",
                             "median_true", "mean_true", "median_predicted", "test_pcc")}
    summary["image_stats"] = {k: {stat: over_seeds(lambda r, k=k, stat=stat: r["image_stats"][k][stat])
                                  for stat in ("rms_contrast_mean", "spectrum_slope_mean", "spectrum_slope_of_set",
                                               "intensity_distance_to_natural")}
                              for k in first["image_stats"]}
    return summary


def aggregate(per_seed: dict) -> dict:
    """Per seed the true / predicted rates of every set and the image statistics; the numbers over seeds."""
    seeds = sorted(per_seed)
    rows = {}
    for seed in seeds:
        runs = per_seed[seed]
        cae, cnn = runs["CAE-FR2"]["result"], runs["CNN-FR2"]["result"]
        true = {"natural": cae.natural.true, "natural_true_best": cae.natural.true_best,
                "decoder": cae.methods["decoder"].true, "pixel_cae": cae.methods["pixel"].true,
                "pixel_cnn": cnn.methods["pixel"].true}
        predicted = {"natural_cae": cae.natural.predicted, "natural_cnn": cnn.natural.predicted,
                     "decoder": cae.methods["decoder"].predicted, "pixel_cae": cae.methods["pixel"].predicted,
                     "pixel_cnn": cnn.methods["pixel"].predicted}
        stats = {"natural": runs["CAE-FR2"]["table"]["summary"]["natural"],
                 "decoder": runs["CAE-FR2"]["table"]["summary"]["decoder"],
                 "pixel_cae": runs["CAE-FR2"]["table"]["summary"]["pixel"],
                 "pixel_cnn": runs["CNN-FR2"]["table"]["summary"]["pixel"]}
        raw = {"image_stats": stats,
               "per_neuron_true": {k: np.asarray(v).tolist() for k, v in true.items()},
               "per_neuron_predicted": {k: np.asarray(v).tolist() for k, v in predicted.items()},
               "test_pcc": {label: json.loads((Path(r["table"]["run"]) / "metrics.json").read_text())
                            ["neurons"]["pcc"] for label, r in runs.items()}}
        rows[seed] = {**raw, **derived(raw)}
    return {"seeds": seeds, "summary": summarize(rows), "per_seed": {str(seed): rows[seed] for seed in seeds}}


def _fmt(entry, spec=".2f", pct=False) -> str:
    scale = 100.0 if pct else 1.0
    mean, low, high = (entry[k] * scale if entry[k] is not None and np.isfinite(entry[k]) else float("nan")
                       for k in ("mean", "low", "high"))
    unit = "%" if pct else ""
    if not np.isfinite(low):
        return f"{mean:{spec}}{unit}"
    return f"{mean:{spec}}{unit} [{low:{spec}}, {high:{spec}}]"


def summary_figure(path: Path, agg: dict, natural_stats: dict) -> None:
    """(a) fraction of neurons where A's true rate beats B's, per seed; (b) true rates per neuron, decoder vs
    pixel (seed 0); (c) RMS contrast and spectrum slope of every image (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    keys = list(agg["summary"]["fractions"])
    for i, key in enumerate(keys):
        values = [agg["per_seed"][str(s)]["fractions"][key] for s in agg["seeds"]]
        ax.bar(i, agg["summary"]["fractions"][key]["mean"], color="0.8")
        ax.plot([i] * len(values), values, "k.", ms=6)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    a_b = [k.split(">") for k in keys]
    names = {"natural": "natural", "natural_true_best": "best-true natural", "decoder": "decoder",
             "pixel_cae": "pixel CAE", "pixel_cnn": "pixel CNN"}
    ax.set_xticks(range(len(keys)), [f"{names[a]}\n> {names[b]}" for a, b in a_b], fontsize=7, rotation=30)
    ax.set_ylabel("fraction of neurons (true rate)")
    ax.set_ylim(0, 1)
    ax.set_title("(a) which image drives the true neuron more")
    seed0 = agg["per_seed"][str(agg["seeds"][0])]["per_neuron_true"]
    ax = axes[1]
    ax.loglog(seed0["pixel_cae"], seed0["decoder"], ".", ms=5, label="vs pixel (CAE-FR2)")
    ax.loglog(seed0["pixel_cnn"], seed0["decoder"], ".", ms=5, label="vs pixel (CNN-FR2)")
    ax.loglog(seed0["natural"], seed0["decoder"], ".", ms=5, label="vs best natural")
    lims = [min(min(v) for v in seed0.values()), max(max(v) for v in seed0.values())]
    ax.plot(lims, lims, color="0.5", lw=0.8)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("true rate of the other image")
    ax.set_ylabel("true rate of the decoder image")
    ax.set_title(f"(b) per neuron, seed {agg['seeds'][0]}")
    ax.legend(fontsize=7)
    ax = axes[2]
    for key, st in natural_stats.items():
        ax.plot(st["rms_contrast"], st["spectrum_slope"], ".", ms=5, alpha=0.7, label=SET_LABELS.get(key, key))
    ax.set_xlabel("RMS contrast (std / mean)")
    ax.set_ylabel("spectrum slope (log power vs log frequency)")
    ax.set_title(f"(c) how natural the images look, seed {agg['seeds'][0]}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples_figure(path: Path, cae: dict, cnn: dict, neurons) -> None:
    """Rows: neurons; columns: best natural, decoder, pixel (CAE-FR2), pixel (CNN-FR2), true RF; from the two
    runs' ``synthesis.npz`` arrays (``cae``, ``cnn``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rf = cae["true_rf"]
    cols = [("best natural", cae, "natural"), ("decoder (CAE-FR2)", cae, "decoder"),
            ("pixel (CAE-FR2)", cae, "pixel"), ("pixel (CNN-FR2)", cnn, "pixel")]
    fig, axes = plt.subplots(len(neurons), len(cols) + 1, figsize=(2.0 * (len(cols) + 1), 2.0 * len(neurons) + 0.3),
                             squeeze=False)
    for i, n in enumerate(neurons):
        for j, (title, src, key) in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(src[f"{key}_images"][n], cmap="gray", vmin=-1, vmax=1)
            text = f"pred {src[f'{key}_predicted'][n]:.1f}, true {src[f'{key}_true'][n]:.1f}"
            ax.set_title(f"{title}\n{text}" if i == 0 else text, fontsize=7)
        lim = float(np.abs(rf[n]).max()) or 1.0
        axes[i, -1].imshow(rf[n], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[i, -1].set_title("true RF (even Gabor)" if i == 0 else "", fontsize=7)
        axes[i, 0].set_ylabel(f"neuron {int(cae['neurons'][n])}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _side(entry) -> str:
    """Where a fraction's interval lies relative to one half."""
    if entry["low"] is None or not np.isfinite(entry["low"]):
        return "one seed: no interval"
    if entry["low"] > 0.5:
        return "more often than not"
    if entry["high"] < 0.5:
        return "less often than not"
    return "about as often as not: the interval contains 50%"


def answer(agg: dict) -> list:
    """The answer in words, computed from the numbers (the same sentences whichever way they fall)."""
    s = agg["summary"]
    f, st = s["fractions"], s["image_stats"]
    pct = lambda e: _fmt(e, ".0f", pct=True)  # noqa: E731
    nat = st["natural"]
    return [
        "## Answer",
        "",
        f"* On the true neurons the decoder image beats the pixel image of the same model (CAE-FR2) for "
        f"{pct(f['decoder>pixel_cae'])} of the neurons ({_side(f['decoder>pixel_cae'])}), and the pixel image of "
        f"CNN-FR2 for {pct(f['decoder>pixel_cnn'])} ({_side(f['decoder>pixel_cnn'])}).",
        f"* Against the best natural test image (highest recorded response) the decoder image wins for "
        f"{pct(f['decoder>natural'])} of the neurons, the pixel images for {pct(f['pixel_cae>natural'])} "
        f"(CAE-FR2) and {pct(f['pixel_cnn>natural'])} (CNN-FR2), while the models predicted their synthesised image "
        f"to beat it for {pct(s['predicted_beats_natural']['decoder'])} (decoder), "
        f"{pct(s['predicted_beats_natural']['pixel_cae'])} (pixel, CAE-FR2) and "
        f"{pct(s['predicted_beats_natural']['pixel_cnn'])} (pixel, CNN-FR2) of the neurons.",
        f"* Far beyond the natural image (true rate >= {FAR_BEYOND:g}x its): "
        f"{pct(s['far_beyond_natural']['decoder'])} of the neurons with the decoder image, "
        f"{pct(s['far_beyond_natural']['pixel_cae'])} / {pct(s['far_beyond_natural']['pixel_cnn'])} with the pixel "
        "images (CAE-FR2 / CNN-FR2); median true rate relative to the natural image: "
        f"{_fmt(s['median_ratio_to_natural']['decoder'])} (decoder), "
        f"{_fmt(s['median_ratio_to_natural']['pixel_cae'])} / {_fmt(s['median_ratio_to_natural']['pixel_cnn'])} "
        "(pixel).",
        f"* How natural: RMS contrast {_fmt(st['decoder']['rms_contrast_mean'])} (decoder), "
        f"{_fmt(st['pixel_cae']['rms_contrast_mean'])} / {_fmt(st['pixel_cnn']['rms_contrast_mean'])} (pixel) vs "
        f"{_fmt(nat['rms_contrast_mean'])} (best natural images); spectrum slope "
        f"{_fmt(st['decoder']['spectrum_slope_mean'])} (decoder) vs {_fmt(st['pixel_cae']['spectrum_slope_mean'])} / "
        f"{_fmt(st['pixel_cnn']['spectrum_slope_mean'])} (pixel) vs {_fmt(nat['spectrum_slope_mean'])} (best natural; "
        f"all natural test images: {agg['natural_reference']['spectrum_slope_mean']:.2f} per image, RMS contrast "
        f"{agg['natural_reference']['rms_contrast_mean']:.2f}).",
        "",
    ] if "natural_reference" in agg else []


def write_markdown(path: Path, agg: dict, settings: dict, minutes: float) -> None:
    from daenr_fast.experiments.protocol import QUICK

    s = agg["summary"]
    f = s["fractions"]
    n_neurons = len(agg["per_seed"][str(agg["seeds"][0])]["per_neuron_true"]["decoder"])
    lines = [
        "# Synthesis: decoder images vs pixel images vs natural images, judged by the true neurons",
        "",
        f"Simulated region {REGION} (simulator version {settings.get('simulator_version', '?')}; {n_neurons} "
        f"neurons), seeds {', '.join(map(str, agg['seeds']))}; CAE-FR2 (Table 9 weights, alpha 0.4, beta 1) and "
        f"CNN-FR2 (Poisson loss only) trained with the **{settings['protocol']} protocol** (at most "
        f"{settings['max_steps']} steps, batch {QUICK.batch_size}, patience {QUICK.patience}): not the paper's "
        "protocol, so the autoencoder is far from converged. Every neuron: objective max, "
        f"{settings['restarts']} restarts x {settings['steps']} steps from the same natural training images for "
        "every method; the best "
        "natural test image is the one with the highest recorded trial-averaged response. "
        f"Values: mean over seeds [95% t-interval]. Wall time {minutes:.0f} min on a shared 2-core CPU.",
        "",
        "Command: `python -m daenr_fast.synthesis.experiment --out benchmarks/results/synthesis`",
        "",
        "Methods (`daenr synthesize`): *decoder*: Adam on the whitened CAE latent (principal components of the "
        "training images' latents explaining 99% of their variance, scaled to unit variance), kept inside the ball "
        "that holds 95% of the natural images' latents; *pixel*: normalised gradient steps on the image, gradient "
        "blurred with a Gaussian (sigma 1 px), image clipped to [-1, 1] and its contrast energy "
        "`||x - mean||` bounded by the 95th percentile of the natural images'. Both start from the same natural "
        "training images and keep the best iterate under the model. *true rate*: the simulator's noise-free rate "
        "of the image (the neurons are defined on the 32 x 32 model images; rates beyond the natural range "
        "extrapolate). A win is a strictly higher true rate.",
        "",
        *answer(agg),
        "## Which image drives the true neuron more (fraction of neurons, true rate)",
        "",
        "| comparison | fraction of neurons |",
        "|---|---|",
    ]
    names = {"natural": "best natural test image (by recorded response)",
             "natural_true_best": "best natural test image (by true rate)", **SET_LABELS}
    for key, entry in f.items():
        a, b = key.split(">")
        lines.append(f"| {names[a]} > {names[b]} | {_fmt(entry, '.0f', pct=True)} |")
    lines += ["", "## Rates (per stimulus, median over neurons)", "",
              "| image | median true rate | median predicted rate | median true rate / natural's | "
              f"true rate >= {FAR_BEYOND:g}x natural's | predicted to beat natural | mean true rate |",
              "|---|---|---|---|---|---|---|"]
    mt, mp, mean = s["median_true"], s["median_predicted"], s["mean_true"]
    lines.append(f"| {names['natural']} | {_fmt(mt['natural'])} | CAE {_fmt(mp['natural_cae'])}, CNN "
                 f"{_fmt(mp['natural_cnn'])} | 1 | - | - | {_fmt(mean['natural'])} |")
    for key in SYNTHESISED:
        lines.append(f"| {SET_LABELS[key]} | {_fmt(mt[key])} | {_fmt(mp[key])} | "
                     f"{_fmt(s['median_ratio_to_natural'][key])} | "
                     f"{_fmt(s['far_beyond_natural'][key], '.0f', pct=True)} | "
                     f"{_fmt(s['predicted_beats_natural'][key], '.0f', pct=True)} | {_fmt(mean[key], '.1f')} |")
    lines += ["", "The mean true rate of the pixel images is dominated by the few neurons whose pixel image drives "
              "them far beyond any natural image: there the simulator extrapolates its rate function (exponential "
              "in the drive beyond the natural range), so those rates are a property of the simulator, not a "
              "measurement; the medians and the win fractions do not depend on them."]
    lines += ["", "## How natural they look", "",
              "| image | RMS contrast | spectrum slope (per image) | spectrum slope (set) | intensity W1 to natural |",
              "|---|---|---|---|---|"]
    for key, st in s["image_stats"].items():
        lines.append(f"| {SET_LABELS[key]} | {_fmt(st['rms_contrast_mean'])} | {_fmt(st['spectrum_slope_mean'])} | "
                     f"{_fmt(st['spectrum_slope_of_set'])} | {_fmt(st['intensity_distance_to_natural'], '.3f')} |")
    lines += ["", f"Test PCC of the runs: CAE-FR2 {_fmt(s['test_pcc']['CAE-FR2'], '.3f')}, CNN-FR2 "
              f"{_fmt(s['test_pcc']['CNN-FR2'], '.3f')}.", "",
              "![summary](summary.png)", "", "![examples](examples.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_results(agg: dict, out: Path, work: Path) -> None:
    """Complete ``agg`` from WORK (the natural test images' statistics, the simulator version of the snapshot)
    and write ``results.json`` and ``report.md``."""
    from daenr_fast.data.ground_truth import GroundTruth
    from daenr_fast.train.evaluate import json_safe

    table = work / "runs" / f"{ARMS[0][0].lower()}-seed{agg['seeds'][0]}" / "synthesis" / R.JSON_NAME
    agg["natural_reference"] = json.loads(table.read_text())["natural_reference"]
    agg["settings"]["simulator_version"] = GroundTruth.load(work / "ground_truth.npz").version
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(json_safe(agg), indent=1) + "\n", encoding="utf-8")
    write_markdown(out / "report.md", agg, agg["settings"], agg["wall_minutes"])


def write_figures(agg: dict, out: Path, work: Path) -> None:
    """``summary.png`` and ``examples.png`` from ``agg`` and the first seed's ``synthesis.npz`` files in WORK."""
    from daenr_fast import data

    seed = agg["seeds"][0]
    files = {label: work / "runs" / f"{label.lower()}-seed{seed}" / "synthesis" / R.NPZ_NAME for label, *_ in ARMS}
    with np.load(files["CAE-FR2"]) as cae_npz, np.load(files["CNN-FR2"]) as cnn_npz:
        cae, cnn = dict(cae_npz), dict(cnn_npz)
    test_images = data.prepare(data.load(str(work / f"region{REGION}.npz"))).tensors("test")[0][:, 0].numpy()
    point_stats = {"natural_test": R.per_image_stats(test_images)}
    for key, label, method in SETS:
        point_stats[key] = R.per_image_stats((cae if label == "CAE-FR2" else cnn)[f"{method}_images"])
    summary_figure(out / "summary.png", agg, point_stats)
    examples_figure(out / "examples.png", cae, cnn, neurons=list(range(min(6, len(cae["neurons"])))))


def rebuild(out: Path, work: Path) -> None:
    """Rewrite ``results.json`` and ``report.md`` from an earlier run's per-neuron rates and WORK, without training
    or synthesising again."""
    agg = json.loads((out / "results.json").read_text())
    agg["seeds"] = [int(seed) for seed in agg["seeds"]]
    rows = {seed: agg["per_seed"][str(seed)] for seed in agg["seeds"]}
    for row in rows.values():
        row.update(derived(row))
    agg["summary"] = summarize(rows)
    write_results(agg, out, work)
    write_figures(agg, out, work)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daenr_fast.synthesis.experiment",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for report.md, results.json, summary.png, examples.png")
    parser.add_argument("--work", default="synthesis-experiment", help="runs and per-run outputs "
                        "(default ./synthesis-experiment)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--neurons", type=int, default=None, help="only the first N neurons (smoke tests)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"synthesis steps (default {STEPS})")
    parser.add_argument("--restarts", type=int, default=RESTARTS, help=f"restarts (default {RESTARTS})")
    parser.add_argument("--max-steps", type=int, default=None, help="training step cap (default: the quick "
                        "protocol's)")
    parser.add_argument("--rebuild", action="store_true", help="only rewrite the report and figures from "
                        "OUT/results.json and WORK (no training, no synthesis)")
    args = parser.parse_args(argv)
    from daenr_fast.experiments.protocol import QUICK

    work, out = Path(args.work), Path(args.out)
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.rebuild:
        rebuild(out, work)
        log(f"wrote {out}/report.md")
        return 0
    start = time.perf_counter()
    data = snapshot(work)
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = {arm[0]: synthesize_run(train_arm(work, data, arm, seed, log, args.max_steps), log,
                                                 args.neurons, args.steps, args.restarts) for arm in ARMS}
    agg = aggregate(per_seed)
    agg["wall_minutes"] = (time.perf_counter() - start) / 60
    agg["settings"] = {"steps": args.steps, "restarts": args.restarts, "objective": "max", "region": REGION,
                       "protocol": "quick" if args.max_steps is None else f"quick, max_steps {args.max_steps}",
                       "max_steps": args.max_steps or QUICK.max_steps,
                       **per_seed[args.seeds[0]]["CAE-FR2"]["table"]["settings"]}
    write_results(agg, out, work)
    write_figures(agg, out, work)
    log(f"wrote {out}/report.md ({agg['wall_minutes']:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
