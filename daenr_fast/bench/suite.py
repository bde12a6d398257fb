"""Helpers for the pytest-benchmark suites in ``benchmarks/`` (``test_bench_readout.py`` and the others).

Each suite case builds one op's implementations at a size tier, checks that the implementation gives the
reference's numbers (within the op's tolerance) and times it with the ``benchmark`` fixture. Environment:

* ``DAENR_BENCH_SIZES`` - comma-separated size tiers (default ``tiny``: the quick CI mode);
* ``DAENR_BENCH_ROUNDS`` - timed rounds per case (default 3);
* ``DAENR_BENCH_COMPILE=1`` - include the ``torch.compile`` rows (skipped by default: compiling is slow).

No speed is asserted; the numbers pytest-benchmark prints are for reading.
"""
from __future__ import annotations

import os

import pytest
import torch

from daenr_fast.bench.cases import as_tuple

DEVICE = torch.device("cpu")


def sizes() -> list[str]:
    return [s.strip() for s in os.environ.get("DAENR_BENCH_SIZES", "tiny").split(",") if s.strip()]


def params(module) -> list:
    """pytest parameters (size, mode, implementation name) of every case of ``module``."""
    tiny = module.make_inputs(module.SIZES["tiny"], DEVICE)
    out = []
    for size in sizes():
        for mode in module.MODES:
            for impl in module.implementations(tiny, mode, DEVICE, compile=True):
                out.append(pytest.param(size, mode, impl.name, id=f"{size}-{mode}-{impl.name}"))
    return out


def check_and_time(benchmark, module, size: str, mode: str, name: str) -> None:
    """Skip unavailable implementations; assert equality with the reference; time with ``benchmark``."""
    if size not in module.SIZES:
        pytest.skip(f"{module.OP} has no size tier {size!r}")
    compile_ = os.environ.get("DAENR_BENCH_COMPILE") == "1"
    if name.startswith("torch.compile") and not compile_:
        pytest.skip("torch.compile rows need DAENR_BENCH_COMPILE=1")
    inputs = module.make_inputs(module.SIZES[size], DEVICE)
    impls = {i.name: i for i in module.implementations(inputs, mode, DEVICE, compile=compile_)}
    impl = impls[name]
    if not impl.available:
        pytest.skip(impl.reason)
    ref = next(i for i in impls.values() if i.kind == "reference")
    out = impl.fn()
    if impl.comparable:
        err = module.compare(as_tuple(ref.fn()), out, inputs)
        assert err <= module.TOLERANCE["float32"], f"{name}: max relative error {err:.2e}"
    rounds = int(os.environ.get("DAENR_BENCH_ROUNDS", "3"))
    benchmark.extra_info.update(op=module.OP, size=size, shape=module.SIZES[size], mode=mode, kind=impl.kind)
    benchmark.pedantic(impl.fn, rounds=rounds, iterations=1, warmup_rounds=1)
