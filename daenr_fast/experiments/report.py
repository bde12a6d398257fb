"""``report.md`` of a reproduction: tables (ours next to the paper's), claim verdicts, figures, settings,
software versions and wall time. Everything is computed from ``results.csv`` and the run folders; the only
numbers not measured here are the paper's published values (:mod:`daenr_fast.experiments.paper_values`).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from daenr_fast.experiments import figures as F
from daenr_fast.experiments.claims import FORMAT, claim_lines, claim_results, identical_arms, summary_line
from daenr_fast.experiments.paper_values import paper_value
from daenr_fast.experiments.protocol import QUICK, SILENT_CHOICES, Protocol
from daenr_fast.experiments.stats import by_seed, mean_ci
from daenr_fast.experiments.sweep import SWEEP_LOG, SweepSummary, read_results, rows_for, run_id
from daenr_fast.experiments.tables import (LAYERS, METRIC_LABEL, Arm, Cell, Layout, arms_for, baseline_arm,
                                           layouts_for, preset_arm)
from daenr_fast.experiments.worker import GRAD_SHARE, RECON_NAME
from daenr_fast.models.registry import AUTOENCODERS

PACKAGES = ("torch", "numpy", "scipy", "scikit-image", "matplotlib", "daenr_fast")


def cell_text(cell: Cell, rows_of: Callable[[Arm], List[dict]]) -> str:
    """``ours ± half-width (paper)``; ``-`` for no run; the interval is left out with one seed."""
    spec = FORMAT[cell.metric]
    table, label, subset = cell.paper
    paper = paper_value(table, cell.arm.region, label, cell.metric, subset)
    paper_text = f" ({format(paper, spec)})" if paper is not None else ""
    ci = mean_ci(list(by_seed(rows_of(cell.arm), cell.metric).values()))
    if ci.n == 0:
        return "-" + paper_text
    ours = format(ci.mean, spec) + (f" ± {format(ci.half_width, spec)}" if ci.n >= 2 else "")
    return ours + paper_text


def table_markdown(layout: Layout, rows_of: Callable[[Arm], List[dict]]) -> List[str]:
    """The layout as a markdown table (rows with a metric column carry the metric name)."""
    lines = ["| " + " | ".join(layout.header) + " |", "|" + "---|" * len(layout.header)]
    for label, cells in layout.rows:
        texts = [cell_text(c, rows_of) if c is not None else "" for c in cells]
        if "metric" in layout.header:
            metric = next(c.metric for c in cells if c is not None)
            texts[0] = METRIC_LABEL[metric]
        lines.append("| " + " | ".join([label] + texts) + " |")
    return lines


def gradient_share_text(arm: Arm, rows: Sequence[dict]) -> str:
    """The response term's share of the shared encoder's gradient for one arm: the mean over its seeds of each
    run's mean over evaluation steps, with the range over seeds; ``n/a`` for an autoencoder baseline."""
    if arm.model in AUTOENCODERS:
        return "n/a (no response term)"
    values = [float(r[GRAD_SHARE]) for r in rows if r.get(GRAD_SHARE) not in (None, "")]
    if not values:
        return "-"
    text = f"{sum(values) / len(values):.3g}"
    return text + (f" ({min(values):.3g}..{max(values):.3g})" if len(values) > 1 else "")


def gradient_share_lines(layouts: Sequence[Layout], rows_of: Callable[[Arm], List[dict]]) -> List[str]:
    """The report's gradient-share table: one line per model configuration of ``layouts``."""
    lines = ["Share of the response (Poisson) term in the gradient norm of the encoder blocks both terms reach, "
             "`||d(beta R)/d theta_enc|| / (||d(alpha E)/d theta_enc|| + ||d(beta R)/d theta_enc||)` (plus the KL / "
             "VQ terms in the sum for VAE / VQ-VAE), measured on a training batch at every evaluation step and "
             "averaged over the run, then over seeds (range over seeds in parentheses). Near 0: the neural term "
             "did not move the shared encoder, so the model is its autoencoder baseline in all but the "
             "initialisation; near 1: the neural term drove it.", "",
             "| model | region | neurons | alpha : beta | response share |", "|---|---|---|---|---|"]
    seen = set()
    for layout in layouts:
        for arm in layout.arms():
            if arm in seen:
                continue
            seen.add(arm)
            weights = f"{arm.alpha:g} : {arm.beta:g}" + (f" ({arm.preset.split(':')[0]})" if arm.preset else "")
            lines.append(f"| {arm.label} | {arm.region} | {arm.subset} | {weights} | "
                         f"{gradient_share_text(arm, rows_of(arm))} |")
    return lines


