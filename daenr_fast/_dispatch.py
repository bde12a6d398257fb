"""Backend availability and choice for every op.

Backends: ``torch`` (pure-PyTorch reference, always there), ``cpu`` (C++ extension), ``cuda`` (CUDA extension),
``triton`` (Triton kernels; on CPU tensors only under ``TRITON_INTERPRET=1``).

Choice, in order:

1. an explicit ``backend=`` argument, else the ``DAENR_FAST_BACKEND`` variable: used as given, and an error
   (:class:`BackendUnavailable`, with the reason) if it cannot run on these tensors;
2. CUDA tensors: the first available of the op's GPU preference (decided by benchmark), else ``torch``;
3. CPU tensors: ``cpu`` if the extension builds, else ``torch`` with one warning giving the reason.
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from daenr_fast import _build

BACKENDS = ("torch", "cpu", "cuda", "triton")

#: Fastest GPU backend first, per op (from benchmarks/results on an H100/H200 where measured).
GPU_PREFERENCE: dict[str, tuple[str, ...]] = {
    "factorized_readout": ("cuda", "triton"),
    "poisson_loss": ("cuda", "triton"),
    "vq_lookup": ("cuda", "triton"),
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


def backend_status(op: str, backend: str, device: torch.device | None = None) -> tuple[bool, str]:
    """(available, reason) of ``backend`` for ``op`` on tensors of ``device`` (None: on this machine)."""
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
    if backend == "triton":
        return triton_status(device)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve_backend(op: str, backend: str | None, device: torch.device) -> str:
    """The backend that runs ``op`` on tensors of ``device`` (see the module docstring for the rules)."""
    requested = backend if backend is not None else os.environ.get("DAENR_FAST_BACKEND") or None
    if requested is not None:
        requested = requested.lower()
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
        ok, why = backend_status(op, requested, device)
        if not ok:
            raise BackendUnavailable(f"{op}: backend {requested!r} is unavailable: {why}")
        return requested
    if device.type == "cuda":
        for name in GPU_PREFERENCE[op]:
            if backend_status(op, name, device)[0]:
                return name
        return "torch"
    if device.type == "cpu":
        ok, why = backend_status(op, "cpu", device)
        if ok:
            return "cpu"
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"daenr_fast: {op} uses the PyTorch reference on CPU because the C++ extension "
                          f"is unavailable: {why}", RuntimeWarning, stacklevel=3)
    return "torch"
