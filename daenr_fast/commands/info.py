"""``daenr info``: versions, every backend of every op with whether it is available and why not, and the order in
which the default dispatch tries them on CUDA tensors."""
from __future__ import annotations

import platform

import torch

NAME = "info"
HELP = "print versions and which backends (torch, cpu, cuda, triton) are available for each op, and why not"

def add_arguments(parser) -> None:
    parser.add_argument("--no-build", action="store_true",
                        help="do not compile missing extensions; report them as not built")


def _versions() -> list[tuple[str, str]]:
    import numpy

    import daenr_fast

    rows = [("daenr_fast", daenr_fast.__version__), ("python", platform.python_version()),
            ("torch", torch.__version__), ("numpy", numpy.__version__),
            ("torch CUDA", torch.version.cuda or "none"),
            ("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except ImportError:
        rows.append(("triton", "not installed"))
    return rows


def run(args) -> int:
    import os

    from daenr_fast import _build, _dispatch
    from daenr_fast.ops import OPS

    if args.no_build:
        os.environ["DAENR_FAST_NO_BUILD"] = "1"
    for name, version in _versions():
        print(f"{name:<12} {version}")
    print(f"cache        {_build.cache_root()}")
    print()
    print(f"{'op':<20} {'backend':<8} {'available':<10} {'dtypes':<34} reason")
    for op, defined in OPS.items():
        for backend in defined.backends:
            ok, why = _dispatch.backend_status(op, backend)
            dtypes = ", ".join(str(d).replace("torch.", "") for d in defined.dtypes[backend])
            print(f"{op:<20} {backend:<8} {'yes' if ok else 'no':<10} {dtypes:<34} {why}")
    print()
    print("on CUDA tensors the first available of (measured on an H200; multiply-adds per call):")
    for op in OPS:
        for kind, steps in _dispatch.GPU_PREFERENCE[op].items():
            print(f"{op:<20} {kind:<8} {_steps_text(steps)}")
    return 0


def _steps_text(steps) -> str:
    """'<= 3e+09: cuda, triton, torch; above: torch, cuda, triton' for a GPU_PREFERENCE entry."""
    parts = []
    for limit, order in steps:
        label = f"<= {limit:.0e}" if limit != float("inf") else ("always" if len(steps) == 1 else "above")
        parts.append(f"{label}: {', '.join(order)}")
    return "; ".join(parts)
