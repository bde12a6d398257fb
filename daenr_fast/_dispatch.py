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
   call (:func:`gpu_order`; decided by benchmark on an H200, ``benchmarks/results/gpu``), else ``torch``;
   CPU tensors: ``cpu`` if it takes the dtype and the extension builds (else ``torch``, with one warning giving
   the build's reason), ``torch`` for the dtypes it does not take (float16/bfloat16).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from daenr_fast import _build
from daenr_fast.ops._define import BACKENDS, REGISTRY

_FAST_FIRST = ("cuda", "triton", "torch")
_TRITON_FIRST = ("triton", "cuda", "torch")
_REFERENCE_FIRST = ("torch", "cuda", "triton")
_INF = float("inf")

#: GPU backends from fastest to slowest, per op and dtype class (``"float32"`` or ``"half"`` for float16/bfloat16),
#: as ``(up to this many multiply-adds per call, order)`` steps; measured on an H200 (``daenr bench --device cuda``,
#: ``benchmarks/results/gpu``). Past the float32 readout crossing the cuBLAS-backed reference is faster than the
#: float32 FMA kernels (the fused kernels still use less memory; ask for them with ``backend=``).
GPU_PREFERENCE: dict[str, dict[str, tuple[tuple[float, tuple[str, ...]], ...]]] = {
    # float32 fwd+bwd at B,C,H,W,N = 64,48,16,16,103 (8e7 multiply-adds): cuda 3.2x the reference; 128,64,16,16,1000
    # (2e9): a tie; 32,64,28,56,8000 (3e10): reference 3.5x cuda. bfloat16 at 3e10: triton (tensor cores) 3x the
    # torch backend (which computes in float32), cuda 0.3x; at 2e9 the three tie; at 8e7 cuda 2.3x.
    "factorized_readout": {"float32": ((3e9, _FAST_FIRST), (_INF, _REFERENCE_FIRST)),
                           "half": ((5e8, _FAST_FIRST), (_INF, _TRITON_FIRST))},
    # NOT MEASURED on a GPU yet (no GPU was available when the op was written). The order is a guess from the
    # design: both fused backends are gather-bound and never hold (B,C,N); the cuda one keeps its neuron lists in
    # fewer launches and its dx gather in registers, so it goes first; the reference (grid_sample + sum, with a
    # sort-based scatter for a deterministic dx) holds several (B,C,N) tensors and goes last at every size.
    "gaussian_readout": {"float32": ((_INF, _FAST_FIRST),), "half": ((_INF, _FAST_FIRST),)},
    # fwd+bwd from 6.6e3 to 2e6 elements, float32 and bfloat16: cuda 1.9x-3x the reference, triton 0.8x-1.2x.
    "poisson_loss": {"float32": ((_INF, _FAST_FIRST),), "half": ((_INF, _FAST_FIRST),)},
    # float32, M,K,D up to 65536,8192,256: cuda fastest of ours (0.73x-3.4x cdist+argmin). bfloat16: cuda at
    # 4096,256,32 (3e7) and 16384,1024,64 (1e9); triton (tensor cores) at 65536,8192,256 (1.4e11), 11x cuda.
    "vq_lookup": {"float32": ((_INF, _FAST_FIRST),), "half": ((2e9, _FAST_FIRST), (_INF, _TRITON_FIRST))},
}

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
