"""Run the cases of one op: check every implementation against the reference, time them, measure memory.

One result row (a dict) per implementation and case, with the keys of :data:`ROW_KEYS`. Ratios are taken within
the case, from times measured in the same round-robin run:

* ``speedup_vs_ref`` = reference time / this time (above 1 is faster than the eager reference);
* ``x_limit`` = this time / the limit's time (1 is as fast as one GEMM, or one copy, of the same cost).
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field

import torch

from daenr_fast.bench import memory
from daenr_fast.bench.cases import Case, as_tuple
from daenr_fast.bench.timing import time_round_robin

ROW_KEYS = ("op", "size", "shape", "mode", "dtype", "impl", "kind", "status", "median_ms", "q1_ms", "q3_ms",
            "iqr_ms", "repeats", "number", "speedup_vs_ref", "x_limit", "peak_extra_mb", "max_rel_err",
            "first_call_s", "loadavg_1m", "note")


@dataclass
class Settings:
    """How to measure: device, dtype, repeats and their limits, and what to include."""

    device: str = "cpu"
    dtype: str = "float32"
    repeats: int = 15
    warmup: int = 2
    min_sample_s: float = 0.005
    max_time_s: float = 20.0
    compile: bool = True
    memory: bool = True
    threads: int = field(default_factory=torch.get_num_threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(case: Case, impl, **values) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(op=case.op, size=case.size, shape=case.shape_str, mode=case.mode, dtype=case.dtype, impl=impl.name,
               kind=impl.kind, note=impl.note)
    row.update(values)
    return row


def _first_calls(module, impls, inputs, tol, device, log) -> tuple[dict, dict]:
    """Run every available implementation once; return its errors vs the reference and first-call times."""
    errors, first = {}, {}
    ref = next(i for i in impls if i.kind == "reference")
    ref_out = as_tuple(ref.fn())
    for impl in impls:
        if not impl.available:
            continue
        try:
            t0 = time.perf_counter()
            out = impl.fn()
            _sync(device)
            first[impl.name] = time.perf_counter() - t0
            if impl.comparable:
                errors[impl.name] = module.compare(ref_out, out, inputs)
        except Exception as err:  # an implementation that fails is reported, never fatal to the run
            impl.available, impl.fn = False, None
            impl.reason = f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log(f"  {impl.name}: {impl.reason}")
            if os.environ.get("DAENR_BENCH_DEBUG"):
                traceback.print_exc()
            continue
        if impl.name in errors and not errors[impl.name] <= tol:
            impl.reason = f"WRONG: max relative error {errors[impl.name]:.2e} > {tol:.0e}"
            log(f"  {impl.name}: {impl.reason}")
    return errors, first


def run_case(module, size: str, mode: str, settings: Settings, log=print) -> list[dict]:
    """All rows of one case of ``module`` (an op module of :mod:`daenr_fast.bench`)."""
    device, dtype = torch.device(settings.device), getattr(torch, settings.dtype)
    shape = module.SIZES[size]
    case = Case(module.OP, size, shape, module.SHAPE_NAMES, mode, settings.dtype)
    log(f"{case.op} {case.size} ({case.shape_str}) {mode}")
    inputs = module.make_inputs(shape, device, dtype)
    impls = module.implementations(inputs, mode, device, compile=settings.compile)
    tol = module.TOLERANCE[settings.dtype]
    errors, first = _first_calls(module, impls, inputs, tol, device, log)
    runnable = {i.name: i.fn for i in impls if i.available}
    stats = time_round_robin(runnable, device, repeats=settings.repeats, warmup=settings.warmup,
                             min_sample_s=settings.min_sample_s, max_time_s=settings.max_time_s)
    peaks = memory.peak_extra_bytes(module, size, mode, settings, impls) if settings.memory else {}
    load = os.getloadavg()[0]
    ref_t = next((stats[i.name].median_s for i in impls if i.kind == "reference" and i.name in stats), None)
    lim_t = next((stats[i.name].median_s for i in impls if i.kind == "limit" and i.name in stats), None)
    rows = []
    for impl in impls:
        if impl.name not in stats:
            rows.append(_row(case, impl, status=impl.reason or "not run"))
            continue
        s = stats[impl.name]
        peak = peaks.get(impl.name)
        rows.append(_row(
            case, impl, status=impl.reason or "ok", median_ms=s.median_s * 1e3, q1_ms=s.q1_s * 1e3,
            q3_ms=s.q3_s * 1e3, iqr_ms=s.iqr_s * 1e3, repeats=s.repeats, number=s.number,
            speedup_vs_ref=(ref_t / s.median_s) if ref_t else None,
            x_limit=(s.median_s / lim_t) if lim_t else None,
            peak_extra_mb=None if peak is None else peak / 2 ** 20, max_rel_err=errors.get(impl.name),
            first_call_s=first.get(impl.name), loadavg_1m=load))
    return rows


def run_op(module, sizes: list[str], modes: list[str] | None, settings: Settings, log=print) -> list[dict]:
    """Rows of every requested size tier and mode the op defines (others are skipped with a message)."""
    rows = []
    for size in sizes:
        if size not in module.SIZES:
            log(f"{module.OP}: no size tier {size!r} (tiers: {', '.join(module.SIZES)}); skipped")
            continue
        for mode in module.MODES:
            if modes is None or mode in modes:
                rows.extend(run_case(module, size, mode, settings, log))
    return rows
