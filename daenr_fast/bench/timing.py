"""Timing and peak-memory measurement.

Time
    Every sample runs the callable ``number`` times back to back and divides the elapsed time by ``number``
    (``number`` is calibrated once so that a sample lasts at least ``min_sample_s``). On CPU the clock is
    :func:`time.perf_counter`; on CUDA a pair of CUDA events around the loop on the current stream, read after
    :func:`torch.cuda.synchronize`, so the time is that of the GPU work. Warm-up calls (compilation, extension
    build, caches, allocator) are never sampled. Statistics are the median and the inter-quartile range.

    :func:`time_round_robin` samples several implementations of one case in turns (A, B, C, A, B, C, ...), so a
    change of machine load during a run affects all of them alike and their ratios stay meaningful.

Peak extra memory
    CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around one call, after
    ``reset_peak_memory_stats``: the most bytes held by PyTorch's CUDA allocator at once beyond what was
    allocated before the call (outputs included).

    CPU: the rise of the process's resident-set high-water mark (``VmHWM`` of ``/proc/self/status``, reset by
    writing ``5`` to ``/proc/self/clear_refs``) over its resident size before one call. This sees every
    allocation of every thread (PyTorch, BLAS, OpenMP workers) that touches memory. To make freed memory leave
    the resident set at once, it runs in a separate process (:mod:`daenr_fast.bench.memory`) started with
    ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then serves every block of 64 KiB or more with its own ``mmap`` and
    returns it on ``free``. Blocks under 64 KiB and memory a library keeps from its warm-up call are not counted;
    resolution is some 100 KiB (the process may free or touch other memory meanwhile). None where ``/proc`` is
    missing.
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


@dataclass
class Stats:
    """Per-call times in seconds over ``repeats`` samples of ``number`` calls each."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    repeats: int
    number: int

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict:
        return {**asdict(self), "iqr_s": self.iqr_s}


def summarize(samples: list[float], number: int = 1) -> Stats:
    """Median, quartiles (inclusive method), min and max of per-call ``samples``."""
    if not samples:
        raise ValueError("samples must not be empty")
    s = sorted(samples)
    if len(s) == 1:
        q1 = q3 = s[0]
    else:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    return Stats(statistics.median(s), q1, q3, s[0], s[-1], len(s), number)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample(fn: Callable[[], object], device: torch.device, number: int = 1) -> float:
    """Seconds per call of ``fn`` over ``number`` back-to-back calls (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / number
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def calibrate(fn: Callable[[], object], device: torch.device, min_sample_s: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample_s`` (doubling from 1)."""
    number = 1
    while True:
        per_call = sample(fn, device, number)
        if per_call * number >= min_sample_s or number >= 1 << 20:
            return number
        number = min(1 << 20, max(2 * number, int(min_sample_s / max(per_call, 1e-9)) + 1))


def time_round_robin(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int = 20,
                     warmup: int = 2, min_sample_s: float = 0.005, max_time_s: float = 30.0,
                     min_repeats: int = 3) -> dict[str, Stats]:
    """Time several callables in turns and return their :class:`Stats` by name.

    Each callable gets ``warmup`` unsampled calls, then up to ``repeats`` samples taken in round-robin order. A
    callable stops being sampled once its samples took ``max_time_s`` and it has ``min_repeats`` of them.
    """
    fns = dict(fns)
    numbers, samples, spent = {}, {k: [] for k in fns}, {k: 0.0 for k in fns}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        numbers[name] = calibrate(fn, device, min_sample_s)
    for _ in range(repeats):
        active = [k for k in fns if spent[k] < max_time_s or len(samples[k]) < min_repeats]
        if not active:
            break
        for name in active:
            t = sample(fns[name], device, numbers[name])
            samples[name].append(t)
            spent[name] += t * numbers[name]
    return {k: summarize(v, numbers[k]) for k, v in samples.items()}


def time_fn(fn: Callable[[], object], device: torch.device | str = "cpu", **kwargs) -> Stats:
    """:func:`time_round_robin` of one callable."""
    return time_round_robin({"fn": fn}, torch.device(device), **kwargs)["fn"]


# ------------------------------------------------------------------------------------------------ memory

def cuda_peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Most bytes held by the CUDA caching allocator during one call of ``fn`` beyond those held before it."""
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


def _status_bytes(key: str) -> int:
    with open(STATUS) as f:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{key} not in {STATUS}")
    return int(match.group(1)) * 1024


def rss_supported() -> bool:
    """Whether the resident-set high-water mark can be read and reset here (Linux ``/proc``)."""
    try:
        _status_bytes("VmHWM")
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_extra_bytes(fn: Callable[[], object]) -> Optional[int]:
    """Rise of the resident-set high-water mark over the resident size during one call of ``fn``.

    Meant to run in a process started with ``MALLOC_MMAP_THRESHOLD_=65536`` (see the module docstring);
    None where ``/proc`` does not allow it.
    """
    try:
        base = _status_bytes("VmRSS")
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        out = fn()
        peak = _status_bytes("VmHWM") - base
    except OSError:
        return None
    del out
    return max(0, int(peak))
