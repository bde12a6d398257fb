"""Backend availability and choice for every op.

Backends: ``torch`` (pure-PyTorch reference, always there), ``cpu`` (C++ extension), ``cuda`` (CUDA extension),
``triton`` (Triton kernels; on CPU tensors only under ``TRITON_INTERPRET=1``).

Choice, in order:

1. an explicit ``backend=`` argument, else the ``DAENR_FAST_BACKEND`` variable: used as given, and an error
   (:class:`BackendUnavailable`, with the reason, or ``TypeError`` for a dtype it does not take) if it cannot run
   on these tensors;
2. otherwise only backends that take the call's device and dtype (the op's ``dtypes`` in
   :data:`daenr_fast.ops._define.REGISTRY`) are candidates:
   CUDA tensors: the first available backend of the op's GPU order for the tensors' dtype and the size of the
   call (:func:`gpu_order`; the table ``daenr_fast/dispatch_table.json``, from benchmarks on an H200,
   ``benchmarks/results/gpu``), else ``torch``;
   CPU tensors: ``cpu`` if it takes the dtype and the extension builds (else ``torch``, with one warning giving
   the build's reason), ``torch`` for the dtypes it does not take (float16/bfloat16).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from daenr_fast import _build, dispatch_table
from daenr_fast.ops._define import BACKENDS, REGISTRY

#: GPU backends from fastest to slowest, per op and dtype class (``"float32"`` or ``"half"`` for float16/bfloat16),
#: as ``(up to this many units of work per call, order)`` steps: the data file ``daenr_fast/dispatch_table.json``
#: (what was measured, and on which GPU, is noted there), loaded by :func:`daenr_fast.dispatch_table.load` and
#: re-derived from ``daenr bench --device cuda`` results by ``python -m daenr_fast.dispatch_table``.
GPU_PREFERENCE: dict[str, dict[str, tuple[tuple[float, tuple[str, ...]], ...]]] = dispatch_table.load()

_warned: set[str] = set()


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def triton_status(device: torch.device | None = None) -> tuple[bool, str]:
    """(available, reason) of the Triton backend for tensors on ``device`` (any GPU when None)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device is not None and device.type == "cpu":
        return (True, "") if interpret else (False, "CPU tensors need TRITON_INTERPRET=1")
    if interpret or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU)"


def _constant_under_compile(fn):
    """``torch.compiler.assume_constant_result(fn)``: torch.compile calls ``fn`` while tracing (it may build an
    extension, behind a lock) and keeps its answer. The decorator only sets this attribute; setting it here spares
    every ``import daenr_fast`` the import of torch._dynamo (seconds). tests/ops/test_func.py compiles a first call."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_under_compile
def backend_status(op: str, backend: str, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> tuple[bool, str]:
    """(available, reason) of ``backend`` for ``op`` on tensors of ``device`` (None: on this machine) and ``dtype``
    (None: any dtype the backend takes)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype is not None:
        taken = REGISTRY[op].dtypes.get(backend, ())
        if dtype not in taken:
            return False, f"takes {_dtype_names(taken)}, not {str(dtype).replace('torch.', '')}"
    if backend == "torch":
        return True, ""
    if backend == "cpu":
        if device is not None and device.type != "cpu":
            return False, f"the cpu backend takes CPU tensors, got {device.type}"
        return _build.extension_status(op)
    if backend == "cuda":
        if device is not None and device.type != "cuda":
            return False, f"the cuda backend takes CUDA tensors, got {device.type}"
        ok, why = _build.cuda_toolchain()
        return _build.extension_status(op, cuda=True) if ok else (False, why)
    return triton_status(device)


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes) or "no dtype"


def gpu_order(op: str, dtype: torch.dtype | None = None, work: float = 0.0) -> tuple[str, ...]:
    """Backends for ``op`` on CUDA tensors of ``dtype`` (None: float32), fastest first, for a call of ``work``
    multiply-adds (see :data:`GPU_PREFERENCE`)."""
    kind = "half" if dtype in (torch.float16, torch.bfloat16) else "float32"
    for limit, order in GPU_PREFERENCE[op][kind]:
        if work <= limit:
            return order
    return GPU_PREFERENCE[op][kind][-1][1]


def resolve_backend(op: str, backend: str | None, device: torch.device, dtype: torch.dtype | None = None,
                    work: float = 0.0) -> str:
    """The backend that runs ``op`` on tensors of ``device`` and ``dtype`` for a call of ``work`` multiply-adds
    (see the module docstring for the rules)."""
    requested = backend if backend is not None else os.environ.get("DAENR_FAST_BACKEND") or None
    if requested is not None:
        requested = requested.lower()
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
        if dtype is not None and dtype not in REGISTRY[op].dtypes.get(requested, ()):
            raise TypeError(f"{op}: backend {requested!r} supports dtypes "
                            f"{_dtype_names(REGISTRY[op].dtypes.get(requested, ()))}; got {dtype}")
        ok, why = backend_status(op, requested, device)
        if not ok:
            raise BackendUnavailable(f"{op}: backend {requested!r} is unavailable: {why}")
        return requested
    if device.type == "cuda":
        for name in gpu_order(op, dtype, work):
            if backend_status(op, name, device, dtype)[0]:
                return name
        return "torch"
    if device.type == "cpu" and (dtype is None or dtype in REGISTRY[op].dtypes.get("cpu", ())):
        ok, why = backend_status(op, "cpu", device)
        if ok:
            return "cpu"
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"daenr_fast: {op} uses the PyTorch reference on CPU because the C++ extension "
                          f"is unavailable: {why}", RuntimeWarning, stacklevel=3)
    return "torch"
