"""The demo: CAE vs CAE-FR2 on simulated region 3 with the quick protocol, one seed.

Both models train in parallel processes (one per CPU core by default) through the same resumable sweep as
``daenr reproduce``; the comparison table and a reconstruction figure (originals, CAE, CAE-FR2) are written to
the output folder.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List

from daenr_fast.experiments import figures as F
from daenr_fast.experiments.protocol import QUICK, Protocol
from daenr_fast.experiments.sweep import SweepSummary, read_results, run_id, run_sweep
from daenr_fast.experiments.tables import Arm, baseline_arm, preset_arm
from daenr_fast.experiments.worker import RECON_NAME

COLUMNS = (("MSE", "mse", ".4f"), ("PSNR (dB)", "psnr", ".2f"), ("SSIM", "ssim", ".3f"), ("PCC", "pcc", ".3f"),
           ("significant", "n_significant", ""), ("noise-ceiling fraction", "noise_ceiling_fraction", ".3f"))


def demo_arms() -> List[Arm]:
    """CAE (image loss only) and CAE-FR2 with the paper's Table 8 weights for region 3 (1 : 1e-3)."""
    return [baseline_arm("cae", 3), preset_arm("table8", 3, "cae-fr", 2)]


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if value in (None, ""):
        return "-"
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


def run_demo(out, data: str = "sim", protocol: Protocol = QUICK, seed: int = 0, jobs: int = 2,
             log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) both demo runs, write ``demo.png`` and return ``{"rows", "table", "figure", "summary"}``."""
    out = Path(out)
    start = time.perf_counter()
    arms = demo_arms()
    summary: SweepSummary = run_sweep(arms, [seed], protocol, data, out, jobs=jobs, log=log)
    results = read_results(out)
    ids = [run_id(a, seed, protocol, data) for a in arms]
    rows = [results[i] for i in ids if results.get(i, {}).get("status") == "ok"]
    figure = out / "demo.png"
    drawn = F.figure2(figure, [(a.label, out / "runs" / i / RECON_NAME) for a, i in zip(arms, ids)])
    summary.wall_seconds = time.perf_counter() - start
    return {"rows": rows, "table": comparison_table(rows), "figure": figure if drawn else None, "summary": summary}
