"""On-the-fly compilation of the C++/CUDA extension of each op.

Every op ``OP`` has its own small extension, built from

* ``csrc/OP.cpp``       - schema and registration (``TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, ...)``),
* ``csrc/cpu/OP_cpu.cpp``   - the CPU implementation,
* ``csrc/cuda/OP_cuda.cu``  - raw-pointer CUDA kernels and launchers (only when CUDA is usable; the registration
  file then also registers the CUDA implementation, guarded by ``DAENR_WITH_CUDA``).

Once loaded, the op's kernels are ``torch.ops.daenr_fast_ext.*``. Builds go through
``torch.utils.cpp_extension.load`` with ninja into ``$DAENR_FAST_CACHE`` (default ``~/.cache/daenr_fast``), in a
folder named by a hash of the sources, the torch version and the flags.

* **C++ standard.** Our flags carry no ``-std``: torch's extension builder adds the one its headers need (for
  g++ and for nvcc; ``c++20`` in torch 2.13 and 2.14). :func:`cxx_std` tells which, for tools that compile our
  sources without torch (``daenr build --print-std``).
* **Locking.** A build holds an OS lock (``flock``) on ``daenr_build.lock`` in its folder, which the kernel
  releases when the holder dies however it dies. Holding it, a build first waits for a ninja that a killed build
  left running there, and, where torch locks by the mere existence of a ``lock`` file (torch 2.13; 2.14 uses an
  OS lock too), removes that file: its owner was killed mid-build. Waiting for another process's build gives up
  after ``$DAENR_FAST_BUILD_TIMEOUT`` seconds (default 1800) with a message naming the lock and its holder.
* **Failures** (no compiler, no ninja, a compile error) never raise at import: :func:`extension_status` reports the
  reason - the first compiler error line and the path of ``build.log``, the full compiler output, in the build
  folder - and callers fall back to the reference.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
if not CSRC.is_dir():  # editable install: sources live at the repository top level
    CSRC = Path(__file__).resolve().parent.parent / "csrc"

#: compiler flags on top of torch's own (which include the C++ standard); tuples, so that no caller can grow them
CXX_FLAGS = ("-O3", "-fopenmp", "-march=native")
LD_FLAGS = ("-fopenmp",)
NVCC_FLAGS = ("-O3", "--use_fast_math", "-lineinfo")

LOG_NAME = "build.log"
LOCK_NAME = "daenr_build.lock"
_TORCH_LOCK = "lock"  # torch.utils.cpp_extension's own lock file in the build folder
_DEFAULT_TIMEOUT = 1800.0

_lock = threading.Lock()
_loaded: dict[str, bool] = {}
_errors: dict[str, str] = {}


class ExtensionUnavailable(RuntimeError):
    """Raised when an op's compiled extension cannot be built or loaded; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("DAENR_FAST_CACHE", Path.home() / ".cache" / "daenr_fast"))


@lru_cache(maxsize=None)
def cxx_std() -> str:
    """The C++ standard (``"c++20"``) that torch's extension builder compiles every extension with, C++ and CUDA.

    Read from ``torch.utils.cpp_extension`` itself (the newest ``-std=c++NN`` it passes), so it follows the
    installed torch; a test checks it against the ``build.ninja`` torch writes.
    """
    import inspect

    from torch.utils import cpp_extension

    found = re.findall(r"-std=c\+\+(\d+)", inspect.getsource(cpp_extension))
    if not found:
        raise RuntimeError(f"no -std=c++NN in {cpp_extension.__file__}: torch {torch.__version__} chooses its C++ "
                           "standard some other way")
    return f"c++{max(found, key=lambda year: (int(year) + 50) % 100)}"  # 98 < 11 < 17 < 20 < 23


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


def build_dir(op: str, with_cuda: bool) -> Path:
    """The cache folder of the cpu (or CPU + CUDA) build of ``op`` with the current sources, torch and flags."""
    cflags, cuda_flags = _flags(with_cuda)
    digest = _digest(op, _sources(op, with_cuda), cflags + cuda_flags + list(LD_FLAGS))
    return cache_root() / f"daenr_fast_{op}_{'cuda' if with_cuda else 'cpu'}_{digest}"


def _flags(with_cuda: bool) -> tuple[list[str], list[str]]:
    """Fresh lists of (C++ flags, nvcc flags): torch's ``load`` appends to the lists it is given."""
    if not with_cuda:
        return list(CXX_FLAGS), []
    return [*CXX_FLAGS, "-DDAENR_WITH_CUDA"], [*NVCC_FLAGS, "-DDAENR_WITH_CUDA"]


def _compile(op: str, with_cuda: bool, verbose: bool) -> None:
    from torch.utils.cpp_extension import load

    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        raise ExtensionUnavailable("ninja is not installed (pip install ninja)")
    files = _sources(op, with_cuda)
    folder = build_dir(op, with_cuda)
    name = folder.name
    kind = "CUDA" if with_cuda else "C++"
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder):
        if not any(folder.glob(f"{name}*.so")):
            print(f"daenr_fast: compiling the {kind} extension for {op} (first use only; this takes a minute) ...",
                  file=sys.stderr, flush=True)
        cflags, cuda_flags = _flags(with_cuda)
        try:
            load(
                name=name,
                sources=[str(f) for f in files],
                extra_cflags=cflags,
                extra_cuda_cflags=cuda_flags,
                extra_ldflags=list(LD_FLAGS),
                extra_include_paths=[str(CSRC)],
                build_directory=str(folder),
                is_python_module=False,
                verbose=verbose,
            )
        except Exception as err:  # noqa: BLE001 - every failure becomes a reason with its log
            output, log = _build_output(err, folder), folder / LOG_NAME
            log.write_text(output, encoding="utf-8")
            raise ExtensionUnavailable(f"the {kind} build failed: {_first_error(output)} (full log: {log})") from None
        (folder / LOG_NAME).unlink(missing_ok=True)  # a log of an earlier failure no longer applies