def _counts(rows: Sequence[dict]):
    import numpy as np

    sig = np.array([float(r["n_significant"]) for r in rows if r.get("n_significant") not in (None, "")])
    total = np.array([float(r["n_neurons"]) for r in rows if r.get("n_significant") not in (None, "")])
    return sig, total - sig


def make_figures(out: Path, dest: Path, rows_of: Callable[[Arm], List[dict]], regions: Sequence[int],
                 protocol: Protocol, data: str) -> List[str]:
    """Draw Figures 2-4 into ``dest`` from whatever runs of the sweep folder ``out`` exist; returns the markdown
    lines that embed them."""
    lines = []
    if 3 in regions:
        arms = [baseline_arm("cae", 3)] + [preset_arm("table8", 3, "cae-fr", i) for i in LAYERS]
        panels = []
        for arm in arms:
            done = sorted(int(r["seed"]) for r in rows_of(arm))
            recon = out / "runs" / run_id(arm, done[0], protocol, data) / RECON_NAME if done else None
            panels.append((arm.label, recon))
        if F.figure2(dest / "figure2.png", panels):
            lines.append("![Figure 2](figure2.png)")
    fig3 = {f"region {r}: CAE-FRi (Table 8 weights)": (
        [f"CAE-FR{i}" for i in LAYERS], [_counts(rows_of(preset_arm("table8", r, "cae-fr", i))) for i in LAYERS])
        for r in regions}
    if F.count_figure(dest / "figure3.png", fig3, "Figure 3: significant / insignificant neurons, IR runs"):
        lines.append("![Figure 3](figure3.png)")
    fig4 = {}
    for r in regions:
        for kind, make in (("CNN-FRi (readout only)", lambda i: baseline_arm("cnn-fr", r, i)),
                           ("CAE-FRi (joint, Table 9 weights)", lambda i: preset_arm("table9", r, "cae-fr", i))):
            arms = [make(i) for i in LAYERS]
            fig4[f"region {r}: {kind}"] = ([a.label for a in arms], [_counts(rows_of(a)) for a in arms])
    if F.count_figure(dest / "figure4.png", fig4, "Figure 4: significant / insignificant neurons, baseline vs joint"):
        lines.append("![Figure 4](figure4.png)")
    return lines


def finished_runs(target: str, regions: Sequence[int], seeds: Sequence[int], rows: dict, protocol: Protocol,
                  data: str) -> tuple:
    """(ended, expected): the runs of ``target``'s arms and seeds that ended (``ok``, or ``skipped``: no neurons
    in their subset), and how many it has."""
    ids = [run_id(arm, seed, protocol, data) for arm in arms_for(target, regions) for seed in seeds]
    return sum(rows.get(i, {}).get("status") in ("ok", "skipped") for i in ids), len(ids)


