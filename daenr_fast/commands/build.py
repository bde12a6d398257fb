"""``daenr build``: compile the C++ (and, with a GPU and nvcc, CUDA) extensions ahead of time."""
from __future__ import annotations

NAME = "build"
HELP = "compile the C++/CUDA extensions now instead of at first use"


def op_names() -> tuple[str, ...]:
    """The ops whose cpu backend is a compiled extension, from the op registry."""
    from daenr_fast.ops import OPS

    return tuple(name for name, op in OPS.items() if op.spec.extension and "cpu" in op.backends)


def add_arguments(parser) -> None:
    parser.add_argument("--ops", default=None, help="comma-separated ops to build (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler output")
    parser.add_argument("--print-std", action="store_true",
                        help="print the C++ standard the installed torch compiles extensions with, and exit")


def run(args) -> int:
    from daenr_fast import _build

    if args.print_std:
        print(_build.cxx_std())
        return 0
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else op_names()
    cuda_possible = _build.cuda_toolchain()[0]
    failed = 0
    for op in ops:
        try:
            has_cuda = _build.load_extension(op, verbose=args.verbose)
        except _build.ExtensionUnavailable as err:
            failed += 1
            print(f"{op}: FAILED: {err}")
            continue
        if cuda_possible and not has_cuda:
            failed += 1
            print(f"{op}: built (CPU); CUDA FAILED: {_build.extension_status(op, cuda=True)[1]}")
        else:
            print(f"{op}: built ({'CPU + CUDA' if has_cuda else 'CPU'})")
    return 1 if failed else 0