def _build_output(err: Exception, folder: Path) -> str:
    """Everything the failed build printed: torch puts ninja's output in the error, except in verbose mode, where
    it went to the terminal; then ninja runs once more (only the failing steps) to capture it."""
    text = str(err)
    if isinstance(err, RuntimeError) and text.startswith("Error building extension") and ": " not in text:
        rerun = subprocess.run(["ninja", "-v"], cwd=folder, capture_output=True, text=True, check=False)
        text += "\n" + rerun.stdout + rerun.stderr
    return text + "\n"


_DIAGNOSTIC = re.compile(r"\berror\b\s*:|undefined reference|undefined symbol|: not found$|No such file or directory",
                         re.IGNORECASE)
_NOISE = re.compile(r"^(\[\d+/\d+\] |FAILED: |ninja: build stopped)")


def _first_error(text: str) -> str:
    """The first compiler / linker / loader error line of a build's output (else its last line)."""
    lines = [line.strip() for line in text.splitlines()]
    if lines and lines[0].startswith("Error building extension"):
        lines[0] = lines[0].split(": ", 1)[-1]  # torch's prefix, followed by the output's first line
    lines = [line for line in lines if line and not _NOISE.match(line)]
    first = next((line for line in lines if _DIAGNOSTIC.search(line)), lines[-1] if lines else "no output")
    return first if len(first) <= 500 else first[:497] + "..."


@contextmanager
def _build_lock(folder: Path):
    """Hold the OS lock of the build folder, then clean up after a killed build (see the module docstring)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): torch's own lock file alone
        yield
        return
    path = folder / LOCK_NAME
    timeout = float(os.environ.get("DAENR_FAST_BUILD_TIMEOUT", _DEFAULT_TIMEOUT))
    deadline = time.monotonic() + timeout
    with open(path, "a+", encoding="utf-8") as handle:
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = path.read_text(encoding="utf-8").strip() or "unknown"
                if time.monotonic() > deadline:
                    raise ExtensionUnavailable(
                        f"gave up after {timeout:.0f} s waiting for process {holder}, which holds the build lock "
                        f"{path}; wait for it (DAENR_FAST_BUILD_TIMEOUT=seconds), end it, or, if no such process "
                        f"is running, delete {folder}") from None
                if not told:
                    print(f"daenr_fast: waiting for process {holder}, which is building in {folder} ...",
                          file=sys.stderr, flush=True)
                    told = True
                time.sleep(0.2)
        try:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _clean_up_after_a_killed_build(folder, deadline)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean_up_after_a_killed_build(folder: Path, deadline: float) -> None:
    """Under the OS lock no live build of ours is here. A killed build's ninja may outlive it (a kill reaches the
    Python process only): wait for it to end. A torch that locks by the existence of its ``lock`` file left that
    file behind: remove it."""
    if _ninja_running_in(folder):
        print(f"daenr_fast: waiting for the ninja that a killed build left running in {folder} ...",
              file=sys.stderr, flush=True)
        while _ninja_running_in(folder) and time.monotonic() < deadline:
            time.sleep(0.2)
    stale = folder / _TORCH_LOCK
    if _torch_locks_by_existence() and stale.exists():
        stale.unlink(missing_ok=True)
        print(f"daenr_fast: removed {stale}, left by a build that was killed", file=sys.stderr, flush=True)


def _torch_locks_by_existence() -> bool:
    """Whether ``torch.utils.cpp_extension.load`` waits while its ``lock`` file exists (its ``FileBaton``), rather
    than on an OS lock of that file that the kernel releases when the holder dies."""
    from torch.utils import cpp_extension

    return hasattr(cpp_extension, "FileBaton")


def _ninja_running_in(folder: Path) -> bool:
    """Whether a ninja process works in ``folder`` (Linux ``/proc``; elsewhere: False)."""
    target = str(folder.resolve())
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "cwd") == target:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
                if os.path.basename(argv0).startswith(b"ninja"):
                    return True
        except OSError:  # gone meanwhile, or not ours
            continue
    return False


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
            reason = _reason(err)
            if with_cuda:
                try:  # the CPU kernels are still worth having when nvcc fails
                    _compile(op, False, verbose)
                    _loaded[op] = False
                    _errors[f"{op}:cuda"] = reason
                    return False
                except Exception as err_cpu:  # noqa: BLE001
                    reason = _reason(err_cpu)
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


def _reason(err: Exception) -> str:
    """One line for a failure: ours carry their reason (with the log path); anything else, its first error line."""
    if isinstance(err, ExtensionUnavailable):
        return str(err)
    return _first_error(f"{type(err).__name__}: {err}")
