"""Results of a benchmark run: console table, JSON, CSV, Markdown and a PNG plot.

Every file carries the run's metadata (:func:`run_metadata`): machine, CPU, threads, device, versions, git
commit, date, command line and the 1-minute load average before and after the run. Files are named by op
(``readout.json``, ``readout.csv``, ``readout.md``, ``readout.png``) so runs of different ops can share a folder.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from daenr_fast.bench.runner import ROW_KEYS


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def run_metadata(device: str, threads: int, command: list[str] | None = None) -> dict:
    """Machine, versions, date and command of this run (load averages are added by the caller)."""
    import daenr_fast

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else sys.argv),
        "host": platform.node(), "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "torch_threads": threads,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "device": device, "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "triton": _version("triton"), "numpy": _version("numpy"), "daenr_fast": daenr_fast.__version__,
        "git_commit": _git_commit(), "DAENR_FAST_BACKEND": os.environ.get("DAENR_FAST_BACKEND"),
    }


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
    """Rows grouped by case, one line per implementation."""
    lines, case = [], None
    head = (f"  {'implementation':<30} {'median ms':>11} {'IQR ms':>9} {'vs ref':>7} {'x limit':>8} "
            f"{'peak MB':>9} {'rel err':>8}  status")
    for r in rows:
        key = (r["op"], r["size"], r["mode"])
        if key != case:
            case = key
            lines += ["", f"{r['op']} {r['size']} ({r['shape']}) {r['mode']} {r['dtype']}", head]
        lines.append(f"  {r['impl']:<30} {_fmt(r['median_ms'], '11.3f'):>11} {_fmt(r['iqr_ms'], '9.3f'):>9} "
                     f"{_fmt(r['speedup_vs_ref'], '6.2f'):>6}x {_fmt(r['x_limit'], '7.2f'):>7}x "
                     f"{_fmt(r['peak_extra_mb'], '9.2f'):>9} {_fmt(r['max_rel_err'], '8.1e'):>8}  {r['status']}")
    return "\n".join(lines)


def format_markdown(rows: list[dict], meta: dict) -> str:
    """A Markdown table of the available rows, preceded by the machine and the command."""
    out = [f"Machine: {meta.get('cpu')} ({meta.get('cpu_count')} cores, {meta.get('torch_threads')} threads)"
           + (f", GPU {meta['gpu']}" if meta.get("gpu") else "")
           + f"; torch {meta.get('torch')}; {meta.get('date')}; load average {meta.get('loadavg_before')} -> "
           f"{meta.get('loadavg_after')}.", f"Command: `{meta.get('command')}`", "",
           "| size | shape | mode | implementation | median ms (IQR) | vs reference | x limit | peak extra MB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["median_ms"] is None:
            out.append(f"| {r['size']} | {r['shape']} | {r['mode']} | {r['impl']} | {r['status']} | | | |")
            continue
        out.append(f"| {r['size']} | {r['shape']} | {r['mode']} | {r['impl']} | {r['median_ms']:.3g} "
                   f"({r['iqr_ms']:.2g}) | {_fmt(r['speedup_vs_ref'], '.2f')}x | {_fmt(r['x_limit'], '.2f')}x | "
                   f"{_fmt(r['peak_extra_mb'], '.2f')} |")
    return "\n".join(out) + "\n"


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")


def write_csv(path: Path, meta: dict, rows: list[dict], keys: tuple = ROW_KEYS) -> None:
    """One line per row: ``keys`` plus date, host, cpu, device, gpu, threads, torch and git commit."""
    meta_keys = ("date", "host", "cpu", "device", "gpu", "torch_threads", "torch", "git_commit")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(tuple(keys) + meta_keys)
        for r in rows:
            writer.writerow([r.get(k) for k in keys] + [meta.get(k) for k in meta_keys])


def plot(path: Path, rows: list[dict], title: str) -> None:
    """Median time (log scale, IQR bars) of every implementation per size tier, one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["median_ms"] is not None]
    modes = list(dict.fromkeys(r["mode"] for r in timed)) or ["-"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = [r for r in timed if r["mode"] == mode]
        sizes = list(dict.fromkeys(r["size"] for r in sub))
        impls = list(dict.fromkeys(r["impl"] for r in sub))
        width = 0.8 / max(1, len(impls))
        for j, impl in enumerate(impls):
            xs, ys, lo, hi = [], [], [], []
            for i, size in enumerate(sizes):
                r = next((r for r in sub if r["size"] == size and r["impl"] == impl), None)
                if r is not None:
                    xs.append(i - 0.4 + (j + 0.5) * width)
                    ys.append(r["median_ms"])
                    lo.append(r["median_ms"] - r["q1_ms"])
                    hi.append(r["q3_ms"] - r["median_ms"])
            ax.bar(xs, ys, width, yerr=[lo, hi], label=impl, capsize=2)
        shapes = {r["size"]: r["shape"] for r in sub}
        ax.set_xticks(range(len(sizes)), [f"{s}\n{shapes[s]}" for s in sizes], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("median time per call (ms)")
        ax.set_title(f"{title} {mode}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(out_dir: Path, name: str, meta: dict, rows: list[dict]) -> list[Path]:
    """Write ``name``.json, .csv, .md and .png into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("json", "csv", "md", "png")]
    write_json(paths[0], meta, rows)
    write_csv(paths[1], meta, rows)
    paths[2].write_text(format_markdown(rows, meta))
    plot(paths[3], rows, f"{name} ({meta.get('device')})")
    return paths
