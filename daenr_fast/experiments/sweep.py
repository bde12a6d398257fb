"""A resumable sweep of independent training runs: one row per run in ``results.csv``.

Every (arm, seed) is a run with an id built from everything that changes its numbers (arm, seed, protocol,
data), e.g. ``cae-fr2-r3-all-s0-1a2b3c4d``. A run trains in ``OUT/runs/<id>/`` (checkpoint, ``metrics.json``,
``recon.npz``) and its row is appended to ``OUT/results.csv`` as soon as it ends. Rerunning the same sweep
reuses every row with status ``ok`` and trains only what is missing (an interrupted run resumes from its
checkpoint). Runs are independent: an executor (:mod:`daenr_fast.experiments.executors`) trains them in this
process, in parallel local processes (``jobs > 1``) or as Ray tasks on a cluster, and this process writes each
row as its run ends, so a killed sweep loses only the runs it had not finished; a subset run (Table 3) waits for
its parent run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from daenr_fast.experiments.executors import LocalExecutor, default_threads  # noqa: F401 (re-exported)
from daenr_fast.experiments.grid_worker import group_jobs, member_jobs, run_job
from daenr_fast.experiments.protocol import Protocol
from daenr_fast.experiments.tables import Arm
from daenr_fast.experiments.worker import INTERNAL, execute

RESULTS_NAME = "results.csv"
#: one line per invocation of :func:`run_sweep`: time, runs trained / reused / failed, wall seconds
SWEEP_LOG = "sweeps.log"
COLUMNS = ("run_id", "label", "model", "layer", "region", "subset", "alpha", "beta", "preset", "seed", "protocol",
           "data", "status", "error", "n_neurons", "steps", "stop_reason", "train_seconds", "wall_seconds", "mse",
           "psnr", "ssim", "pcc", "pcc_median", "n_significant", "noise_ceiling_fraction", "corr_to_truth",
           "feve", "grad_share_response", "parent_run")


def run_id(arm: Arm, seed: int, protocol: Protocol, data: str) -> str:
    """A readable, unique id of one run (arm, seed, protocol fields and data spec)."""
    identity = {"arm": arm.identity(), "seed": seed, "protocol": protocol.train_fields(), "data": data}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{arm.label.lower()}-r{arm.region}-{arm.subset}-s{seed}-{digest}"


@dataclass
class SweepSummary:
    """What one invocation of :func:`run_sweep` did: runs trained / reused / failed and its wall time."""

    trained: int
    reused: int
    failed: int
    wall_seconds: float


def read_results(out: Path) -> Dict[str, dict]:
    """The rows of ``out/results.csv`` by run id (the last row wins), or ``{}``."""
    path = Path(out) / RESULTS_NAME
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["run_id"]: row for row in csv.DictReader(handle)}


def write_results(out: Path, rows: Dict[str, dict]) -> None:
    """Rewrite ``out/results.csv`` atomically with ``rows``."""
    path = Path(out) / RESULTS_NAME
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows.values())
    tmp.replace(path)


def make_job(arm: Arm, seed: int, protocol: Protocol, data: str, out: Path, threads: int,
             device: str = "cpu") -> dict:
    """The picklable description of one run that :func:`daenr_fast.experiments.worker.execute` trains."""
    rid = run_id(arm, seed, protocol, data)
    parent = run_id(arm.parent, seed, protocol, data) if arm.parent is not None else ""
    return {"run_id": rid, "label": arm.label, "model": arm.model, "layer": arm.layer, "region": arm.region,
            "subset": arm.subset, "alpha": arm.alpha, "beta": arm.beta, "preset": arm.preset or "", "seed": seed,
            "protocol": protocol.name, "protocol_fields": protocol.train_fields(), "data": data,
            "run_dir": str(Path(out) / "runs" / rid), "parent_run": parent,
            "parent_dir": str(Path(out) / "runs" / parent) if parent else "", "threads": threads,
            "device": device}


def run_sweep(arms: Sequence[Arm], seeds: Sequence[int], protocol: Protocol, data: str, out, jobs: int = 1,
              threads: Optional[int] = None, device: str = "cpu",
              log: Callable[[str], None] = print, executor=None, grid: Optional[int] = None) -> SweepSummary:
    """Train every (arm, seed) not already in ``out/results.csv``; write each row as its run ends.

    Args:
        arms: the arms (parents before their subset arms, as :func:`~daenr_fast.experiments.tables.arms_for`).
        seeds: seeds per arm.
        protocol: the training protocol.
        data: ``sim``, ``antolik:DIR`` or a data spec (see :func:`~daenr_fast.experiments.subsets.data_spec`).
        out: output folder.
        jobs: parallel processes (1 = train in this process) of the default executor.
        threads: torch threads per run (default: the executor's, :func:`default_threads` for local processes).
        device: ``cpu``, ``cuda`` or ``auto``; on a GPU the parallel runs share the device.
        log: receives one line per finished run.
        executor: where the runs train (:mod:`daenr_fast.experiments.executors`); default
            ``LocalExecutor(jobs)``. Each job's outcome is a row, a list of rows, or the exception that stopped it
            (recorded as failed rows).
        grid: train the pending runs that can share a grid (same model, layer, protocol and device) as grids of
            up to ``grid`` stacked models (:mod:`daenr_fast.experiments.grid_worker`); None: each run alone.

    Returns:
        a :class:`SweepSummary`.
    """
    out = Path(out).absolute()  # the run folders are written by worker processes, maybe on other machines
    out.mkdir(parents=True, exist_ok=True)
    executor = executor if executor is not None else LocalExecutor(jobs)
    threads = threads or executor.default_threads()
    device = executor.job_device(device)
    rows = read_results(out)
    start = time.perf_counter()
    phases = [[a for a in arms if a.parent is None], [a for a in arms if a.parent is not None]]
    todo = [[make_job(a, s, protocol, data, out, threads, device) for a in phase for s in seeds] for phase in phases]
    total = sum(len(p) for p in todo)
    reused = sum(1 for p in todo for j in p if rows.get(j["run_id"], {}).get("status") == "ok")
    counts = {"trained": 0, "failed": 0, "done": reused}

    def record(row: dict) -> None:
        rows[row["run_id"]] = row
        write_results(out, rows)
        counts["done"] += 1
        counts["trained" if row["status"] in ("ok", "skipped") else "failed"] += 1
        log(_progress_line(row, counts["done"], total))

    if reused:
        log(f"reusing {reused} of {total} finished runs from {out / RESULTS_NAME}")
    for phase in todo:
        pending = [j for j in phase if rows.get(j["run_id"], {}).get("status") != "ok"]
        if grid:
            pending = group_jobs(pending, grid)
        for job, outcome in executor.run(run_job if grid else execute, pending):
            for row in outcome_rows(job, outcome):
                record(row)
    summary = SweepSummary(counts["trained"], reused, counts["failed"], time.perf_counter() - start)
    with open(out / SWEEP_LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {len(arms)} configurations x {len(seeds)} seeds, "
                     f"{protocol.name}: {summary.trained} trained, {summary.reused} reused, {summary.failed} failed, "
                     f"{summary.wall_seconds:.0f} s wall\n")
    return summary


def outcome_rows(job: dict, outcome) -> List[dict]:
    """The ``results.csv`` rows of one executed job: its row, its list of rows, or for an exception (the job's
    process raised or died) a ``failed`` row carrying the error."""
    if isinstance(outcome, BaseException):
        last = traceback.format_exception_only(type(outcome), outcome)[-1].strip()
        return [dict({k: v for k, v in member.items() if k not in INTERNAL}, status="failed", error=last[:300])
                for member in member_jobs(job)]
    return list(outcome) if isinstance(outcome, (list, tuple)) else [outcome]


def _progress_line(row: dict, done: int, total: int) -> str:
    head = f"[{done}/{total}] {row['label']} region {row['region']} {row['subset']} seed {row['seed']}"
    if row["status"] != "ok":
        return f"{head}: {row['status']} ({row['error']})"
    parts = [f"{k} {float(row[k]):.4g}" for k in ("mse", "ssim", "pcc") if row.get(k) not in (None, "")]
    return f"{head}: {float(row['wall_seconds']):.0f} s, {row['steps']} steps, " + ", ".join(parts)


def rows_for(rows: Dict[str, dict], arm: Arm, seeds: Sequence[int], protocol: Protocol, data: str) -> List[dict]:
    """The ``ok`` rows of ``arm`` (one per seed that finished)."""
    found = [rows.get(run_id(arm, s, protocol, data)) for s in seeds]
    return [r for r in found if r is not None and r.get("status") == "ok"]
