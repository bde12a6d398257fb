"""On-the-fly compilation of the C++/CUDA extension of each op.

Every op ``OP`` has its own small extension, built from

* ``csrc/OP.cpp``       - schema and registration (``TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, ...)``),
* ``csrc/cpu/OP_cpu.cpp``   - the CPU implementation,
* ``csrc/cuda/OP_cuda.cu``  - raw-pointer CUDA kernels and launchers (only when CUDA is usable; the registration
  file then also registers the CUDA implementation, guarded by ``DAENR_WITH_CUDA``).

Once loaded, the op's kernels are ``torch.ops.daenr_fast_ext.*``. Builds go through
``torch.utils.cpp_extension.load`` with ninja into ``$DAENR_FAST_CACHE`` (default ``~/.cache/daenr_fast``), in a
folder named by a hash of the sources, the torch version and the flags; torch's file lock in that folder makes
concurrent builds by several processes safe. A failure (no compiler, no ninja, a compile error) never raises at
import: :func:`extension_status` reports the reason and callers fall back to the reference.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import threading
from functools import lru_cache
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
if not CSRC.is_dir():  # editable install: sources live at the repository top level
    CSRC = Path(__file__).resolve().parent.parent / "csrc"

CXX_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-march=native"]
LD_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]

_lock = threading.Lock()
_loaded: dict[str, bool] = {}
_errors: dict[str, str] = {}


class ExtensionUnavailable(RuntimeError):
    """Raised when an op's compiled extension cannot be built or loaded; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("DAENR_FAST_CACHE", Path.home() / ".cache" / "daenr_fast"))


@lru_cache(maxsize=None)
def cuda_toolchain() -> tuple[bool, str]:
    """Whether a CUDA build is possible here: (ok, reason when not)."""
    if torch.version.cuda is None:
        return False, "this torch build has no CUDA support"
    if not torch.cuda.is_available():
        return False, "no CUDA device is visible"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return False, "nvcc / CUDA_HOME not found"
    return True, ""


def _sources(op: str, with_cuda: bool) -> list[Path]:
    files = [CSRC / f"{op}.cpp", CSRC / "cpu" / f"{op}_cpu.cpp"]
    if with_cuda:
        files.append(CSRC / "cuda" / f"{op}_cuda.cu")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExtensionUnavailable(f"source files missing: {', '.join(missing)}")
    return files


def _digest(op: str, files: list[Path], flags: list[str]) -> str:
    h = hashlib.sha256()
    headers = sorted(p for p in CSRC.rglob("*.h*") if p.name.startswith((op, "common")))
    for f in files + headers:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(torch.__version__.encode())
    h.update(_cpu_signature().encode())
    h.update(" ".join(flags).encode())
    return h.hexdigest()[:16]


def _compile(op: str, with_cuda: bool, verbose: bool) -> None:
    from torch.utils.cpp_extension import load

    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        raise ExtensionUnavailable("ninja is not installed (pip install ninja)")
    files = _sources(op, with_cuda)
    cflags = CXX_FLAGS + (["-DDAENR_WITH_CUDA"] if with_cuda else [])
    digest = _digest(op, files, cflags + (NVCC_FLAGS if with_cuda else []))
    name = f"daenr_fast_{op}_{'cuda' if with_cuda else 'cpu'}_{digest}"
    build_dir = cache_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    if not any(build_dir.glob(f"{name}*.so")):
        print(f"daenr_fast: compiling the {'CUDA' if with_cuda else 'C++'} extension for {op} "
              f"(first use only; this takes a minute) ...", file=sys.stderr, flush=True)
    load(
        name=name,
        sources=[str(f) for f in files],
        extra_cflags=cflags,
        extra_cuda_cflags=NVCC_FLAGS + ["-DDAENR_WITH_CUDA"],
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(CSRC)],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )


def load_extension(op: str, verbose: bool = False) -> bool:
    """Build (if needed) and load the extension of ``op``; return whether it has CUDA kernels.

    Raises :class:`ExtensionUnavailable` with the reason when it cannot be built.
    """
    if op in _loaded:  # lock-free fast path (also what torch.compile traces)
        return _loaded[op]
    with _lock:
        if op in _loaded:
            return _loaded[op]
        if op in _errors:
            raise ExtensionUnavailable(_errors[op])
        if os.environ.get("DAENR_FAST_NO_BUILD"):
            _errors[op] = "building is disabled by DAENR_FAST_NO_BUILD"
            raise ExtensionUnavailable(_errors[op])
        with_cuda, why_not = cuda_toolchain()
        try:
            _compile(op, with_cuda, verbose)
            _loaded[op] = with_cuda
        except Exception as err:  # noqa: BLE001 - any build failure becomes a reason string
            reason = _short_reason(err)
            if with_cuda:
                try:  # the CPU kernels are still worth having when nvcc fails
                    _compile(op, False, verbose)
                    _loaded[op] = False
                    _errors[f"{op}:cuda"] = reason
                    return False
                except Exception as err_cpu:  # noqa: BLE001
                    reason = _short_reason(err_cpu)
            _errors[op] = reason
            raise ExtensionUnavailable(reason) from None
        if not with_cuda:
            _errors[f"{op}:cuda"] = why_not
        return _loaded[op]


def extension_status(op: str, cuda: bool = False) -> tuple[bool, str]:
    """(available, reason) of the cpu (or, with ``cuda=True``, CUDA) kernels of ``op``; builds on first call."""
    try:
        has_cuda = load_extension(op)
    except ExtensionUnavailable as err:
        return False, str(err)
    if cuda and not has_cuda:
        return False, _errors.get(f"{op}:cuda", "not built with CUDA")
    return True, ""


def _cpu_signature() -> str:
    """Machine + CPU feature flags, so a cache shared between machines never loads code built for another CPU."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    import platform

    return platform.machine() + flags


def _short_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    errors = [line for line in text if "error" in line.lower()]
    return (errors[0] if errors else (text[-1] if text else type(err).__name__))[:300]