def _versions() -> List[str]:
    lines = [f"- python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPU cores"]
    for name in PACKAGES:
        try:
            lines.append(f"- {name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"- {name}: not installed")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip()
        if commit:
            lines.append(f"- daenr_fast git commit {commit}")
    except (OSError, subprocess.SubprocessError):
        pass
    return lines


def _settings(protocol: Protocol, data: str, seeds: Sequence[int], jobs: Optional[int],
              threads: Optional[int]) -> List[str]:
    how = "" if jobs is None else f"; {jobs} parallel job(s), {threads} torch thread(s) each"
    lines = [f"- protocol **{protocol.name}**: " + ", ".join(f"{k} {v}" for k, v in protocol.train_fields().items()),
             f"- data: `{data}`; seeds {', '.join(map(str, seeds))}{how}",
             "- alpha:beta from the paper's Tables 8-13 (Table 2: Table 8; Table 3: Table 8; "
             "Table 4: Table 9; Table 5: Table 10; Table 6: Tables 11-13)", "", "Where the paper is silent:", "",
             "| setting | our choice | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in SILENT_CHOICES]
    return lines


def write_report(out, target: str, regions: Sequence[int], seeds: Sequence[int], protocol: Protocol, data: str,
                 summary: Optional[SweepSummary], jobs: Optional[int] = 1, threads: Optional[int] = 1,
                 dest=None) -> Path:
    """Write ``report.md`` and the figure PNGs into ``dest`` (default ``out/TARGET``) from the sweep folder
    ``out`` (``results.csv``, ``runs/``); returns the report path. ``summary``: what the invocation trained, or
    None for a report of the finished runs alone (``daenr reproduce --report-only``; ``jobs``/``threads`` None:
    not stated)."""
    out = Path(out)
    dest = Path(dest) if dest is not None else out / target
    dest.mkdir(parents=True, exist_ok=True)
    rows = read_results(out)
    rows_of = lambda arm: rows_for(rows, arm, seeds, protocol, data)  # noqa: E731
    lines = [f"# DAE-NR reproduction: `{target}`", ""]
    done, expected = finished_runs(target, regions, seeds, rows, protocol, data)
    if done < expected:
        lines += [f"> **Incomplete**: {done} of the {expected} runs of this target have ended; a cell without "
                  "runs shows `-`, a cell with fewer seeds has a wider (or, with one seed, no) interval. Running "
                  "`daenr reproduce` again (without `--report-only`) trains the rest and reuses these.", ""]
    if protocol.name.startswith(QUICK.name):
        lines += [f"> **Quick mode**: at most {protocol.max_steps} steps per run, patience {protocol.patience}, "
                  f"batch {protocol.batch_size}. This is NOT the paper's protocol (patience 1000, two rounds, "
                  "no step cap); the models are far from converged and the numbers below say little about the "
                  "paper's claims.", ""]
    if data.startswith("sim"):
        lines += ["> Data: the built-in **simulated** V1 regions (Table 7 sizes), not the Antolik et al. 2016 "
                  "recordings the paper used. Absolute values are not comparable to the paper's; the claims "
                  "(which model is better) are what is tested.", ""]
    lines += [f"Each cell: our mean over {len(seeds)} seed(s) ± half-width of the 95% t-interval, then the paper's "
              "published value in parentheses. Claims are paired differences (same seed) with 95% t-intervals: "
              "**supported** = interval entirely on the paper's side of 0, **contradicted** = entirely on the "
              "other side, **not resolved** = contains 0.", ""]
    for layout in layouts_for(target, regions):
        lines += [f"## {layout.title}", ""] + table_markdown(layout, rows_of) + [""]
        if layout.note:
            lines += [layout.note, ""]
        results = claim_results(layout, rows_of)
        if results:
            lines += ["### Claims", "", f"Summary: {summary_line(results)}", ""] + claim_lines(results) + [""]
        same = identical_arms(layout, rows_of) if "ssim" in {c.metric for _, r in layout.rows for c in r if c} else []
        if same:
            lines += ["### Identical runs", "", "These configurations differ only where the neural term enters, yet "
                      "their image metrics agree to about four significant digits: at these alpha:beta weights and this "
                      "training length the Poisson term did not change the reconstruction, so their differences "
                      "to the baseline come from the initialisation, not from the neural responses (the gradient share "
                      "below says how much of the shared encoder's gradient the neural term sent).", ""] + same
            lines += [""]
    layouts = layouts_for(target, regions)
    lines += ["## Gradient share (did beta do anything?)", ""] + gradient_share_lines(layouts, rows_of) + [""]
    figure_lines = make_figures(out, dest, rows_of, regions, protocol, data)
    if figure_lines:
        lines += ["## Figures", ""] + [x for f in figure_lines for x in (f, "")]
    failed = [r for r in rows.values() if r.get("status") == "failed"]
    total = sum(float(r.get("wall_seconds") or 0) for r in rows.values())
    invocation = (f"{summary.wall_seconds:.0f} s ({summary.trained} runs trained, {summary.reused} reused, "
                  f"{summary.failed} failed)" if summary is not None
                  else f"report only, from the {done} ended runs of this target (none trained)")
    lines += ["## Settings", ""] + _settings(protocol, data, seeds, jobs, threads)
    lines += ["", "## Wall time", "", f"- this invocation: {invocation}",
              f"- all runs in results.csv: {len(rows)}, summed run time {total:.0f} s ({total / 60:.1f} min)"]
    lines += [f"- failed: {r['run_id']}: {r['error']}" for r in failed]
    if (out / SWEEP_LOG).exists():
        log = (out / SWEEP_LOG).read_text(encoding="utf-8").splitlines()
        lines += ["- every sweep in this folder (time, size, protocol, outcome, wall time):", ""]
        lines += [f"    {line}" for line in log]
    lines += ["", "## Software", ""] + _versions() + [""]
    path = dest / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
