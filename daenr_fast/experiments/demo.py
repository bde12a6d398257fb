"""The demo: CAE vs CAE-FR2 on simulated region 3, one seed, trained long enough to reconstruct recognisably.

Both models train in parallel processes (one per CPU core by default) through the same resumable sweep as
``daenr reproduce``, under the library's defaults (the paper's loss scaling: squared error averaged over pixels,
Poisson loss summed over neurons; CAE-FR2 with Table 8's alpha:beta = 1:1e-3 for region 3). The output folder
gets the comparison table and ``demo.png``: test originals, both reconstructions and their difference.

The :data:`DEMO` protocol spends its budget on training steps: batch 64 as in the paper protocol, a 2000-step
cap, validation every 250 steps (the gradient share is measured at those steps too).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional

from daenr_fast.experiments.protocol import Protocol
from daenr_fast.experiments.sweep import SweepSummary, read_results, run_id, run_sweep
from daenr_fast.experiments.tables import Arm, baseline_arm, preset_arm
from daenr_fast.experiments.worker import GRAD_SHARE, RECON_NAME

#: about 2.5 minutes per model on one core; NOT the paper's protocol (no step cap there)
DEMO = Protocol(name="demo", batch_size=64, eval_every=250, patience=1000, rounds=2, max_steps=2000)

COLUMNS = (("MSE", "mse", ".4f"), ("PSNR (dB)", "psnr", ".2f"), ("SSIM", "ssim", ".3f"), ("PCC", "pcc", ".3f"),
           ("significant", "n_significant", ""), ("noise-ceiling fraction", "noise_ceiling_fraction", ".3f"),
           ("response share of encoder gradient", GRAD_SHARE, ".3f"))


def demo_arms() -> List[Arm]:
    """CAE (image loss only) and CAE-FR2 with the paper's Table 8 weights for region 3 (1 : 1e-3)."""
    return [baseline_arm("cae", 3), preset_arm("table8", 3, "cae-fr", 2)]


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if value in (None, ""):
        return "n/a" if key == GRAD_SHARE and row.get("model") == "cae" else "-"
    if key == "n_significant":
        return f"{int(float(value))}/{row['n_neurons']}"
    return format(float(value), spec)


def comparison_table(rows: List[dict]) -> str:
    """The demo's plain-text table: one line per model."""
    header = ["model"] + [c[0] for c in COLUMNS]
    body = [[r["label"]] + [_cell(r, key, spec) for _, key, spec in COLUMNS] for r in rows]
    widths = [max(len(line[k]) for line in [header] + body) for k in range(len(header))]
    fmt = lambda line: "  ".join(v.rjust(w) if k else v.ljust(w) for k, (v, w) in enumerate(zip(line, widths)))  # noqa
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def difference_line(rows: List[dict]) -> Optional[str]:
    """CAE-FR2 minus CAE on the image metrics, with the share of the encoder gradient the Poisson term sent."""
    by_model = {r["model"]: r for r in rows}
    if set(by_model) != {"cae", "cae-fr"}:
        return None
    cae, fr = by_model["cae"], by_model["cae-fr"]
    diffs = ", ".join(f"{name} {float(fr[key]) - float(cae[key]):+{spec}}" for name, key, spec in COLUMNS[:3])
    share = fr.get(GRAD_SHARE)
    said = (f"the Poisson term sent {float(share):.0%} of the gradient the shared encoder blocks h1-h2 received "
            "(mean over the evaluation steps)") if share not in (None, "") else "no gradient share was measured"
    return f"CAE-FR2 - CAE: {diffs}; {said}."


def demo_figure(path: Path, rows: List[dict], recon_files: List[Path]) -> bool:
    """``demo.png``: test originals, each model's reconstruction (MSE / SSIM in the label) and the absolute
    difference of the two reconstructions; False when a reconstruction file is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if len(rows) != 2 or not all(Path(p).exists() for p in recon_files):
        return False
    data = [np.load(p) for p in recon_files]
    originals = data[0]["original"]
    labels = [f"{r['label']}\nMSE {float(r['mse']):.4f}\nSSIM {float(r['ssim']):.3f}" for r in rows]
    difference = np.abs(data[1]["reconstruction"] - data[0]["reconstruction"])
    panels = [("original", originals, "gray", (-1, 1))] + \
        [(label, d["reconstruction"], "gray", (-1, 1)) for label, d in zip(labels, data)] + \
        [(f"|{rows[1]['label']} - {rows[0]['label']}|\n(0..0.5)", difference, "magma", (0, 0.5))]
    n = originals.shape[0]
    fig, axes = plt.subplots(len(panels), n, figsize=(1.1 * n + 0.6, 1.15 * len(panels)), squeeze=False)
    for i, (label, images, cmap, (low, high)) in enumerate(panels):
        for j in range(n):
            axes[i, j].imshow(images[j, 0], cmap=cmap, vmin=low, vmax=high)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=7)
    share = rows[1].get(GRAD_SHARE)
    title = "daenr demo: simulated region 3 test images"
    if share not in (None, ""):
        title += f"; the Poisson term's share of the shared encoder gradient in CAE-FR2: {float(share):.2f}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_demo(out, data: str = "sim", protocol: Protocol = DEMO, seed: int = 0, jobs: int = 2,
             log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) both demo runs, write ``demo.png`` and return ``{"rows", "table", "difference", "figure",
    "summary"}``."""
    out = Path(out)
    start = time.perf_counter()
    arms = demo_arms()
    summary: SweepSummary = run_sweep(arms, [seed], protocol, data, out, jobs=jobs, log=log)
    results = read_results(out)
    ids = [run_id(a, seed, protocol, data) for a in arms]
    rows = [results[i] for i in ids if results.get(i, {}).get("status") == "ok"]
    figure = out / "demo.png"
    drawn = demo_figure(figure, rows, [out / "runs" / i / RECON_NAME for i in ids])
    summary.wall_seconds = time.perf_counter() - start
    return {"rows": rows, "table": comparison_table(rows), "difference": difference_line(rows),
            "figure": figure if drawn else None, "summary": summary}
