"""Sweep jobs trained as grids (:func:`daenr_fast.train.grid.train_grid`): grouping and execution.

:func:`group_jobs` merges the pending runs of a sweep that can share a grid (equal
:func:`~daenr_fast.train.grid.grid_key` of their configurations: the same model, layer, protocol and device) into
grid jobs of at most ``size`` runs; :func:`run_job` executes a grid job (a list of ``results.csv`` rows, one per
run) or a single run (:func:`daenr_fast.experiments.worker.execute`). Inside a grid job, the runs whose data do
not stack with the others (another number of neurons or of images) train in their own smaller grids, or alone.
A grid that cannot be set up (e.g. a damaged checkpoint of one run) falls back to training its runs alone, which
resume or start over exactly as a lone run does. Every run keeps its own folder, so reuse and resumption work as
for lone runs.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from daenr_fast.experiments.worker import (INTERNAL, RECON_NAME, _config, _dataset, _row, _save_reconstructions,
                                           execute)

#: the key of a grid job holding its member jobs
GRID_KEY = "grid"
#: default number of runs per grid by device type: large grids are meant to fill a GPU; on CPU a grid loops over
#: its runs (:func:`daenr_fast.train.grid.resolve_strategy`) and gains nothing from size, so it groups small sets
DEFAULT_GRID_SIZE = {"cpu": 8, "cuda": 32}


def default_grid_size(device: str) -> int:
    """:data:`DEFAULT_GRID_SIZE` of ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``)."""
    import torch

    kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device).type
    return DEFAULT_GRID_SIZE.get(kind, DEFAULT_GRID_SIZE["cpu"])


def group_jobs(jobs: Sequence[dict], size: Optional[int] = None) -> List[dict]:
    """``jobs`` with the runs that can share a grid merged into grid jobs of at most ``size`` runs (None: the
    :func:`default_grid_size` of the jobs' device), in order of first appearance; runs that cannot stack
    (:func:`~daenr_fast.train.grid.unstackable`) or have no partner stay single jobs."""
    from daenr_fast.train.grid import grid_key

    if size is None:
        size = default_grid_size(jobs[0]["device"]) if jobs else 1
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the grid size must be an integer >= 1, got {size!r}")
    groups: Dict[str, List[dict]] = {}
    order: List[object] = []
    for job in jobs:
        key = grid_key(_config(job))
        if key is None:
            order.append(job)
            continue
        key = f"{key}|threads={job['threads']}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(job)
    out: List[dict] = []
    for item in order:
        if isinstance(item, dict):
            out.append(item)
            continue
        members = groups[item]
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            out.append(chunk[0] if len(chunk) == 1 else grid_job(chunk))
    return out


def grid_job(members: Sequence[dict]) -> dict:
    """One job training ``members`` as a grid; its own fields are the first member's (for logs), plus the list."""
    first = dict(members[0])
    first["run_id"] = f"grid-{len(members)}-{members[0]['run_id']}"
    return dict(first, **{GRID_KEY: [dict(m) for m in members]})


def member_jobs(job: dict) -> List[dict]:
    """The run jobs of a grid job, or ``[job]`` for a single run."""
    return list(job[GRID_KEY]) if GRID_KEY in job else [job]


def run_job(job: dict):
    """Execute a sweep job: a grid job gives a list of rows (one per run, in order), a single run its row."""
    if GRID_KEY not in job:
        return execute(job)
    import torch

    from daenr_fast import data

    torch.set_num_threads(int(job["threads"]))
    members = member_jobs(job)
    rows: Dict[str, dict] = {}
    ready: Dict[tuple, List[tuple]] = {}
    for member in members:
        start = time.perf_counter()
        try:
            dataset = _dataset(member)
            if dataset is None:
                rows[member["run_id"]] = execute(member)  # records the skip exactly as a lone run does
                continue
            config = _config(member)
            splits = data.prepare(dataset, val_fraction=config.val_fraction, seed=config.seed)
            shape = (dataset.n_neurons, tuple(splits.tensors("train")[0].shape),
                     tuple(splits.tensors("val")[0].shape))
            ready.setdefault(shape, []).append((member, config, splits, dataset.n_neurons))
        except Exception as err:  # a failed run is a result too; the others go on
            rows[member["run_id"]] = _failed(member, err, time.perf_counter() - start)
    for group in ready.values():
        if len(group) == 1:
            rows[group[0][0]["run_id"]] = execute(group[0][0])
            continue
        rows.update(_train_group(group))
    return [rows[m["run_id"]] for m in members]


def _train_group(group: List[tuple]) -> Dict[str, dict]:
    from daenr_fast.train.grid import train_grid

    start = time.perf_counter()
    resume = [(Path(config.out) / "checkpoint.pt").exists() for _, config, _, _ in group]
    try:
        outcomes = train_grid([c for _, c, _, _ in group], [s for _, _, s, _ in group], resume=resume,
                              overwrite=[not r for r in resume])
    except (ValueError, RuntimeError, KeyError, EOFError):  # e.g. one run's checkpoint is unusable
        return {member["run_id"]: execute(member) for member, _, _, _ in group}
    seconds = time.perf_counter() - start
    rows = {}
    for (member, _, splits, n_neurons), outcome in zip(group, outcomes):
        if isinstance(outcome, Exception):
            rows[member["run_id"]] = _failed(member, outcome, seconds)
            continue
        _save_reconstructions(outcome, splits, Path(member["run_dir"]) / RECON_NAME)
        rows[member["run_id"]] = _row(member, outcome.metrics, n_neurons, seconds)
    return rows


def _failed(job: dict, err: BaseException, seconds: float) -> dict:
    base = {k: v for k, v in job.items() if k not in INTERNAL}
    last = traceback.format_exception_only(type(err), err)[-1].strip()
    return dict(base, status="failed", error=last[:300], wall_seconds=round(seconds, 2))
